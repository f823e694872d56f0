"""A chapter's independent variants side by side: ``workers`` processes with one torch thread each.

Training runs and evaluations of different variants share nothing but files that are safe to share (a
run folder is locked by its writer, a records store appends under a lock), and every run and record is a
function of its configuration, so a variant's result is the same whichever process computes it.  One
torch thread per process is also what the sequential path uses (:func:`map_in_workers` with one worker),
so a parallel build and a sequential one give identical records, not merely close ones.

The count is the profile's ``book.workers`` (2 for the CPU profiles: the machine this book is built on
has two cores; 1 under ``full``, whose one GPU is shared), or ``$HRVLM_WORKERS``.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing
import os
from typing import Callable, Iterable, TypeVar

from hrvlm.profiles import get_profile

WORKERS_ENV = "HRVLM_WORKERS"
T = TypeVar("T")
R = TypeVar("R")


def worker_count(profile: str, workers: int | None = None) -> int:
    """``workers`` if given, else ``$HRVLM_WORKERS``, else the profile's ``book.workers`` (default 1)."""
    if workers is None:
        text = os.environ.get(WORKERS_ENV, "").strip()
        if text:
            if not text.isdigit() or int(text) < 1:
                raise ValueError(f"${WORKERS_ENV}={text!r}: give a whole number of processes >= 1, e.g. 2")
            workers = int(text)
        else:
            workers = (get_profile(profile).book or {}).get("workers", 1)
    if not (isinstance(workers, int) and workers >= 1):
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    return workers


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


@contextlib.contextmanager
def _threads(n: int):
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def map_in_workers(fn: Callable[[T], R], items: Iterable[T], workers: int) -> list[R]:
    """``[fn(item) for item in items]``, in order, computed by ``workers`` processes (spawned: a forked
    child of a process that already ran torch threads can deadlock) or, for one worker or one item, here;
    one torch thread either way.  ``fn`` and the items must pickle (module-level functions, dataclasses)."""
    items = list(items)
    if workers <= 1 or len(items) <= 1:
        with _threads(1):
            return [fn(item) for item in items]
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(min(workers, len(items)), mp_context=context,
                                                initializer=_one_thread) as pool:
        return list(pool.map(fn, items))
