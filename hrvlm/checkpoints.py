"""Resumable training state on disk: the one home of checkpoint files.

A checkpoint is ``checkpoint.pt`` (a ``torch.save`` of a dict holding at least ``step``) next to
``checkpoint.json`` (its step and sha256), both written atomically.  A checkpoint whose bytes do not
match their recorded sha256 (a torn or tampered file) is treated as absent, so training restarts
rather than resuming from garbage.  Used by :mod:`hrvlm.pretrain` and :mod:`hrvlm.train`.
"""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import torch

from .storage import atomic_write_bytes, atomic_write_json, file_sha256

STATE, META = "checkpoint.pt", "checkpoint.json"


def save_checkpoint(folder: Path, state: dict) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    atomic_write_bytes(Path(folder) / STATE, data)
    atomic_write_json(Path(folder) / META, {"step": state["step"], "sha256": hashlib.sha256(data).hexdigest()})


def discard_checkpoint(folder: Path) -> None:
    """Remove the checkpoint of a finished run (its weights and record are the result; the optimiser
    state would only take space, about twice the model's)."""
    for name in (META, STATE):  # the sha256 first: a half-removed pair is never loaded
        (Path(folder) / name).unlink(missing_ok=True)


def load_checkpoint(folder: Path) -> dict | None:
    """The saved state, or None if absent or not matching its recorded sha256."""
    ckpt, meta = Path(folder) / STATE, Path(folder) / META
    if not (ckpt.is_file() and meta.is_file()):
        return None
    try:
        if json.loads(meta.read_text())["sha256"] != file_sha256(ckpt):
            return None
        return torch.load(ckpt, map_location="cpu", weights_only=False)
    except (OSError, ValueError, KeyError, RuntimeError):
        return None
