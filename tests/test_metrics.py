"""The bench's statistics: majority baseline, binomial standard error."""
import math

import numpy as np
import pytest
import torch

from hrvlm.results.metrics import binomial_se, majority_baseline, wilson_interval


def test_majority_baseline():
    assert majority_baseline([0, 1, 1, 2, 1]) == pytest.approx(0.6)
    assert majority_baseline(torch.tensor([3, 3, 0, 0])) == pytest.approx(0.5)
    assert majority_baseline(np.arange(10) % 4) == pytest.approx(0.3)  # 0,1 appear 3 times out of 10
    assert math.isnan(majority_baseline([]))
    with pytest.raises(ValueError, match="non-negative"):
        majority_baseline([0, -1])


def test_binomial_se_matches_the_formula_and_simulation():
    assert binomial_se(0.5, 100) == pytest.approx(0.05)
    assert binomial_se(0.0, 50) == 0.0 and binomial_se(1.0, 50) == 0.0
    assert math.isnan(binomial_se(0.3, 0))
    rng = np.random.default_rng(0)
    draws = rng.binomial(1000, 0.8, size=20000) / 1000
    assert draws.std() == pytest.approx(binomial_se(0.8, 1000), rel=0.03)
    with pytest.raises(ValueError, match="fraction"):
        binomial_se(80.0, 1000)


def test_wilson_interval_matches_the_formula_and_covers():
    low, high = wilson_interval(0.5, 40)  # by hand: (0.548 ± 0.1622) / 1.0960
    assert (low, high) == (pytest.approx(0.3520, abs=1e-4), pytest.approx(0.6480, abs=1e-4))
    low, high = wilson_interval(0.0, 16)
    assert low == 0.0 and high == pytest.approx(0.1936, abs=1e-4)  # not a point at 0 correct
    assert wilson_interval(1.0, 16)[1] == 1.0 and all(map(math.isnan, wilson_interval(0.3, 0)))
    # ~95 % of simulated accuracies' intervals cover the true p
    rng = np.random.default_rng(0)
    hits = [lo <= 0.2 <= hi for lo, hi in (wilson_interval(k / 60, 60) for k in rng.binomial(60, 0.2, 2000))]
    assert 0.93 <= np.mean(hits) <= 0.97
    with pytest.raises(ValueError, match="fraction"):
        wilson_interval(50.0, 10)
