"""Uncertainty of the book's numbers over seeds and images, and paired tests of two variants.

The binomial standard error of :mod:`hrvlm.results.metrics` describes one accuracy on ``n`` fixed images of one
run.  A table cell of the book is a mean over training seeds (a seed changes the data order, the attack's
random starts and any initialisation) of accuracies on the same fixed images, often averaged over
several evaluation sets; both the seeds and the images are samples.  This module gives such a cell a 95 %
interval, and a difference between two variants evaluated on the same images (paired by image and
seed) an interval and a verdict.

**Per-image outcomes.**  A *part* (one evaluation set, or one set's levels pooled) holds, for each
seed ``s`` and image ``i``, a numerator ``x_si`` and a denominator ``w_si``; the part's statistic for
seed ``s`` is the ratio ``r_s = Σ_i x_si / Σ_i w_si``.  Accuracy has ``x = correct``, ``w = 1``; the
transfer success rate has ``x = leaf right clean and wrong on the adversary``, ``w = leaf right clean``
(:data:`hrvlm.book.claims.METRICS` builds them from the records' bitmaps).  A cell is

    θ = (1 / D) Σ_d (1 / S) Σ_s r_sd          (D parts, S seeds: the table's mean of means)

and a paired difference is ``θ_A − θ_B`` with both variants' outcomes on the same images and seeds.

**The interval: a two-way (seed × image) bootstrap.**  The book evaluates every seed on the same fixed
images (:func:`hrvlm.data.fixed_subset`), a crossed design: each of ``B`` replicates draws ``S`` seeds
with replacement and, for each part, ``n_d`` images with replacement, and θ* is θ on the drawn seeds ×
drawn images (for a difference, the *same* draws for A and B: that is the pairing).  This is the
pigeonhole bootstrap (Owen 2007, *Ann. Appl. Stat.* 1(2)).  Under the two-way model
``y_si = μ + α_s + β_i + ε_si`` the estimate has ``Var θ̂ = σ_α²/S + σ_β²/n + σ_ε²/(S n)``, while the
bootstrap's variance is about ``σ_α²/S + σ_β²/n + 2 σ_ε²/(S n)``: drawing seeds and drawing images both
carry the seed × image residual, which dominates for 0/1 outcomes (an interval of ~99 % instead of
95 %).  So the percentile interval ``[q_0.025, q_0.975]`` of θ* is shrunk about θ̂ by
``λ = sqrt((V* − V_e) / V*)``, ``V*`` the variance of θ*, ``V_e`` the residual term estimated from the
two-way table (:func:`residual_variance`).  With one seed nothing is drawn twice (λ = 1): the interval is
the image bootstrap alone and says nothing of seed-to-seed variation; :class:`Estimate` carries the seed
count so that a reader sees it.  A replicate whose denominator sums to zero somewhere (a rate over no
images) is left out; ``Estimate.dropped`` counts such replicates.

**The verdict** (:func:`verdict`) of a claim "A > B" at 95 %: *agrees* when the whole interval of
``θ_A − θ_B`` lies above 0, *disagrees* when it lies below 0, *inconclusive* otherwise ("A < B" mirrored).

Deterministic: the draws come from ``numpy.random.default_rng(seed)`` (``seed`` an argument, default 0),
so the same outcomes give the same interval in every process and on every machine.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

CONFIDENCE = 0.95
REPLICATES = 2000
DIRECTIONS = ("greater", "less")   # the claim is A > B, or A < B
VERDICTS = ("agrees", "disagrees", "inconclusive")
_CHUNK = 250  # replicates drawn at once: bounds memory at (chunk × seeds × images) indices


@dataclass(frozen=True)
class Part:
    """One part's per-image outcomes of every seed: ``numerator`` and ``denominator`` of shape
    ``(variants, seeds, images)`` (``variants`` = 1 for a cell, 2 for a paired difference)."""

    numerator: np.ndarray
    denominator: np.ndarray

    @classmethod
    def of(cls, numerator, denominator=None) -> "Part":
        """From arrays of shape ``(seeds, images)`` or ``(variants, seeds, images)``; ``denominator``
        defaults to ones (a plain mean, e.g. accuracy)."""
        num = np.asarray(numerator, dtype=np.float64)
        num = num[None] if num.ndim == 2 else num
        den = np.ones_like(num) if denominator is None else np.asarray(denominator, dtype=np.float64)
        den = den[None] if den.ndim == 2 else den
        if num.ndim != 3 or num.shape != den.shape or 0 in num.shape:
            raise ValueError(f"per-image outcomes must be non-empty (seeds, images) arrays of one shape, got "
                             f"{num.shape} and {den.shape}")
        if not (np.isfinite(num).all() and np.isfinite(den).all()) or (den < 0).any():
            raise ValueError("per-image outcomes must be finite, with non-negative denominators")
        return cls(num, den)

    @property
    def seeds(self) -> int:
        return self.numerator.shape[1]

    @property
    def images(self) -> int:
        return self.numerator.shape[2]


@dataclass(frozen=True)
class Estimate:
    """A statistic (fraction, or difference of fractions) with its percentile interval: ``value``,
    ``low``, ``high``; ``seeds`` and ``images`` (per part, summed over parts) it rests on; ``dropped``
    replicates without a defined value."""

    value: float
    low: float
    high: float
    seeds: int
    images: int
    replicates: int
    dropped: int = 0

    def points(self, digits: int = 1) -> str:
        """``"41.2 [38.0, 44.1]"`` in percentage points (``"–"`` when undefined)."""
        if math.isnan(self.value):
            return "–"
        return f"{100 * self.value:.{digits}f} [{100 * self.low:.{digits}f}, {100 * self.high:.{digits}f}]"


@dataclass(frozen=True)
class Paired:
    """A paired comparison of A and B: the difference ``effect`` (:class:`Estimate` of θ_A − θ_B),
    each side's own estimate, the expected ``direction`` and the ``verdict``."""

    effect: Estimate
    a: Estimate
    b: Estimate
    direction: str
    verdict: str


def _parts(parts: Part | Sequence[Part]) -> list[Part]:
    parts = [parts] if isinstance(parts, Part) else list(parts)
    if not parts:
        raise ValueError("no parts to estimate from")
    shapes = {(p.numerator.shape[0], p.seeds) for p in parts}
    if len(shapes) != 1:
        raise ValueError(f"every part needs the same variants and seeds, got (variants, seeds) {sorted(shapes)}")
    return parts


def _ratios(num_sums: np.ndarray, den_sums: np.ndarray) -> np.ndarray:
    """Per-variant ratios Σx / Σw, NaN where Σw = 0 (a rate over no images)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den_sums > 0, num_sums / np.where(den_sums > 0, den_sums, 1), np.nan)


def _contrast(values: np.ndarray) -> np.ndarray:
    """Per-variant values (first axis) → the statistic: the value itself (one variant) or A − B (two)."""
    return values[0] if values.shape[0] == 1 else values[0] - values[1]


def _point(parts: list[Part]) -> np.ndarray:
    """θ of each variant (shape ``(variants,)``): mean over parts of the mean over seeds of the ratio."""
    return np.mean([_ratios(p.numerator.sum(-1), p.denominator.sum(-1)).mean(-1) for p in parts], axis=0)


def _counts(rng: np.random.Generator, b: int, n: int) -> np.ndarray:
    """``b`` draws of ``n`` images with replacement, as counts per image: shape ``(b, n)``."""
    drawn = rng.integers(0, n, size=(b, n)) + n * np.arange(b)[:, None]
    return np.bincount(drawn.ravel(), minlength=b * n).reshape(b, n).astype(np.float64)


def bootstrap(parts: Part | Sequence[Part], *, replicates: int = REPLICATES, seed: int = 0) -> np.ndarray:
    """θ* of each variant in ``replicates`` draws of the pigeonhole bootstrap of the module docstring (seeds
    and images drawn independently, the same draws for every variant): shape ``(variants, replicates)``, NaN
    where a replicate's rate is undefined; deterministic in ``seed``."""
    parts = _parts(parts)
    if replicates < 1:
        raise ValueError(f"replicates must be a positive integer, got {replicates}")
    rng = np.random.default_rng(seed)
    variants, seeds = parts[0].numerator.shape[:2]
    out = np.empty((variants, replicates))
    for start in range(0, replicates, _CHUNK):
        b = min(_CHUNK, replicates - start)
        drawn = rng.integers(0, seeds, size=(b, seeds)).T[None]             # (1, seeds, b): seed k of replicate j
        total = np.zeros((variants, seeds, b))
        for part in parts:
            counts = _counts(rng, b, part.images).T                          # (images, b)
            # one image draw serves every drawn seed: the sums are a matrix product, then the seeds are picked
            num = np.take_along_axis(part.numerator @ counts, drawn, axis=1)  # (variants, seeds, b)
            den = np.take_along_axis(part.denominator @ counts, drawn, axis=1)
            total += _ratios(num, den)
        out[:, start:start + b] = (total / len(parts)).mean(axis=1)
    return out


def residual_variance(parts: Part | Sequence[Part]) -> float:
    """V_e = (1/D²) Σ_d MS_e,d / (S n_d): the seed × image residual's share of Var(θ̂), which the pigeonhole
    bootstrap counts twice.  MS_e is the residual mean square of the two-way table (seed, image) of the
    linearised outcomes ``y_si = (x_si − r_s w_si) / w̄_s`` (an image's influence on the seed's ratio
    ``r_s``), taken as A − B for two variants; 0 with one seed (nothing is then counted twice)."""
    parts = _parts(parts)
    seeds = parts[0].seeds
    if seeds < 2:
        return 0.0
    total = 0.0
    for part in parts:
        if part.images < 2:
            continue
        ratio = _ratios(part.numerator.sum(-1, keepdims=True), part.denominator.sum(-1, keepdims=True))
        mean_w = part.denominator.mean(-1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            y = _contrast(np.nan_to_num((part.numerator - ratio * part.denominator) / mean_w))  # (seeds, images)
        e = y - y.mean(1, keepdims=True) - y.mean(0, keepdims=True) + y.mean()
        total += (e ** 2).sum() / ((seeds - 1) * (part.images - 1)) / (seeds * part.images)
    return total / len(parts) ** 2


def _summarise(value: float, draws: np.ndarray, residual: float, confidence: float, parts: list[Part]) -> Estimate:
    """θ̂ and its corrected percentile interval from the replicates ``draws`` (module docstring)."""
    kept = draws[~np.isnan(draws)]
    low = high = math.nan
    if kept.size > 1 and not math.isnan(value):
        tail = (1 - confidence) / 2
        spread = kept.var(ddof=1)
        shrink = math.sqrt(max(spread - residual, 0.0) / spread) if spread > 0 else 1.0
        low, high = value + shrink * (np.quantile(kept, [tail, 1 - tail]) - value)
    return Estimate(float(value), float(low), float(high), parts[0].seeds, sum(p.images for p in parts),
                    draws.size, int(draws.size - kept.size))


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")


def estimate(parts: Part | Sequence[Part], *, confidence: float = CONFIDENCE, replicates: int = REPLICATES,
             seed: int = 0) -> Estimate:
    """θ of ``parts`` (one variant: a cell; two: the difference A − B) with its corrected percentile
    interval at ``confidence`` (:func:`bootstrap`, :func:`residual_variance`; module docstring)."""
    _check_confidence(confidence)
    parts = _parts(parts)
    draws = _contrast(bootstrap(parts, replicates=replicates, seed=seed))
    return _summarise(float(_contrast(_point(parts))), draws, residual_variance(parts), confidence, parts)


def verdict(effect: Estimate, direction: str) -> str:
    """*agrees* / *disagrees* / *inconclusive*: whether the interval of A − B lies wholly on the side
    ``direction`` (``"greater"``: A > B, ``"less"``: A < B) of 0, wholly on the other, or contains 0."""
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}; use one of {list(DIRECTIONS)}")
    if math.isnan(effect.low) or math.isnan(effect.high):
        return "inconclusive"
    sign = 1 if direction == "greater" else -1
    low, high = sorted((sign * effect.low, sign * effect.high))
    return "agrees" if low > 0 else "disagrees" if high < 0 else "inconclusive"


def paired(a: Part | Sequence[Part], b: Part | Sequence[Part], direction: str, *,
           confidence: float = CONFIDENCE, replicates: int = REPLICATES, seed: int = 0) -> Paired:
    """Compare variant A with variant B on the same images and seeds (part by part: the same sets, the
    same images in the same order, seed ``k`` of A with seed ``k`` of B): the difference θ_A − θ_B with
    its interval, each side's estimate (from the same draws), and the :func:`verdict` for the claim
    "A ``direction`` B"."""
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}; use one of {list(DIRECTIONS)}")
    _check_confidence(confidence)
    a, b = _parts(a), _parts(b)
    if len(a) != len(b) or any(p.numerator.shape != q.numerator.shape for p, q in zip(a, b)):
        raise ValueError("A and B must have the same parts, seeds and images to be paired")
    if any(p.numerator.shape[0] != 1 for p in a + b):
        raise ValueError("each side of a paired comparison is one variant")
    both = [Part(np.concatenate([p.numerator, q.numerator]), np.concatenate([p.denominator, q.denominator]))
            for p, q in zip(a, b)]
    draws, point = bootstrap(both, replicates=replicates, seed=seed), _point(both)
    effect = _summarise(float(point[0] - point[1]), draws[0] - draws[1], residual_variance(both), confidence, both)
    sides = [_summarise(float(point[v]), draws[v], residual_variance(side), confidence, side)
             for v, side in enumerate((a, b))]
    return Paired(effect, *sides, direction, verdict(effect, direction))


__all__ = ["CONFIDENCE", "DIRECTIONS", "Estimate", "Paired", "Part", "REPLICATES", "VERDICTS", "bootstrap",
           "estimate", "paired", "residual_variance", "verdict"]
