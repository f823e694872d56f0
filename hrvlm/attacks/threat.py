"""The threat model: the only place where ε-balls, the [0, 1] box and random starts are defined.

A perturbation ``δ`` of a batch ``x`` (first dimension = samples) is admissible when, per sample,
``‖δ‖_p ≤ ε`` and ``x + δ`` lies in the box (``[0, 1]`` for images; ``box=None`` for unbounded spaces
such as text embeddings).  ε is in the units of ``x``: for images that is [0, 1] pixel units, so the
usual "ε = 1/255" is ``1/255`` here, not ``1``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

NORMS = ("linf", "l2")


@dataclass(frozen=True)
class ThreatModel:
    """An ε-ball in the ``norm`` ("linf" or "l2") around each sample, intersected with ``box``."""

    norm: str = "linf"
    eps: float = 1 / 255
    box: tuple[float, float] | None = (0.0, 1.0)

    def __post_init__(self):
        if self.norm not in NORMS:
            raise ValueError(f"unknown norm {self.norm!r}; use one of {NORMS}")
        eps = float(self.eps)
        if not math.isfinite(eps) or eps < 0:
            raise ValueError(f"eps must be a finite number >= 0, got {self.eps!r}")
        if self.norm == "linf" and self.box == (0.0, 1.0) and eps > 1:
            raise ValueError(f"linf eps={self.eps!r} exceeds 1: eps is in [0, 1] pixel units, so write "
                             f"1/255 (= {1 / 255:.5f}) for the usual '1/255' budget, not 1")
        if self.box is not None and not self.box[0] < self.box[1]:
            raise ValueError(f"box must be (low, high) with low < high, got {self.box!r}")
        object.__setattr__(self, "eps", eps)

    def to_dict(self) -> dict:
        return asdict(self)

    # -- geometry ------------------------------------------------------------------------------------
    def _norms(self, t: torch.Tensor) -> torch.Tensor:
        """Per-sample L2 norms shaped to broadcast against ``t``."""
        return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.dim() - 1)))

    def project(self, delta: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """Project ``delta`` onto the ε-ball and, given ``x``, make ``x + delta`` lie in the box."""
        if self.norm == "linf":
            delta = delta.clamp(-self.eps, self.eps)
        else:
            delta = delta * (self.eps / self._norms(delta).clamp_min(1e-12)).clamp(max=1.0)
        if x is not None and self.box is not None:
            delta = (x + delta).clamp(*self.box) - x
        return delta

    def apply(self, x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """``x + delta`` inside the box.

        ``delta`` is projected already, so the clamp only absorbs float round-off (1 ulp); it is made
        gradient-transparent so that a pixel rounded just past the box keeps its gradient.
        """
        out = x + delta
        return out if self.box is None else out + (out.clamp(*self.box) - out).detach()

    def direction(self, grad: torch.Tensor) -> torch.Tensor:
        """Steepest-ascent direction of unit dual norm: ``sign(g)`` for L∞, ``g / ‖g‖₂`` for L2.

        NaN gradients (e.g. from a degenerate normalisation) count as 0, as FARE does.
        """
        grad = torch.nan_to_num(grad, nan=0.0)
        if self.norm == "linf":
            return grad.sign()
        return grad / self._norms(grad).clamp_min(1e-12)

    def random_start(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A uniformly random admissible ``δ``: uniform in the L∞ cube / the L2 ball, then projected."""
        if self.norm == "linf":
            delta = (torch.rand(x.shape, generator=generator, device=x.device) * 2 - 1) * self.eps
        else:
            direction = self.direction(torch.randn(x.shape, generator=generator, device=x.device))
            dim = x[0].numel()
            radius = torch.rand(x.shape[0], generator=generator, device=x.device) ** (1.0 / dim) * self.eps
            delta = direction * radius.view(-1, *([1] * (x.dim() - 1)))
        return self.project(delta.to(torch.float32), x)

    def contains(self, x: torch.Tensor, adv: torch.Tensor, atol: float = 1e-6) -> torch.Tensor:
        """Per-sample bool: is ``adv`` admissible around ``x`` (to ``atol`` of float round-off)?"""
        delta = (adv - x).flatten(1)
        size = delta.abs().amax(dim=1) if self.norm == "linf" else delta.norm(dim=1)
        inside = size <= self.eps + atol
        if self.box is not None:
            flat = adv.flatten(1)
            inside &= (flat.amin(dim=1) >= self.box[0] - atol) & (flat.amax(dim=1) <= self.box[1] + atol)
        return inside
