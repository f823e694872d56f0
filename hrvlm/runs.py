"""Run folders: where a fine-tuning run keeps its weights, its record and its resumable state.

One layout, read by :func:`hrvlm.models.load_clip` (``pretrained=<run folder | run name | weights
file>``), ``hrvlm eval --pretrained <run>`` and ``hrvlm export``, written by :mod:`hrvlm.train`::

    <runs>/<name>/
        config.json          the training configuration (a resumed run must match its identity)
        checkpoint.pt/.json  resumable state, written atomically with its sha256 (removed once finished)
        model.safetensors    the inner open_clip state dict, once finished
        method.safetensors   the method's own parameters (a learned logit scale …), if any
        run.json             the record: config, method, head spec, seed, steps, wall times, sha256s

``<runs>`` is ``cache_dir("runs")`` unless a folder is given.  A run is *finished* when ``run.json``
exists and its weights match the recorded sha256; anything else is not loaded.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from .storage import cache_dir, file_sha256

RECORD = "run.json"
WEIGHTS = "model.safetensors"
METHOD_WEIGHTS = "method.safetensors"
CONFIG = "config.json"


class RunNotFound(FileNotFoundError):
    """A run was named that does not exist or is not finished."""


def runs_root() -> Path:
    return cache_dir("runs")


def run_path(name_or_path: str | os.PathLike) -> Path:
    """The folder of a run given as a path (containing ``run.json``) or a name under :func:`runs_root`."""
    path = Path(name_or_path).expanduser()
    if (path / RECORD).is_file() or (path / CONFIG).is_file():
        return path
    named = runs_root() / str(name_or_path)
    if "/" not in str(name_or_path) and ((named / RECORD).is_file() or (named / CONFIG).is_file()):
        return named
    raise RunNotFound(f"no run {str(name_or_path)!r}: neither a folder with {RECORD} nor a run under {runs_root()} "
                      f"({_finished_hint(str(name_or_path))})")


def _finished_hint(name: str) -> str:
    """A short count of the finished runs and the closest names, not every run on one line."""
    import difflib
    import shlex

    finished = list_runs()
    if not finished:
        return "no finished runs there"
    close = difflib.get_close_matches(name, finished, n=3, cutoff=0.6)
    return (f"{len(finished)} finished run(s) there, listed one per line by `ls {shlex.quote(str(runs_root()))}`"
            + (f"; closest: {', '.join(close)}" if close else ""))


def is_run(name_or_path: str | os.PathLike) -> bool:
    try:
        run_path(name_or_path)
        return True
    except RunNotFound:
        return False


def list_runs() -> list[str]:
    return sorted(p.name for p in runs_root().iterdir() if (p / RECORD).is_file())


def read_record(name_or_path: str | os.PathLike, verify: bool = True) -> dict:
    """The record of a finished run; ``verify`` checks its weights against their recorded sha256."""
    path = run_path(name_or_path)
    if not (path / RECORD).is_file():
        raise RunNotFound(f"run {path} has not finished (no {RECORD}); re-run the same `hrvlm train` command "
                          f"to resume it")
    record = json.loads((path / RECORD).read_text())
    if verify:
        for name, digest in record.get("sha256", {}).items():
            if not (path / name).is_file() or file_sha256(path / name) != digest:
                raise RunNotFound(f"run {path}: {name} is missing or does not match its recorded sha256; "
                                  f"delete the run folder and train again")
    record["path"] = str(path)
    return record
