"""Printed speed and quality figures (`hrvlm bench NAME`); never timed tests.

Each benchmark is a module of this package with ``main(argv=None) -> int``; measured ratios are
always taken side by side in one run.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil


def available() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", choices=available(), help="which benchmark to run")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="options passed to the benchmark (see NAME --help)")


def run(args: argparse.Namespace) -> int:
    return int(importlib.import_module(f"{__name__}.{args.name}").main(args.args) or 0)
