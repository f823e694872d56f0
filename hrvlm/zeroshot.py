"""Zero-shot classification: class prompts from templates → text features → a head → logits.

As CLIP_benchmark does: every template (a string with a ``{c}`` placeholder, stored as data in
``hrvlm/resources/templates``) is filled with each class name (:func:`encode_prompts`).  The logits
themselves live in one place, the heads (:mod:`hrvlm.heads`); :class:`ZeroShotClassifier` is the
cosine head's leaf level under its familiar name: ``scale · cos(image, class)``.
"""
from __future__ import annotations

import collections
import hashlib
import json
import string
import weakref
from pathlib import Path
from typing import Sequence

import torch

from .heads import CosineHead, LevelHead
from .heads.cosine import cosine_prototypes

TEMPLATE_DIR = Path(__file__).parent / "resources" / "templates"


def load_templates(name: str, dataset: str | None = None) -> list[str]:
    """Templates named ``name`` (a file in ``resources/templates``) or read from a JSON file path.

    A file holds a list of strings, or ``{"source": ..., "templates": [...]}`` saying where they come
    from.  A name that is a folder of per-dataset sets (``clip_benchmark``: CLIP_benchmark's ensembles)
    takes that folder's set for ``dataset``.
    """
    path = Path(name) if name.endswith(".json") else TEMPLATE_DIR / f"{name}.json"
    family = TEMPLATE_DIR / name
    if not path.is_file() and family.is_dir() and dataset is not None:
        path = family / f"{dataset}.json"
        if not path.is_file():
            have = sorted(p.stem for p in family.glob("*.json"))
            raise KeyError(f"template set {name!r} has no templates for {dataset!r} (it has {have}); "
                           f"use the dataset's default set instead")
    if not path.is_file():
        known = sorted(p.stem for p in TEMPLATE_DIR.glob("*.json")) + sorted(
            f"{p.name} (per dataset)" for p in TEMPLATE_DIR.iterdir() if p.is_dir())
        raise KeyError(f"no template set {name!r}; known: {known}, or pass a path to a JSON list of strings")
    try:
        templates = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"template file {path} is not a UTF-8 text file; give a JSON list of strings such as "
                         f'["a photo of a {{c}}."]') from None
    except json.JSONDecodeError as err:
        raise ValueError(f"template file {path} is not JSON ({err.msg} at line {err.lineno}); give a JSON list of "
                         f'strings such as ["a photo of a {{c}}."]') from None
    if isinstance(templates, dict):
        templates = templates.get("templates")
    check_templates(templates, where=f"template file {path}: ")
    return templates


def check_templates(templates: Sequence[str], where: str = "") -> None:
    """A template is a string with exactly one ``{c}`` field (filled by ``str.format(c=name)``) and no
    other field, conversion or format spec: ``{x}``, ``{0}``, ``{c.__class__}``, ``{c!r}`` and a second
    ``{c}`` are refused here, before any model loads, not when the first prompt is built."""
    if isinstance(templates, str) or not isinstance(templates, (list, tuple)) or not templates:
        raise ValueError(f"{where}templates must be a non-empty list of strings, e.g. ['a photo of a {{c}}.']")
    for template in templates:
        if not isinstance(template, str):
            raise ValueError(f"{where}every template must be a string, got {template!r}")
        try:
            fields = [(name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(template)
                      if name is not None]
        except ValueError as err:  # an unmatched brace
            raise ValueError(f"{where}template {template!r} is not a format string ({err}); write literal braces "
                             f"as {{{{ and }}}}") from None
        if fields != [("c", "", None)]:
            found = ["{" + n + ("!" + v if v else "") + (":" + f if f else "") + "}" for n, f, v in fields]
            raise ValueError(f"{where}template {template!r} must have exactly one {{c}} placeholder (the class name) "
                             f"and no other field; it has {found or 'none'}")


# (text tower digest, prompts, device, dtype) -> features: the book evaluates many runs whose text towers are
# the same frozen weights (every method but HRVLM fine-tunes the image tower only), and one ViT-B/32 text
# pass over a dataset's prompts costs minutes on a CPU (ImageNet: 1,000 prompts)
_FEATURES: "collections.OrderedDict[tuple, torch.Tensor]" = collections.OrderedDict()
_FEATURES_KEPT = 64
_DIGESTS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # clip module -> (tensor versions, digest)


def _text_digest(model) -> str | None:
    """The sha256 of the text tower's weights (every tensor of the open_clip model outside ``visual``),
    recomputed only when a tensor changed (its version counter) or was replaced; ``None`` for a model
    that is not a :class:`~hrvlm.models.PixelCLIP` (or one wrapped by the resolution policy)."""
    clip = getattr(model, "clip", None) or getattr(getattr(model, "inner", None), "clip", None)
    if clip is None:
        return None
    tensors = [(k, t) for k, t in clip.state_dict(keep_vars=True).items() if not k.startswith("visual.")]
    versions = tuple((k, id(t), t._version) for k, t in tensors)
    held = _DIGESTS.get(clip)
    if held is None or held[0] != versions:
        from .weights import tensors_digest

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


def class_embeddings(model, tokenizer, classnames: Sequence[str], templates: Sequence[str],
                     batch_size: int = 256) -> torch.Tensor:
    """``[C, D]`` unit-norm text embedding per class, averaged over templates (the cosine head's prototypes)."""
    return cosine_prototypes(encode_prompts(model, tokenizer, classnames, templates, batch_size))


class ZeroShotClassifier(LevelHead):
    """``images in [0, 1] → logits [B, C]`` for a fixed set of unit-norm class embeddings ``weights``:
    a one-level :class:`~hrvlm.heads.CosineHead`.

    This is the function attacks differentiate through; the class embeddings are a buffer, so
    gradients flow to the image only.  ``logit_scale`` defaults to the model's (``exp`` of its
    learned log-scale, clamped at 100 as CLIP does).
    """

    def __init__(self, model, weights: torch.Tensor, logit_scale: float | None = None):
        super().__init__(CosineHead(model, [weights.detach()[:, None, :]], logit_scale), 0)

    @classmethod
    def from_classnames(cls, model, tokenizer, classnames: Sequence[str], templates: Sequence[str],
                        logit_scale: float | None = None) -> "ZeroShotClassifier":
        return cls(model, class_embeddings(model, tokenizer, classnames, templates), logit_scale)

    @property
    def weights(self) -> torch.Tensor:
        return self.head.prototypes(0)

    @property
    def logit_scale(self) -> float:
        return self.head.logit_scale
