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
