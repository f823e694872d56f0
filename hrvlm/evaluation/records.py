"""The records store: one JSON line per evaluated chunk, every number with its provenance.

A record describes one (dataset, split, level, attack) chunk: the configuration that produced it
(:data:`KEY_FIELDS`, hashed into ``key``), the environment it ran in (code and library versions,
device, wall time; not part of the key, so a new commit or a different GPU does not invalidate stored
results), and the results, including per-sample correctness as base64 bitmaps (:func:`encode_bits`),
in the order of the sorted subset ids.

**Why append, not rewrite.**  A store grows to thousands of records; rewriting it atomically after
every chunk would cost O(size) per chunk.  Instead each record is appended as *one* ``write`` of a
complete line, then ``fsync``-ed, under an exclusive ``flock`` (so concurrent evaluators neither
interleave lines nor store the same key twice: the key is re-checked under the lock).  A crash can
at worst leave a torn last line; the next append first ends it with a newline (under the lock no
write is in flight, so an unterminated line is final), and the reader reports such lines
(``warnings.warn``, or an error with ``strict=True``) and skips them: they never break reading and
never hide other records.  A complete record that only lacks its newline counts as stored.

**Checks.**  Each record carries ``checksum``, the sha256 of its canonical JSON without that field
(:func:`record_checksum`); a record edited by hand or damaged on disk no longer matches and is reported
and skipped like a torn line.  :func:`check_record` also requires ``key == record_key(record)`` (every
provenance field present) and every accuracy equal to the mean of its per-image bitmap (``clean_acc`` =
mean(``clean_correct``), likewise robust and leaf; ``transfer_success_rate`` = #(leaf clean ∧ ¬leaf
robust) / #(leaf clean)).  A record without a checksum is refused unless the reader passes
``allow_unsigned=True`` (``--allow-unsigned``): a checksum is no signature (anyone can recompute it), but
a record whose checksum was deleted so that its numbers could be edited is no longer taken as a result.
``hrvlm records verify STORE`` checks a whole store.
"""
from __future__ import annotations

import argparse
import base64
import copy
import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Iterable

import numpy as np

from hrvlm.core.storage import cache_dir, canonical_json, config_hash, content_checksum

try:  # POSIX; elsewhere concurrent writers are not supported (single-process use is still safe)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

# Bump when a key field's name or meaning changes; records of another schema are refused (StaleRecord) and
# recomputed.  2: ``checkpoint`` became ``weights_digest`` (the evaluated weights' digest, not training state)
# and the mini world's dataset option ``profile`` became ``size``.
SCHEMA = 2

# The configuration that determines a record's numbers: equal keys mean "already computed".
KEY_FIELDS = ("schema", "hrvlm_version", "method", "model", "weights_digest", "head", "dataset", "split",
              "dataset_options", "dataset_size", "n", "subset_ids_hash", "level", "tree", "tree_hash",
              "classnames_hash", "attack", "resolution", "templates", "templates_hash", "seed", "batch_size",
              "precision")
# Where and how it ran: recorded, not keyed.
ENVIRONMENT_FIELDS = ("code", "libraries", "device", "wall_time_s", "created")
# Per-sample correctness bitmaps (decoded by ``records_to_frame(samples=True)``).
BITMAP_FIELDS = ("clean_correct", "robust_correct", "leaf_clean_correct", "leaf_robust_correct")


class CorruptRecord(ValueError):
    """A line of a records file is not a complete record."""


class StaleRecord(ValueError):
    """A record written under another :data:`SCHEMA`: intact, but its key fields are not this version's."""


def record_key(record: dict) -> str:
    """Hash of the record's configuration (:data:`KEY_FIELDS`)."""
    missing = [f for f in KEY_FIELDS if f not in record]
    if missing:
        raise KeyError(f"record lacks provenance fields {missing}")
    return config_hash({f: record[f] for f in KEY_FIELDS}, length=20)


def encode_bits(values) -> str:
    """A boolean vector as base64 of its packed bits (1,000 samples → 168 characters)."""
    bits = np.packbits(np.asarray(values, dtype=bool), bitorder="little")
    return base64.b64encode(bits.tobytes()).decode("ascii")


def decode_bits(text: str, n: int) -> np.ndarray:
    """Inverse of :func:`encode_bits` for a vector of length ``n``."""
    raw = np.frombuffer(base64.b64decode(text), dtype=np.uint8)
    if raw.size != (n + 7) // 8:
        raise ValueError(f"bitmap holds {raw.size * 8} bits, expected {n}")
    return np.unpackbits(raw, count=n, bitorder="little").astype(bool)


def record_checksum(record: dict) -> str:
    """sha256 (32 hex digits) of the record's canonical JSON without its ``checksum`` field
    (:func:`hrvlm.core.storage.content_checksum`)."""
    return content_checksum(record)


# (accuracy field, its per-image bitmap field)
ACCURACY_BITMAPS = (("clean_acc", "clean_correct"), ("robust_acc", "robust_correct"),
                    ("leaf_clean_acc", "leaf_clean_correct"), ("leaf_robust_acc", "leaf_robust_correct"))
_TOLERANCE = 1e-6  # accuracies are float32 means of the same bits


def check_record(record, allow_unsigned: bool = False) -> None:
    """Raise ``ValueError`` unless ``record`` is a JSON object whose ``key`` is the hash of its
    provenance, whose ``checksum`` matches (a record without one only with ``allow_unsigned``), and
    whose accuracies agree with their per-image bitmaps."""
    if not isinstance(record, dict) or not isinstance(record.get("key"), str):
        raise ValueError("not a record (a JSON object with a 'key')")
    if "checksum" not in record:
        if not allow_unsigned:
            raise ValueError(f"record {record['key']} has no checksum: it cannot be verified (records written "
                             f"before checksums: pass --allow-unsigned / allow_unsigned=True to accept them)")
    elif record["checksum"] != record_checksum(record):
        raise ValueError(f"checksum mismatch for key {record['key']}: the record was edited or damaged "
                         f"(recompute it: delete the line and re-run)")
    if "schema" in record and record["schema"] != SCHEMA:  # without one: it lacks provenance (below)
        raise StaleRecord(f"record {record['key']} has schema {record['schema']!r}, not this hrvlm's {SCHEMA} "
                          f"(its key fields changed): `hrvlm eval` recomputes it; an older hrvlm reads it")
    try:
        key = record_key(record)
    except KeyError as err:
        raise ValueError(f"record {record['key']}: {err.args[0]}") from None
    if record["key"] != key:
        raise ValueError(f"record {record['key']}: its key is not the hash of its provenance ({key}); "
                         f"the record was edited (delete the line and re-run)")
    n = record["n"]
    if not (isinstance(n, int) and n > 0):
        raise ValueError(f"record {record['key']}: n must be a positive integer, got {n!r}")
    bits = {}
    for acc, field in ACCURACY_BITMAPS:
        value, text = record.get(acc), record.get(field)
        if (value is None) != (text is None):
            raise ValueError(f"record {record['key']}: {acc} and {field} must both be given or both be null")
        if text is None:
            continue
        if not (isinstance(text, str) and isinstance(value, (int, float))):
            raise ValueError(f"record {record['key']}: {acc} must be a number and {field} a bitmap")
        try:
            bits[field] = decode_bits(text, n)
        except ValueError as err:
            raise ValueError(f"record {record['key']}: {field}: {err}") from None
        if abs(float(bits[field].mean()) - value) > _TOLERANCE:
            raise ValueError(f"record {record['key']}: {acc} = {value!r} but its bitmap {field} gives "
                             f"{bits[field].mean():.6g}; the record was edited (delete the line and re-run)")
    rate = record.get("transfer_success_rate")
    if rate is not None:
        clean, robust = bits.get("leaf_clean_correct"), bits.get("leaf_robust_correct")
        if clean is None or robust is None or not clean.any() or \
                abs((clean & ~robust).sum() / clean.sum() - rate) > _TOLERANCE:
            raise ValueError(f"record {record['key']}: transfer_success_rate = {rate!r} disagrees with the leaf "
                             f"bitmaps; the record was edited (delete the line and re-run)")


def default_store() -> Path:
    """The default records store, ``<cache>/records/results.jsonl``: ``hrvlm eval``'s and the book's, so numbers
    computed on the command line and in the book are the same records."""
    return cache_dir("records") / "results.jsonl"


def check_store_path(path: str | os.PathLike) -> Path:
    """A records store must be a file (existing or not), not a folder: checked before any work."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"records store {path} is a folder; give a file such as {path / 'results.jsonl'}")
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise NotADirectoryError(f"records store {path}: {parent} is a file, not a folder")
    return path


def _parse(line: bytes, where: str, strict: bool, allow_unsigned: bool) -> dict | None:
    try:
        record = json.loads(line)
        check_record(record, allow_unsigned)
        return record
    except StaleRecord as err:  # intact: the store counts and reports these once per read, not per line
        raise StaleRecord(f"{where}: {err}") from None
    except ValueError as err:
        message = f"{where}: skipping an incomplete or corrupt record ({err}); the rest of the store is intact"
        if strict:
            raise CorruptRecord(message) from err
        warnings.warn(message, stacklevel=3)
        return None


def read_records(path: str | os.PathLike, strict: bool = False, allow_unsigned: bool = False) -> list[dict]:
    """Every complete, verified record of a JSON-lines store, in file order (a missing file has none)."""
    return RecordStore(path, strict=strict, allow_unsigned=allow_unsigned).records()


_STALE_WARNED: set[str] = set()
_SHARED: dict[str, "RecordStore"] = {}


class RecordStore:
    """An append-only JSON-lines file of records, unique by key.

    It caches what it has read and reads only what other writers appended since.  Lines that fail
    :func:`check_record` are reported and skipped (an error with ``strict``), so a chunk whose stored
    record does not verify is computed again rather than returned.
    """

    def __init__(self, path: str | os.PathLike, strict: bool = False, allow_unsigned: bool = False):
        self.path, self.strict, self.allow_unsigned = check_store_path(path), strict, allow_unsigned
        self._start()

    def _start(self) -> None:
        self._offset, self._line_no, self._read_digest, self._stamp = 0, 0, hashlib.sha256(b"").digest(), None
        self._records: dict[str, dict] = {}

    @classmethod
    def shared(cls, path: str | os.PathLike) -> "RecordStore":
        """The process's one store object for ``path`` (default checks): what it has read stays read, so that
        the many evaluations of a build parse the file once, not once each."""
        key = str(check_store_path(path).resolve())
        if key not in _SHARED:
            _SHARED[key] = cls(path)
        return _SHARED[key]

    def _refresh(self) -> None:
        try:
            status = os.stat(self.path)
        except FileNotFoundError:
            self._start()
            return
        stamp = (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)
        if stamp == self._stamp:  # untouched since the last read
            return
        with open(self.path, "rb") as f:
            whole = f.read()
        if hashlib.sha256(whole[:self._offset]).digest() != self._read_digest:
            self._start()  # not an append to what was read (rewritten, truncated, replaced): read it all again
        self._stamp = stamp
        data = whole[self._offset:]
        end = data.rfind(b"\n") + 1
        stale = 0
        for line in data[:end].splitlines():
            self._line_no += 1
            if line.strip():
                try:
                    record = _parse(line, f"{self.path}:{self._line_no}", self.strict, self.allow_unsigned)
                except StaleRecord:
                    if self.strict:
                        raise
                    stale += 1
                    continue
                if record is not None:
                    self._records.setdefault(record["key"], record)
        if stale and str(self.path) not in _STALE_WARNED:  # once per store and process: every evaluation reads it
            _STALE_WARNED.add(str(self.path))
            warnings.warn(f"{self.path}: skipping {stale} record(s) of another schema than {SCHEMA} (an older "
                          f"hrvlm's): they are recomputed when asked for", stacklevel=3)
        self._offset += end
        self._read_digest = hashlib.sha256(whole[:self._offset]).digest()
        # A trailing line without newline may still be being written: it counts only if it is already a
        # complete, checksummed record (it is read again, as a full line, once terminated).
        tail = _complete(data[end:])
        if tail is not None:
            self._records.setdefault(tail["key"], tail)

    def records(self) -> list[dict]:
        """Every record, in file order (copies, as :meth:`get`'s)."""
        self._refresh()
        return copy.deepcopy(list(self._records.values()))

    def get(self, key: str) -> dict | None:
        """The record of ``key`` (a copy: the store's own stays as read), or ``None``."""
        self._refresh()
        record = self._records.get(key)
        return None if record is None else copy.deepcopy(record)

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def __len__(self) -> int:
        self._refresh()
        return len(self._records)

    def append(self, record: dict) -> bool:
        """Append ``record`` (its ``key`` set here) unless its key is stored; True if it was written."""
        record = json.loads(canonical_json({**record, "key": record_key(record)}))  # as it reads back
        record["checksum"] = record_checksum(record)
        line = (canonical_json(record) + "\n").encode("utf-8")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o666)  # less the umask
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                os.write(fd, b"\n")  # end a line left unterminated (by a crash, an editor): it is final
            self._refresh()
            if record["key"] in self._records:
                return False
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)  # also releases the lock
        self._refresh()
        return True


def _complete(fragment: bytes) -> dict | None:
    """The record in an unterminated last line if it is complete and checksummed, else ``None``."""
    try:
        record = json.loads(fragment)
        check_record(record)
    except ValueError:
        return None
    return record if "checksum" in record else None


def records_to_frame(records: Iterable[dict], samples: bool = False):
    """One row per record; nested fields flattened with ``_`` (``attack_eps``, ``libraries_torch``).

    Bitmaps are dropped unless ``samples``, which decodes them to boolean arrays.  A clean-only
    record has ``attack_name == "none"``.
    """
    import pandas as pd

    rows = []
    for record in records:
        row = {k: v for k, v in record.items() if k not in BITMAP_FIELDS}
        row["attack"] = record.get("attack") or {"name": "none"}
        if samples:
            for field in BITMAP_FIELDS:
                if record.get(field) is not None:
                    row[field] = decode_bits(record[field], record["n"])
        rows.append(row)
    if not rows:
        return pd.DataFrame()
    return pd.json_normalize(rows, sep="_", max_level=1)


def load_table(path: str | os.PathLike, samples: bool = False, strict: bool = False, allow_unsigned: bool = False):
    """:func:`records_to_frame` of the store at ``path``'s verified records."""
    return records_to_frame(read_records(path, strict=strict, allow_unsigned=allow_unsigned), samples=samples)


# ---------------------------------------------------------------- command line
def verify(path: str | os.PathLike, allow_unsigned: bool = False) -> dict:
    """Check every line of a store: ``{"records", "unverified", "problems": [(line, message), ...]}``.

    ``records`` counts records that pass :func:`check_record` with a checksum, ``unverified`` those
    without one accepted by ``allow_unsigned``; problems are torn or corrupt lines, records failing
    :func:`check_record` (no checksum, a mismatch, another schema, a key that is not their provenance's,
    accuracies that disagree with their bitmaps), repeated keys and a last line without its newline.
    """
    path = check_store_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no records store at {path}")
    data = path.read_bytes()
    out: dict = {"records": 0, "unverified": 0, "problems": []}
    seen: dict[str, int] = {}
    lines = data.split(b"\n")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            check_record(record, allow_unsigned)
        except StaleRecord as err:
            out["problems"].append((number, f"another schema ({err})"))
            continue
        except ValueError as err:
            out["problems"].append((number, f"torn or corrupt line ({err})"))
            continue
        if record["key"] in seen:
            out["problems"].append((number, f"key {record['key']} repeats line {seen[record['key']]}"))
            continue
        seen[record["key"]] = number
        out["records" if "checksum" in record else "unverified"] += 1
        if number == len(lines):
            out["problems"].append((number, "last line lacks its newline (the next append adds it)"))
    return out


def configure_parser(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    check = sub.add_parser("verify", help="check every record's checksum, torn lines and repeated keys")
    check.add_argument("store", help="a records file (JSON lines), e.g. ~/.cache/hrvlm/records/results.jsonl")
    check.add_argument("--allow-unsigned", action="store_true",
                       help="accept records without a checksum (written before checksums; otherwise a problem)")


def run(args: argparse.Namespace) -> int:
    report = verify(args.store, allow_unsigned=args.allow_unsigned)
    for number, message in report["problems"]:
        print(f"{args.store}:{number}: {message}")
    print(f"{args.store}: {report['records']} records verified, {report['unverified']} without checksum "
          f"(accepted by --allow-unsigned), {len(report['problems'])} problems")
    return 1 if report["problems"] else 0
