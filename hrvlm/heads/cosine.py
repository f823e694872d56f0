"""CLIP's zero-shot head: ``logit_scale · cos(image, class)``.

Prototypes as CLIP_benchmark builds them: each prompt embedding L2-normalised, averaged over the
templates, normalised again.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from hrvlm.heads.base import Head, register_head


def cosine_prototypes(text_features: torch.Tensor) -> torch.Tensor:
    """``[C, T, D]`` raw prompt features → ``[C, D]``: each prompt normalised, averaged, normalised."""
    per_template = nn.functional.normalize(text_features.float(), dim=-1)
    return nn.functional.normalize(per_template.mean(dim=1), dim=-1)


@register_head("cosine")
class CosineHead(Head):
    """``logit_scale`` defaults to the model's (``exp`` of its learned log-scale, clamped at 100 as CLIP
    does) and is fixed once the head is built."""

    def __init__(self, model: nn.Module, text_features: Sequence[torch.Tensor], logit_scale: float | None = None):
        super().__init__(model)
        if logit_scale is None:
            logit_scale = float(model.logit_scale.detach().exp().clamp(max=100.0))
        self.logit_scale = float(logit_scale)
        self.set_text(text_features)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(images, normalize=True)

    def prototypes_from_text(self, text_features: torch.Tensor) -> torch.Tensor:
        return cosine_prototypes(text_features)

    def scores(self, features: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        return self.logit_scale * features @ prototypes.to(features.dtype).t()

    def params(self) -> dict:
        return {"logit_scale": self.logit_scale}
