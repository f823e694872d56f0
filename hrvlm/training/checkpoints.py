"""Resumable training state on disk: the one home of checkpoint files.

A checkpoint is ``checkpoint.pt`` (a ``torch.save`` of a dict holding at least ``step``) next to
``checkpoint.json`` (its step and sha256), both written atomically.  A checkpoint whose bytes do not
match their recorded sha256 (a torn or tampered file) is treated as absent, so training restarts
rather than resuming from garbage.  Used by :mod:`hrvlm.training.pretrain` and :mod:`hrvlm.training.train`.

**Tensors and plain data only.**  A checkpoint may come from someone else (a shared run folder or
cache), and its sha256 sidecar proves nothing (the sender writes it too), so it is loaded with
``torch.load(weights_only=True)``: tensors, numbers, strings, lists, tuples and dicts, never an
arbitrary pickled object, so loading it cannot run code.  A file holding anything else is refused
(warned about and treated as absent).  The RNG states, which Python and NumPy give as objects
holding arrays, are stored as tensors and plain tuples (:func:`rng_state`, :func:`set_rng_state`).
"""
from __future__ import annotations

import hashlib
import io
import json
import pickle
import random
import warnings
from pathlib import Path

import numpy as np
import torch

from hrvlm.core.storage import atomic_write_bytes, atomic_write_json, file_sha256

STATE, META = "checkpoint.pt", "checkpoint.json"


def save_checkpoint(folder: Path, state: dict) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    atomic_write_bytes(Path(folder) / STATE, data)
    atomic_write_json(Path(folder) / META, {"step": state["step"], "sha256": hashlib.sha256(data).hexdigest()})


def discard_checkpoint(folder: Path) -> None:
    """Remove the checkpoint of a finished run (its weights and record are the result; the optimiser
    state would only take space, about twice the model's).  Also called when a finished run is
    opened again, for the checkpoint a kill between the record and this removal left behind."""
    for name in (META, STATE):  # the sha256 first: a half-removed pair is never loaded
        (Path(folder) / name).unlink(missing_ok=True)


def load_checkpoint(folder: Path) -> dict | None:
    """The saved state, or None if absent, not matching its recorded sha256, or holding more than
    tensors and plain data (warned: such a file is never unpickled)."""
    ckpt, meta = Path(folder) / STATE, Path(folder) / META
    if not (ckpt.is_file() and meta.is_file()):
        return None
    try:
        if json.loads(meta.read_text())["sha256"] != file_sha256(ckpt):
            return None
        return torch.load(ckpt, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        warnings.warn(f"{ckpt} holds objects other than tensors and plain data; it is not loaded (delete it; "
                      f"training starts again): {str(err).splitlines()[0]}", stacklevel=2)
        return None
    except (OSError, ValueError, KeyError, RuntimeError):
        return None


def rng_state() -> dict:
    """Every RNG a training step draws from (torch's CPU and CUDA generators, NumPy's global one,
    Python's ``random``), as tensors and plain tuples that ``weights_only`` loading accepts."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)),
            "python": random.getstate()}


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
