"""Small statistics printed beside every accuracy: the majority baseline and the binomial standard error.

An accuracy means little without what a constant guess scores (a superclass level whose largest class
holds 40 % of the images is not "read" at 45 %) and without its sampling error on ``n`` fixed images.
The transfer rate of superclass adversaries to the leaf classifier lives with the attacks
(:func:`hrvlm.attacks.transfer_summary`).
"""
from __future__ import annotations

import math

import numpy as np


def majority_baseline(labels) -> float:
    """Accuracy of always predicting the most frequent label: ``max_c #{y = c} / n``.

    ``labels``: integer labels (array, list or tensor) of the evaluated images; NaN when empty.
    """
    y = np.asarray(labels, dtype=np.int64).ravel()
    if y.size == 0:
        return math.nan
    if y.min() < 0:
        raise ValueError(f"labels must be non-negative class indices, got {int(y.min())}")
    return float(np.bincount(y).max() / y.size)


def binomial_se(accuracy: float, n: int) -> float:
    """Standard error of an accuracy measured on ``n`` independent images: ``sqrt(p (1 - p) / n)``.

    NaN for ``n = 0``; ``p`` must lie in [0, 1] (it is a fraction, not a percentage).
    """
    if not 0.0 <= accuracy <= 1.0:
        raise ValueError(f"accuracy must be a fraction in [0, 1], got {accuracy}")
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    return math.sqrt(accuracy * (1.0 - accuracy) / n) if n else math.nan


def wilson_interval(accuracy: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of an accuracy ``p`` on ``n`` images (``z = 1.96``: 95 %):

    ``(p + z²/2n ± z·sqrt(p(1 − p)/n + z²/4n²)) / (1 + z²/n)``.  Unlike ``p ± z·SE`` it stays inside
    [0, 1] and does not shrink to a point at 0 or 1 correct; ``(nan, nan)`` for ``n = 0``.
    """
    binomial_se(accuracy, n)  # the same checks of p and n
    if not n:
        return math.nan, math.nan
    centre = accuracy + z * z / (2 * n)
    half = z * math.sqrt(accuracy * (1 - accuracy) / n + z * z / (4 * n * n))
    return max(0.0, (centre - half) / (1 + z * z / n)), min(1.0, (centre + half) / (1 + z * z / n))
