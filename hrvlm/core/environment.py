"""What this run executes on: versions, device, data sources (for the book and for result provenance)."""
from __future__ import annotations

import importlib.metadata
import platform
import subprocess
from pathlib import Path

import torch

import hrvlm

LIBRARIES = ("torch", "torchvision", "open_clip_torch", "numpy", "nltk", "torchattacks", "jupyter-book", "papermill")
# what a record or a run folder names: the libraries its numbers depend on
RECORD_LIBRARIES = ("torch", "torchvision", "open_clip_torch", "torchattacks", "numpy")


def library_versions(names=LIBRARIES) -> dict[str, str | None]:
    """Installed version of each distribution, ``None`` where it is not installed."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit() -> str | None:
    """The source checkout's commit (with ``+dirty`` if modified), or None outside a git checkout."""
    root = Path(hrvlm.__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
                                capture_output=True, text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "") if commit else None


def default_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` (checked by :func:`check_device`), else the GPU when there is one, else the CPU."""
    return check_device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device`` this machine has, or a one-line ``ValueError`` before any work:
    hrvlm computes on ``cpu``, ``cuda``/``cuda:N`` (N below the GPU count) and ``mps``; ``meta`` and
    other types hold no data for it to compute on."""
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {str(device)!r}: use cpu, cuda, cuda:N or mps") from None
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device {str(device)!r}: this machine has no CUDA GPU that torch can use; "
                             f"use --device cpu")
        if resolved.index is not None and resolved.index >= count:
            raise ValueError(f"device {str(device)!r}: this machine has {count} GPU(s), cuda:0..cuda:{count - 1}")
    elif resolved.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"device {str(device)!r}: Apple's MPS backend is not available here; use --device cpu")
    elif resolved.type != "cpu":
        raise ValueError(f"device {str(device)!r}: hrvlm runs on cpu, cuda, cuda:N or mps, not {resolved.type}")
    return resolved


def device_name(device: str | torch.device | None = None) -> str:
    device = default_device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def computed_on(device: str | torch.device | None = None) -> dict:
    """Where a record or a run was computed: hrvlm's version and commit, the libraries its numbers depend on,
    the device (the one home of this dict: evaluation records and run folders carry it)."""
    return {"code": {"hrvlm": hrvlm.__version__, "git": git_commit()}, "libraries": library_versions(RECORD_LIBRARIES),
            "device": device_name(device)}
