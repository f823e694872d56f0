"""Weights by name: which local file a ``pretrained=`` value means, and the identity of weights.

:func:`hrvlm.models.clip.load_clip` asks :func:`resolve` what ``pretrained`` is:

* a weights file (``.safetensors``, ``.pt``, ``.pth``, ``.bin``);
* a run folder or run name (:mod:`hrvlm.models.runs`): its ``model.safetensors`` and its record (model
  name, head spec);
* a tag registered here by the module that builds it (:func:`register_weights`; the mini world's
  ``mini`` and ``mini-smoke`` by :mod:`hrvlm.training.pretrain`);
* :data:`RANDOM_INIT` (``"random-init"``): no pretrained weights, the architecture's initialisation
  under a fixed seed, so the name means the same weights everywhere (the ``rehearsal`` profile's, tests');
* anything else is an open_clip tag (``None`` returned).

Registration replaces the old ``"module:function"`` strings, so this module imports nothing of hrvlm's
models, and no import cycle runs through it: builders register into it, at import.  The modules listed
in :data:`PROVIDERS` are imported on the first lookup of an unknown tag, as plugins are discovered.

:func:`state_digest` identifies weights by their values: evaluation records are keyed by it, so a model
changed in memory is never given the record of the weights it was loaded from.
"""
from __future__ import annotations

import hashlib
import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
RANDOM_INIT = "random-init"   # the weights name of a random initialisation (never a download)
RANDOM_INIT_SEED = 0          # the seed it is drawn with

# tag -> resolver(model_name) -> path of the weights file (it may build them first)
RESOLVERS: dict[str, Callable[[str], Path]] = {}
# Modules that register tags when imported (looked up lazily, so `import hrvlm.models.clip` stays light).
PROVIDERS: tuple[str, ...] = ("hrvlm.training.pretrain",)


def register_weights(tag: str, resolver: Callable[[str], os.PathLike]) -> None:
    """Make ``load_clip(model, pretrained=tag)`` load the file ``resolver(model)`` returns."""
    RESOLVERS[tag] = resolver


@dataclass(frozen=True)
class LocalWeights:
    path: Path                       # the state dict of the inner open_clip model
    record: dict = field(default_factory=dict)  # the run record, for runs: model, head spec, method


def _registered(tag: str) -> Callable | None:
    if tag not in RESOLVERS:
        for module in PROVIDERS:
            importlib.import_module(module)
    return RESOLVERS.get(tag)


def resolve(pretrained: str | os.PathLike, model_name: str) -> LocalWeights | None:
    """The local weights ``pretrained`` names for ``model_name``, or None for an open_clip tag (and for
    :data:`RANDOM_INIT`, which has no file)."""
    from hrvlm.models import runs

    text = str(pretrained)
    if text == RANDOM_INIT:
        return None
    if Path(text).suffix in WEIGHT_SUFFIXES:
        path = Path(text).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {path} does not exist")
        return LocalWeights(path)
    if os.sep in text and not text.startswith("hf-hub:"):  # a path, not a tag: it must be a run
        runs.run_path(text)
    if runs.is_run(text):
        record = runs.read_record(text)
        if record["model"] != model_name:
            raise ValueError(f"run {text!r} fine-tuned {record['model']!r}, not {model_name!r}: "
                             f"load it with load_clip({record['model']!r}, pretrained={text!r})")
        return LocalWeights(Path(record["path"]) / runs.WEIGHTS, record)
    resolver = _registered(text)
    return None if resolver is None else LocalWeights(Path(resolver(model_name)))


def weights_identity(pretrained: str | os.PathLike, model_name: str) -> str:
    """What a run starting from ``pretrained`` starts from, for its identity: ``sha256:<hex>`` of the
    local file it names (a weights file, a run's ``model.safetensors``, a registered tag's built file,
    built first if absent), so that other bytes under the same name make another run; an open_clip
    tag is its own identity (open_clip checks what it downloads)."""
    from hrvlm.core.storage import file_sha256

    local = resolve(pretrained, model_name)
    return str(pretrained) if local is None else "sha256:" + file_sha256(local.path)


def state_digest(module: torch.nn.Module) -> str:
    """``sha256:<hex>`` of a module's state dict (names, dtypes, shapes and values, in order).

    Equal for equal weights on any device; costs one pass over the weights (about a second for
    ViT-B/32), so callers that evaluate the same model many times compute it once.
    """
    return tensors_digest(module.state_dict().items())


def tensors_digest(named) -> str:
    """``sha256:<hex>`` of ``(name, tensor)`` pairs: what :func:`state_digest` hashes, for a part of a model."""
    h = hashlib.sha256()
    for name, tensor in named:
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return "sha256:" + h.hexdigest()
