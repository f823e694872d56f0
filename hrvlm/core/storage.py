"""Where hrvlm keeps files, and how it writes them.

Every file the library produces (checkpoints, records, built corpora) is written atomically: to a
temporary file in the same folder (``.<name>.*.tmp``), flushed, then renamed over the target, with the
permissions of the umask (as ``open`` gives; ``mkstemp``'s 0600 would make a shared run or export
unreadable to others).  An interrupted run therefore leaves either the old file or the new one, never
a truncated one; a temporary left by a kill is removed by the next writer of that folder that holds
its :func:`folder_lock` (:func:`remove_temporaries`).  A folder of many files written at once
(fabricated datasets) is staged beside its target and renamed whole (``atomic_folder``).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
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
    joined with ``parts`` and created if missing.

    ``HRVLM_CACHE`` set but empty, or naming a file, is a one-line error (an empty value would otherwise
    put the cache in the current folder); an existing read-only cache is fine for reading, and a folder
    that cannot be created there is an error naming the variable."""
    root = os.environ.get(CACHE_ENV)
    if root is not None and not root.strip():
        raise ValueError(f"{CACHE_ENV} is set but empty: unset it (the cache is then ~/.cache/hrvlm) or set it "
                         f"to a folder")
    if root is None:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(xdg, "hrvlm")
    path = Path(root, *parts)
    if not path.is_dir():
        hint = f"; set {CACHE_ENV} to a writable folder"
        check_writable_folder(path, "cache folder", hint)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as err:  # a race with another process, a full disk: still one line
            raise PermissionError(f"cannot create the cache folder {path}: {err.strerror}{hint}") from None
    return path


def check_writable_folder(folder: str | os.PathLike, what: str, hint: str = "") -> Path:
    """``folder`` (existing or to be created), or a one-line error before any work: the nearest existing
    folder on its path must be a writable folder (a file on the way is a ``NotADirectoryError``, a
    read-only folder a ``PermissionError``).  ``what`` names it in the message, ``hint`` says what to do."""
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(f"{what} {folder}: {existing} is a file, not a folder{hint}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"{what} {folder}: cannot write in {existing} (read-only){hint}")
    return folder


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace`` (atomic on POSIX)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except (FileExistsError, NotADirectoryError, PermissionError) as err:  # a file on the path, a read-only folder
        raise type(err)(f"cannot write {path}: {err.strerror} ({err.filename})") from None
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


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike):
    """Write a whole folder atomically: yields an empty staging folder beside ``path``, to be filled with
    plain writes; on success it is synced and renamed to ``path`` (a folder already there is replaced),
    on an exception removed.  For many files at once, where a per-file ``fsync`` would cost seconds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        yield staging
        os.sync()
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / path.name)
            os.replace(staging, path)
            shutil.rmtree(old)
        else:
            os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


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
