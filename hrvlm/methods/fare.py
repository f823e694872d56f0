"""FARE (Schlarmann et al., ICML 2024): unsupervised adversarial fine-tuning of the image tower.

    L = (1 − w) · mean_i ‖f_θ(x′_i) − f_0(x_i)‖² + w · mean_i ‖f_θ(x_i) − f_0(x_i)‖²,
    w = clean_weight (0 by default, as FARE trains)

``f`` the raw projected image embedding (not normalised, as FARE trains: ``--output_normalize False``),
the squared L2 norm *summed* over the embedding dimensions and *averaged* over the batch (FARE's code
does not divide by the dimension), ``f_0`` the frozen original encoder (a copy taken at setup).  The
attack maximises the same per-sample distance with FARE's momentum PGD: normalised-gradient
momentum μ = 0.9, 10 steps of α = ε/4 (FARE and QT-AFT: α = 1/255 at ε = 4/255), random start.  No
labels or text are used.
"""
from __future__ import annotations

import torch

from hrvlm.methods.adversarial import AdversarialMethod, frozen_copy
from hrvlm.methods.base import Batch, TrainContext, register_method


def embedding_distance(features: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per-sample ``‖features − reference‖²`` summed over the embedding dimension, in float32: ``[B]``."""
    if features.shape != reference.shape:
        raise ValueError(f"embeddings differ in shape: {list(features.shape)} vs {list(reference.shape)}")
    return (features.float() - reference.float()).pow(2).sum(dim=-1)


@register_method("fare")
class FARE(AdversarialMethod):
    """Settings: the attack's (``steps`` 10, ``step_size`` 0.25 × ε, ``momentum`` 0.9, random start) and
    ``clean_weight`` (0: FARE's default; ``w`` above)."""

    defaults = {**AdversarialMethod.defaults, "steps": 10, "step_size": 0.25, "momentum": 0.9, "clean_weight": 0.0}

    def check_settings(self) -> None:
        super().check_settings()
        self.require_number("clean_weight", high=1.0)

    def setup(self, ctx: TrainContext) -> None:
        super().setup(ctx)
        self.original = frozen_copy(ctx.model)
        self._batch: Batch | None = None
        self._targets: dict[str, torch.Tensor] = {}

    def targets(self, batch: Batch) -> dict[str, torch.Tensor]:
        """What the attack and the loss of one batch both need, computed once per batch (the loop hands
        the same :class:`Batch` to ``perturb`` and ``loss``; holding it keeps the identity check sound)."""
        if self._batch is not batch:
            self._batch, self._targets = batch, self.compute_targets(batch)
        return self._targets

    def compute_targets(self, batch: Batch) -> dict[str, torch.Tensor]:
        with torch.no_grad(), self.autocast():
            return {"reference": self.original.encode_image(batch.images, normalize=False).float()}

    def terms(self, features: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        """The per-sample terms ``[B]`` of the objective, from the raw embeddings of (clean or adversarial)
        images."""
        return {"l2": embedding_distance(features, self.targets(batch)["reference"])}

    def weights(self) -> dict[str, float]:
        return {"l2": 1.0}

    def objective(self, images: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Per-sample objective ``[B]`` (the weighted sum of :meth:`terms`) and the terms themselves."""
        terms = self.terms(self.ctx.model.encode_image(images, normalize=False), batch)
        return sum(self.weights()[k] * v for k, v in terms.items()), terms

    def perturb(self, batch: Batch) -> torch.Tensor:
        return self.attack(lambda adv: self.objective(adv, batch)[0], batch.images, self.original)

    def loss(self, batch: Batch, adv: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, float]]:
        w = self.settings["clean_weight"]
        with self.autocast():
            total, terms = self.objective(batch.images if adv is None else adv, batch)
            total = total.mean()
            logs = {k: float(v.detach().mean()) for k, v in terms.items()}
            if w > 0:  # FARE's optional clean term: the same objective on the clean images
                clean, _ = self.objective(batch.images, batch)
                logs["clean"] = float(clean.detach().mean())
                total = (1 - w) * total + w * clean.mean()
        return total, logs
