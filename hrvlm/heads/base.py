"""The classification head: images → logits at every level of a class tree.

One interface that training, attacks and evaluation all use, so a method's robust accuracy is always
measured white-box on the classifier it actually deploys (cosine for CLIP-style methods, Poincaré
distance for HRVLM).  A head is built from a model and, per level, the raw text features of every
prompt, ``[C_l, T, D]`` (classes × templates, *not* normalised); each kind turns them into prototypes
its own way (:meth:`Head.prototypes_from_text`) and scores image features against them
(:meth:`Head.scores`).

* ``head(images)`` → ``[logits_0, …, logits_L]``, the image encoded once;
* ``head.level(l)`` → a module ``images → logits_l``: what an attack differentiates through;
* ``head.spec()`` → ``{"kind": ..., **params}``, JSON: recorded with every result, and
  :func:`build_head` rebuilds the same head from it.

Kinds register by name (:func:`register_head`), as open_clip registers models.
"""
from __future__ import annotations

from typing import ClassVar, Sequence

import torch
from torch import nn

from hrvlm.core.registry import registrar

HEADS: dict[str, type["Head"]] = {}


# Class decorator: ``@register_head(kind)`` makes a :class:`Head` subclass buildable as ``{"kind": kind, ...}``.
register_head = registrar(HEADS, "kind", "a head kind")


class Head(nn.Module):
    """Base class; subclasses implement :meth:`encode`, :meth:`prototypes_from_text`, :meth:`scores`."""

    kind: ClassVar[str] = "head"

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self._depth = -1

    def set_text(self, text_features: Sequence[torch.Tensor]) -> None:
        """Prototypes of every level from its ``[C, T, D]`` prompt features (a subclass's ``__init__``
        calls this once its own settings are in place)."""
        if not text_features:
            raise ValueError("a head needs the text features of at least one level (the leaves)")
        for level, feats in enumerate(text_features):
            if feats.dim() != 3:
                raise ValueError(f"level {level}: text features must be [classes, templates, dim], "
                                 f"got {list(feats.shape)}")
            self.register_buffer(f"prototypes_{level}", self.prototypes_from_text(feats.detach()), persistent=False)
        self._depth = len(text_features) - 1

    # -- what a kind defines ---------------------------------------------------------------------------
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Image features in the head's space, ``[B, D']``."""
        raise NotImplementedError

    def prototypes_from_text(self, text_features: torch.Tensor) -> torch.Tensor:
        """``[C, T, D]`` raw prompt features → ``[C, D']`` class prototypes."""
        raise NotImplementedError

    def scores(self, features: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        """``[B, D']`` × ``[C, D']`` → logits ``[B, C]``."""
        raise NotImplementedError

    def params(self) -> dict:
        """The kind's settings (JSON values), so that :func:`build_head` can rebuild it."""
        return {}

    # -- shared ----------------------------------------------------------------------------------------
    @property
    def depth(self) -> int:
        return self._depth

    def prototypes(self, level: int) -> torch.Tensor:
        """Prototypes of ``level`` (a kind whose prototypes train may override this)."""
        if not 0 <= level <= self.depth:
            raise ValueError(f"level must be in 0..{self.depth}, got {level}")
        return getattr(self, f"prototypes_{level}")

    def num_classes(self, level: int = 0) -> int:
        return int(self.prototypes(level).shape[0])

    def logits(self, features: torch.Tensor, level: int = 0) -> torch.Tensor:
        return self.scores(features, self.prototypes(level))

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        features = self.encode(images)
        return [self.logits(features, level) for level in range(self.depth + 1)]

    def level(self, level: int) -> "LevelHead":
        self.prototypes(level)  # range check
        return LevelHead(self, level)

    def spec(self) -> dict:
        return {"kind": self.kind, **self.params()}


class LevelHead(nn.Module):
    """``images → logits`` of one level of a :class:`Head` (the ``forward`` an attack takes)."""

    def __init__(self, head: Head, level: int):
        super().__init__()
        self.head = head
        self.index = int(level)

    @property
    def model(self) -> nn.Module:  # attack_context switches the model's input checks off through this
        return self.head.model

    @property
    def num_classes(self) -> int:
        return self.head.num_classes(self.index)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head.logits(self.head.encode(images), self.index)


def build_head(spec: dict | None, model: nn.Module, tokenizer, names: Sequence[Sequence[str]],
               templates: Sequence[str]) -> Head:
    """The head ``spec`` (default ``{"kind": "cosine"}``) over per-level class ``names`` (level 0 =
    leaves), its prototypes from ``templates`` filled with each name."""
    from hrvlm.text.prompts import encode_prompts

    spec = dict(spec or {"kind": "cosine"})
    kind = spec.pop("kind", None)
    if kind not in HEADS:
        raise ValueError(f"unknown head kind {kind!r}; known: {sorted(HEADS)}")
    features = [encode_prompts(model, tokenizer, level_names, templates) for level_names in names]
    return HEADS[kind](model, features, **spec)
