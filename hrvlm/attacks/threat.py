"""The threat model: the only place where ε-balls, the [0, 1] box and random starts are defined.

A perturbation ``δ`` of a batch ``x`` (first dimension = samples) is admissible when, per sample,
``‖δ‖_p ≤ ε`` and ``x + δ`` lies in the box (``[0, 1]`` for images; ``box=None`` for unbounded spaces
such as text embeddings).  ε is in the units of ``x``: for images that is [0, 1] pixel units, so the
usual "ε = 1/255" is ``1/255`` here, not ``1``.  On the command line (:class:`Eps`) a bare number is a
multiple of the profile's ε unit and ``a/b`` an explicit fraction, the same in every verb.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from fractions import Fraction

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


# ------------------------------------------------------------------ ε as written on the command line
PAPER_UNIT = 1 / 255  # the ε unit without a profile: the paper's 1/255


@dataclass(frozen=True)
class Eps:
    """An ε as the user wrote it: one meaning for every verb's ``--eps`` (and ``--step-size``).

    ``a/b`` (e.g. ``2/255``) is an explicit fraction of the [0, 1] pixel range; a bare number ``m``
    (e.g. ``1``, ``0.5``) is ``m`` ε units, where the unit is a profile's ``eps_unit`` (the analogue of
    1/255; the paper's 1/255 where no profile applies): ε = m · unit.
    """

    text: str
    value: Fraction
    explicit: bool

    def pixels(self, unit: float) -> float:
        """ε in [0, 1] pixel units."""
        return float(self.value if self.explicit else self.value * exact_unit(unit))

    def multiple(self, unit: float) -> float:
        """ε as a multiple of ``unit``."""
        return float(self.value / exact_unit(unit) if self.explicit else self.value)

    def describe(self, unit: float, unit_name: str) -> str:
        """``'1 = 1 × 3/255 (the mini profile's unit) = 0.01176'``: what a bare number resolved to."""
        if self.explicit:
            return f"{self.text} = {self.pixels(unit):.5g}"
        return f"{self.text} = {self.text} × {unit_text(unit)} ({unit_name}) = {self.pixels(unit):.5g}"


def exact_unit(unit: float) -> Fraction:
    """A unit such as ``float(3/255)`` back as the fraction it was written as (``1/85``)."""
    return Fraction(unit).limit_denominator(1 << 16)


def unit_text(unit: float) -> str:
    """A unit as people write it: ``3/255`` rather than ``1/85``."""
    in_255 = exact_unit(unit) * 255
    return f"{in_255.numerator}/255" if in_255.denominator == 1 else str(exact_unit(unit))


def read_eps(text: str) -> Eps:
    """Parse ``--eps``/``--step-size`` text (an argparse ``type``): ``2/255`` or a bare multiple such as ``1``."""
    import argparse

    cleaned = str(text).strip()
    try:
        value = Fraction(cleaned)
    except (ValueError, ZeroDivisionError, OverflowError):
        raise argparse.ArgumentTypeError(f"cannot read eps {text!r}: write a multiple of the ε unit (e.g. 1) or an "
                                         f"explicit fraction of the pixel range (e.g. 2/255)") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"eps {text!r} is negative: write e.g. 1 (one ε unit) or 2/255")
    return Eps(cleaned, value, "/" in cleaned)


def check_eps_budget(eps: Eps, unit: float, unit_name: str, norm: str = "linf", option: str = "--eps") -> float:
    """``eps`` in pixel units, or a one-line ``ValueError`` whose advice the same option accepts: an L∞
    ε above 1 covers the whole pixel range."""
    pixels = eps.pixels(unit)
    if norm == "linf" and pixels > 1:
        raise ValueError(f"{option} {eps.describe(unit, unit_name)} exceeds 1, the whole [0, 1] pixel range: give a "
                         f"multiple of the ε unit such as {option} 1 (= {unit_text(unit)}) or an explicit fraction "
                         f"such as {option} 4/255")
    return pixels


def eps_argument(unit: float = PAPER_UNIT, unit_name: str = "the paper's unit"):
    """An argparse ``type`` for a verb whose ε unit is fixed (the benches: 1/255): text → ε in pixels,
    read as :class:`Eps` (``2/255``, or a bare multiple of ``unit``)."""
    import argparse

    def parse(text: str) -> float:
        try:
            return check_eps_budget(read_eps(text), unit, unit_name)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    parse.__name__ = "eps"
    return parse
