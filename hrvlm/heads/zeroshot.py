"""Zero-shot classification under its familiar name: :class:`ZeroShotClassifier` is the cosine head's leaf
level, ``scale · cos(image, class)``, with class embeddings averaged over templates (:func:`class_embeddings`)."""
from __future__ import annotations

from typing import Sequence

import torch

from hrvlm.heads.base import LevelHead
from hrvlm.heads.cosine import CosineHead, cosine_prototypes
from hrvlm.text.prompts import encode_prompts


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
