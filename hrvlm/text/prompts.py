"""Class prompts → text features: every template filled with each class name, as CLIP_benchmark does.

The features are what a head (:mod:`hrvlm.heads`, the one home of logits) builds its prototypes from.

They are fixed for fixed text weights, and one ViT-B/32 text pass over a dataset's prompts costs a minute
on a CPU, while a book evaluates many runs whose text towers are the same frozen weights (every method
fine-tunes the image tower; HRVLM trains only the text projection) in many processes.  So the pooled
features (before the projection, which HRVLM changes) are kept per (text tower, prompts, numerics): in
memory, and in the cache folder ``text-features/`` as safetensors files (data, never code) whose digest
is checked before use.
"""
from __future__ import annotations

import collections
import hashlib
import weakref
from pathlib import Path
from typing import Sequence

import torch

from hrvlm.data.templates import check_templates
from hrvlm.models.weights import tensors_digest

_FEATURES: "collections.OrderedDict[str, torch.Tensor]" = collections.OrderedDict()  # key -> pooled [P, D]
_FEATURES_KEPT = 64
_DIGESTS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # clip module -> (tensor versions, digest)
# what the pooled text pass does not read: the image tower, the projection after it, the logit scale and bias
_NOT_POOLED = ("visual.", "text_projection", "logit_scale", "logit_bias")
CACHE_FOLDER = "text-features"


def _pixel_clip(model):
    """The :class:`~hrvlm.models.clip.PixelCLIP` of ``model`` (itself, or the one the resolution policy
    wraps), ``None`` for anything else (whose features are then not kept)."""
    for candidate in (model, getattr(model, "inner", None)):
        if hasattr(candidate, "clip") and hasattr(candidate, "trim_text_padding"):
            return candidate
    return None


def _pooled_digest(clip) -> str:
    """The sha256 of the weights the pooled text pass of open_clip model ``clip`` reads (its tensors but
    :data:`_NOT_POOLED`), recomputed only when a tensor changed (its version counter) or was replaced."""
    tensors = [(k, t) for k, t in clip.state_dict(keep_vars=True).items() if not k.startswith(_NOT_POOLED)]
    versions = tuple((k, t._version) for k, t in tensors)
    held = _DIGESTS.get(clip)
    if held is None or held[0] != versions or any(ref() is not t for ref, (_, t) in zip(held[1], tensors)):
        held = (versions, [weakref.ref(t) for _, t in tensors], tensors_digest(tensors))
        _DIGESTS[clip] = held
    return held[2]


def _features_key(model, prompts: Sequence[str], device: torch.device) -> str | None:
    """What the pooled features of ``prompts`` are a function of: the model, its text weights, the text pass
    (trimmed or not), the prompts and the numerics (device type, autocast dtype, and on the CPU the thread
    count, which changes how reductions round)."""
    pixel = _pixel_clip(model)
    if pixel is None:
        return None
    autocast = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None
    numerics = [device.type, str(autocast), torch.get_num_threads() if device.type == "cpu" else None,
                pixel.trim_text_padding]
    text = "\0".join([pixel.name, _pooled_digest(pixel.clip), repr(numerics), *prompts])
    return hashlib.sha256(text.encode()).hexdigest()


def _read_cached(path: Path, rows: int) -> torch.Tensor | None:
    """The features stored at ``path`` if the file is whole and its digest and shape are what it says,
    else ``None`` (then recomputed and rewritten)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            stored = (f.metadata() or {}).get("digest")
            feats = f.get_tensor("pooled")
    except (OSError, SafetensorError, ValueError):
        return None
    if feats.ndim != 2 or feats.shape[0] != rows or stored != tensors_digest([("pooled", feats)]):
        return None
    return feats


def _write_cached(path: Path, feats: torch.Tensor) -> None:
    from safetensors.torch import save

    from hrvlm.core.storage import atomic_write_bytes

    feats = feats.detach().cpu().contiguous()
    try:
        atomic_write_bytes(path, save({"pooled": feats}, metadata={"digest": tensors_digest([("pooled", feats)])}))
    except OSError:
        pass  # a read-only or full cache: the features are still returned, only not kept


def _pooled_features(model, tokenizer, prompts: list[str], batch_size: int, device: torch.device) -> torch.Tensor:
    key = _features_key(model, prompts, device)
    if key is not None and key in _FEATURES:
        _FEATURES.move_to_end(key)
        return _FEATURES[key].clone()
    path = None
    if key is not None:
        from hrvlm.core.storage import cache_dir

        path = cache_dir(CACHE_FOLDER) / f"{key}.safetensors"
        cached = _read_cached(path, len(prompts)) if path.is_file() else None
        if cached is not None:
            _FEATURES[key] = cached.to(device)
            return _FEATURES[key].clone()
    pooled = torch.cat([model.encode_text(tokenizer(prompts[i:i + batch_size]).to(device), normalize=False,
                                          project=False) for i in range(0, len(prompts), batch_size)])
    if key is not None:
        _write_cached(path, pooled)
        _FEATURES[key] = pooled.clone()
        while len(_FEATURES) > _FEATURES_KEPT:
            _FEATURES.popitem(last=False)
    return pooled


@torch.no_grad()
def encode_prompts(model, tokenizer, classnames: Sequence[str], templates: Sequence[str],
                   batch_size: int = 256, project: bool = True) -> torch.Tensor:
    """``[C, T, D]`` raw (not normalised) text features of every template filled with every class name:
    what a :class:`hrvlm.heads.Head` builds its prototypes from.  Fixed features (no gradient); the pooled
    ones are kept in memory and in the cache per (text weights, prompts, numerics): equal text towers share
    them.  ``project=False``: the pooled features, before CLIP's text projection."""
    check_templates(templates)
    if not classnames:
        raise ValueError("classnames is empty")
    device = next(model.parameters()).device
    prompts = [t.format(c=c) for c in classnames for t in templates]
    feats = _pooled_features(model, tokenizer, prompts, batch_size, device)
    if project:
        feats = model.project_text(feats)
    return feats.view(len(classnames), len(templates), -1)
