"""Run folders: where a fine-tuning run keeps its weights, its record and its resumable state.

One layout, read by :func:`hrvlm.models.clip.load_clip` (``pretrained=<run folder | run name | weights
file>``), ``hrvlm eval --pretrained <run>`` and ``hrvlm export``, written by :mod:`hrvlm.training.train`::

    <runs>/<name>/
        config.json          the training configuration (a resumed run must match its identity)
        checkpoint.pt/.json  resumable state, written atomically with its sha256 (removed once finished)
        model.safetensors    the inner open_clip state dict, once finished
        method.safetensors   the method's own parameters (a learned logit scale …), if any
        run.json             the record: config, method, head spec, seed, steps, wall times, sha256s

``<runs>`` is ``cache_dir("runs")`` unless a folder is given.  A run is *finished* when ``run.json``
exists, carries its ``checksum`` (:func:`hrvlm.core.storage.content_checksum`: an edited or damaged record
no longer matches) and its weights match the recorded sha256; anything else is not loaded, and
:func:`read_record` says in one line what is wrong.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from hrvlm.core.storage import atomic_write_json, cache_dir, content_checksum, file_sha256

RECORD = "run.json"
WEIGHTS = "model.safetensors"
METHOD_WEIGHTS = "method.safetensors"
CONFIG = "config.json"


class RunNotFound(FileNotFoundError):
    """A run was named that does not exist or is not finished."""


class BadRun(ValueError):
    """A run folder whose record is not valid: not JSON, edited, lacking fields, or weights that do not
    match it."""


# what a record must hold for its run to be loaded (hrvlm.models.weights, hrvlm eval, export)
REQUIRED = ("model", "method", "head", "config", "sha256")


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


def write_record(folder: str | os.PathLike, record: dict) -> None:
    """Write ``run.json`` with its ``checksum`` (the run is finished from then on)."""
    record = json.loads(json.dumps(record, default=str))  # as it reads back
    atomic_write_json(Path(folder) / RECORD, {**record, "checksum": content_checksum(record)})


def read_record(name_or_path: str | os.PathLike, verify: bool = True) -> dict:
    """The record of a finished run, its checksum and fields checked; ``verify`` also checks its
    weights against their recorded sha256 (a pass over the files)."""
    path = run_path(name_or_path)
    if not (path / RECORD).is_file():
        raise RunNotFound(f"run {path} has not finished (no {RECORD}); re-run the same `hrvlm train` command "
                          f"to resume it")
    redo = "delete the run folder and train again"
    try:
        record = json.loads((path / RECORD).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise BadRun(f"run {path}: {RECORD} is not valid JSON ({str(err).splitlines()[0]}); {redo}") from None
    if not isinstance(record, dict) or record.get("checksum") != content_checksum(record):
        raise BadRun(f"run {path}: {RECORD} has no valid checksum (it was edited, damaged, or written by another "
                     f"program); {redo}")
    missing = [k for k in REQUIRED if k not in record]
    method = record.get("method")
    if missing or not (isinstance(method, dict) and isinstance(method.get("name"), str)) \
            or not isinstance(record["sha256"], dict) or WEIGHTS not in record["sha256"]:
        raise BadRun(f"run {path}: {RECORD} lacks {missing or ['method.name / sha256 of ' + WEIGHTS]}; {redo}")
    if verify:
        for name, digest in record["sha256"].items():
            if not (path / name).is_file() or file_sha256(path / name) != digest:
                raise RunNotFound(f"run {path}: {name} is missing or does not match its recorded sha256; {redo}")
    record["path"] = str(path)
    return record
