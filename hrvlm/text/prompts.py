"""Class prompts → text features: every template filled with each class name, as CLIP_benchmark does.

The features are what a head (:mod:`hrvlm.heads`, the one home of logits) builds its prototypes from.
"""
from __future__ import annotations

import collections
import hashlib
import weakref
from typing import Sequence

import torch

from hrvlm.data.templates import check_templates


# (text tower digest, prompts, device, dtype) -> features: the book evaluates many runs whose text towers are
# the same frozen weights (every method but HRVLM fine-tunes the image tower only), and one ViT-B/32 text
# pass over a dataset's prompts costs minutes on a CPU (ImageNet: 1,000 prompts)
_FEATURES: "collections.OrderedDict[tuple, torch.Tensor]" = collections.OrderedDict()
_FEATURES_KEPT = 64
_DIGESTS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # clip module -> (tensor versions, digest)


def _text_digest(model) -> str | None:
    """The sha256 of the text tower's weights (every tensor of the open_clip model outside ``visual``),
    recomputed only when a tensor changed (its version counter) or was replaced; ``None`` for a model
    that is not a :class:`~hrvlm.models.clip.PixelCLIP` (or one wrapped by the resolution policy)."""
    clip = getattr(model, "clip", None) or getattr(getattr(model, "inner", None), "clip", None)
    if clip is None:
        return None
    tensors = [(k, t) for k, t in clip.state_dict(keep_vars=True).items() if not k.startswith("visual.")]
    versions = tuple((k, id(t), t._version) for k, t in tensors)
    held = _DIGESTS.get(clip)
    if held is None or held[0] != versions:
        from hrvlm.models.weights import tensors_digest

        held = (versions, tensors_digest(tensors))
        _DIGESTS[clip] = held
    return held[1]


@torch.no_grad()
def encode_prompts(model, tokenizer, classnames: Sequence[str], templates: Sequence[str],
                   batch_size: int = 256) -> torch.Tensor:
    """``[C, T, D]`` raw (not normalised) text features of every template filled with every class name:
    what a :class:`hrvlm.heads.Head` builds its prototypes from.  Fixed features (no gradient), kept in
    memory per (text weights, prompts): equal text towers share them (:func:`_text_digest`)."""
    check_templates(templates)
    if not classnames:
        raise ValueError("classnames is empty")
    device = next(model.parameters()).device
    prompts = [t.format(c=c) for c in classnames for t in templates]
    digest = _text_digest(model)
    key = None if digest is None else (digest, hashlib.sha256("\0".join(prompts).encode()).hexdigest(), str(device),
                                       torch.is_autocast_enabled(device.type))
    if key in _FEATURES:
        _FEATURES.move_to_end(key)
        return _FEATURES[key].clone().view(len(classnames), len(templates), -1)
    feats = torch.cat([model.encode_text(tokenizer(prompts[i:i + batch_size]).to(device), normalize=False)
                       for i in range(0, len(prompts), batch_size)])
    if key is not None:
        _FEATURES[key] = feats.clone()
        while len(_FEATURES) > _FEATURES_KEPT:
            _FEATURES.popitem(last=False)
    return feats.view(len(classnames), len(templates), -1)
