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

**Random generators**: :func:`seed_rngs` seeds, and :func:`rng_state` / :func:`set_rng_state` save and restore,
every process-wide generator (torch's CPU and CUDA ones, NumPy's, Python's ``random``: :data:`GLOBAL_RNGS`) and
any ``torch.Generator`` a loop names, so both loops seed and resume the same way.
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


def _numpy_state() -> tuple:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)


def _set_numpy_state(state: tuple) -> None:
    kind, keys, pos, has_gauss, gauss = state
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))


def _set_python_state(state: tuple) -> None:
    version, internal, gauss_next = state  # weights_only loading gives the inner tuple back as a list
    random.setstate((version, tuple(internal), gauss_next))


def _set_cuda_state(state: list | None) -> None:
    if state is not None and torch.cuda.is_available():  # a GPU run resumed on the CPU keeps its CPU states
        torch.cuda.set_rng_state_all(state)


# The process-wide generators a training step may draw from, by the name their state is saved under:
# (get, set), the state as tensors and plain tuples that weights_only loading accepts.
GLOBAL_RNGS = {
    "torch": (torch.get_rng_state, torch.set_rng_state),
    "cuda": (lambda: torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None, _set_cuda_state),
    "numpy": (_numpy_state, _set_numpy_state),
    "python": (random.getstate, _set_python_state),
}


def seed_rngs(seed: int) -> None:
    """Seed every generator of :data:`GLOBAL_RNGS` (``torch.manual_seed`` seeds the CUDA devices too)."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def rng_state(**generators: torch.Generator) -> dict:
    """The state of every generator of :data:`GLOBAL_RNGS` and of each of ``generators`` (a run's own
    ``torch.Generator`` objects, e.g. a data-order one), under its name."""
    clash = sorted(set(generators) & set(GLOBAL_RNGS))
    if clash:
        raise ValueError(f"generator names {clash} are taken by the process-wide generators {sorted(GLOBAL_RNGS)}")
    return {**{name: get() for name, (get, _) in GLOBAL_RNGS.items()},
            **{name: g.get_state() for name, g in generators.items()}}


def set_rng_state(state: dict, **generators: torch.Generator) -> None:
    """Restore what :func:`rng_state` returned, into the process-wide generators and into ``generators``
    (the same names).  A state that lacks one of them is refused before anything is restored: the
    resumed run would not be the uninterrupted one."""
    missing = sorted((set(GLOBAL_RNGS) | set(generators)) - set(state))
    if missing:
        raise ValueError(f"the saved RNG state has no generator {missing} (it holds {sorted(state)}); "
                         f"delete the checkpoint to start the run again")
    for name in GLOBAL_RNGS:
        GLOBAL_RNGS[name][1](state[name])
    for name, g in generators.items():
        g.set_state(state[name])
