"""Name → class tables of the library's pluggable parts (classification heads, training methods).

Each part's module holds its table and gets its class decorator from :func:`registrar`, so every table
refuses a second class under a taken name in the same way.
"""
from __future__ import annotations

from typing import Callable, TypeVar

T = TypeVar("T", bound=type)


def registrar(table: dict[str, type], attribute: str, noun: str) -> Callable[[str], Callable[[T], T]]:
    """``register(name)``: a class decorator that files the class in ``table`` under ``name`` and sets
    ``cls.<attribute> = name``; a different class under a taken name is a ValueError naming both."""
    def register(name: str) -> Callable[[T], T]:
        def wrap(cls: T) -> T:
            if name in table and table[name] is not cls:
                raise ValueError(f"{noun} {name!r} is registered already ({table[name].__qualname__})")
            setattr(cls, attribute, name)
            table[name] = cls
            return cls
        return wrap
    return register
