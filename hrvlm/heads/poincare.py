"""HRVLM's zero-shot head on the Poincaré ball: ``logits = −d_c(φ(x), ψ_k) / τ``.

Image and text features are *not* L2-normalised (the norm must stay free to encode depth: the
papernotes.org note on the paper, its Poincaré-ball section); each modality is multiplied by its own feature scale α, lifted by :func:`~hrvlm.geometry.poincare.expmap0`
with curvature c and kept strictly inside the ball (radius ≤ (1 − eps)/√c).  A class prototype
combines its per-template prompt features in one of two ways (``template_mean``, ours):

* ``"tangent"`` (default): the mean of the scaled features in the tangent space at the origin, then
  one lift — what CLIP_benchmark's template averaging becomes before ``expmap0``.  Because the text
  projection is linear, training only needs each class's mean transformer output (T× less work);
* ``"einstein"``: each prompt lifted on its own, the class point their Einstein midpoint (HypAvg).

The pure functions below are the one home of these formulas: :class:`PoincareHead` (evaluation and
attacks) and the HRVLM method (training, with learned c and α) both call them, so the deployed head
scores exactly as the trained one.  Everything geometric runs in float32 even under autocast.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from hrvlm.geometry import poincare as geometry

from hrvlm.heads.base import Head, register_head

TEMPLATE_MEANS = ("tangent", "einstein")


def lift(features: torch.Tensor, scale, c) -> torch.Tensor:
    """Euclidean features → ball points: ``proj(exp₀ᶜ(α·f))`` in float32 (α, c floats or 0-d tensors)."""
    with torch.autocast(device_type=features.device.type, enabled=False):
        return geometry.project(geometry.expmap0(features.float() * scale, c), c)


def text_prototypes(features: torch.Tensor, scale, c, template_mean: str = "tangent") -> torch.Tensor:
    """``[C, T, D]`` per-template text features → ``[C, D]`` class points (see the module docstring)."""
    if template_mean == "tangent":
        return lift(features.float().mean(dim=1), scale, c)
    if template_mean == "einstein":
        return geometry.project(geometry.einstein_midpoint(lift(features, scale, c), c=c, dim=-2), c)
    raise ValueError(f"unknown template_mean {template_mean!r}; use one of {TEMPLATE_MEANS}")


def distance_logits(points: torch.Tensor, prototypes: torch.Tensor, c, temperature) -> torch.Tensor:
    """``[N, D]`` × ``[C, D]`` ball points → ``−d_c / τ``, ``[N, C]`` float32."""
    return -geometry.pairwise_dist(points, prototypes, c) / temperature


@register_head("poincare")
class PoincareHead(Head):
    """Distance logits on the Poincaré ball of curvature ``−curvature``.

    ``image_scale`` and ``text_scale`` (α of each modality) have no default: a model's raw image and
    text feature norms differ by large factors (8× on the mini-world tiny CLIP), so they come from
    training — :meth:`hrvlm.methods.hrvlm.HRVLM.head_spec` records the learned values.
    """

    def __init__(self, model: nn.Module, text_features: Sequence[torch.Tensor], curvature: float = 1.0,
                 temperature: float = 0.1, image_scale: float | None = None, text_scale: float | None = None,
                 template_mean: str = "tangent"):
        super().__init__(model)
        if image_scale is None or text_scale is None:
            raise ValueError("a poincare head needs image_scale and text_scale (the feature scales learned in "
                             "training: build it from the trained method's head_spec())")
        for name, value in (("curvature", curvature), ("temperature", temperature),
                            ("image_scale", image_scale), ("text_scale", text_scale)):
            if not float(value) > 0:
                raise ValueError(f"poincare head: {name} must be > 0, got {value!r}")
        if template_mean not in TEMPLATE_MEANS:
            raise ValueError(f"poincare head: unknown template_mean {template_mean!r}; use one of {TEMPLATE_MEANS}")
        self.curvature, self.temperature = float(curvature), float(temperature)
        self.image_scale, self.text_scale = float(image_scale), float(text_scale)
        self.template_mean = template_mean
        self.set_text(text_features)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return lift(self.model.encode_image(images, normalize=False), self.image_scale, self.curvature)

    def prototypes_from_text(self, text_features: torch.Tensor) -> torch.Tensor:
        return text_prototypes(text_features, self.text_scale, self.curvature, self.template_mean)

    def scores(self, features: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        return distance_logits(features, prototypes, self.curvature, self.temperature)

    def params(self) -> dict:
        return {"curvature": self.curvature, "temperature": self.temperature, "image_scale": self.image_scale,
                "text_scale": self.text_scale, "template_mean": self.template_mean}
