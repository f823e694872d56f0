"""Where hrvlm keeps files, and how it writes them.

Every file the library produces (checkpoints, records, built corpora) is written atomically: to a
temporary file in the same folder (``.<name>.*.tmp``), flushed, then renamed over the target, with the
permissions of the umask (as ``open`` gives; ``mkstemp``'s 0600 would make a shared run or export
unreadable to others).  An interrupted run therefore leaves either the old file or the new one, never
a truncated one; a temporary left by a kill is removed by the next writer of that folder that holds
its :func:`folder_lock` (:func:`remove_temporaries`).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

try:  # POSIX; elsewhere a folder is not locked (single-process use is still safe)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

LOCK = ".lock"

CACHE_ENV = "HRVLM_CACHE"


def cache_dir(*parts: str) -> Path:
    """The user cache folder (``$HRVLM_CACHE``, else ``$XDG_CACHE_HOME/hrvlm``, else ``~/.cache/hrvlm``),
    joined with ``parts`` and created if missing."""
    root = os.environ.get(CACHE_ENV)
    if root is None:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(xdg, "hrvlm")
    path = Path(root, *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace`` (atomic on POSIX)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    """The process's umask, read without changing it (``os.umask`` sets it, a race with other threads)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold an exclusive ``flock`` on ``<folder>/.lock`` (waiting for another holder): one writer of a run
    or pretraining folder at a time, so that its leftovers can be removed safely."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield folder
    finally:
        os.close(fd)  # also releases the lock


def remove_temporaries(folder: str | os.PathLike) -> list[str]:
    """Remove the ``.<name>.*.tmp`` files :func:`atomic_write_bytes` left in ``folder`` when killed before
    its rename; call it holding the folder's :func:`folder_lock` (no other writer is mid-write).
    Returns the names removed."""
    removed = []
    for tmp in Path(folder).glob(".*.tmp"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed.append(tmp.name)
    return sorted(removed)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: equal configs give equal strings."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def content_checksum(obj: dict, field: str = "checksum") -> str:
    """sha256 (32 hex digits) of ``obj``'s canonical JSON without its ``field``: the integrity check that
    records and run records carry (it detects edits and damage; it is no signature)."""
    return config_hash({k: v for k, v in obj.items() if k != field}, length=32)


def config_hash(obj: Any, length: int = 12) -> str:
    """Short sha256 of the canonical JSON of ``obj``; keys caches by configuration."""
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()[:length]


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()
