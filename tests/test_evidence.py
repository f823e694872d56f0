"""hrvlm.results.evidence: the seed × image bootstrap and the paired verdict, on synthetic data with known effects.

Each scenario draws 160 synthetic experiments (3 seeds × 1,000 images, the book's target sizes) from a
population whose true difference is known, and counts verdicts and interval coverage.
"""
from __future__ import annotations

import numpy as np
import pytest

from hrvlm.results import evidence as ev

SEEDS, IMAGES, REPEATS, REPLICATES = 3, 1000, 160, 400
BASE = 0.4  # the weaker variant's mean accuracy


def _population(gain: float, rng: np.random.Generator):
    """Per-image probabilities of being right for A and B: a shared image difficulty (so A and B are
    correlated, as two models on the same images are) and A ahead by ``gain`` on every image."""
    logit = np.log(BASE / (1 - BASE)) + 1.5 * rng.normal(size=IMAGES)
    p_b = 1 / (1 + np.exp(-logit))
    return np.clip(p_b + gain, 0, 1), p_b


def _experiments(gain: float, seed: int):
    """``REPEATS`` paired experiments, each on fresh images; the true effect is the population's."""
    rng = np.random.default_rng(seed)
    big_a, big_b = _population(gain, np.random.default_rng(10_000 + seed))
    true = big_a.mean() - big_b.mean()
    out = []
    for _ in range(REPEATS):
        idx = rng.integers(0, IMAGES, IMAGES)  # the images are a sample of the population
        p_a, p_b = big_a[idx], big_b[idx]
        a, b = rng.random((SEEDS, IMAGES)) < p_a, rng.random((SEEDS, IMAGES)) < p_b
        out.append(ev.paired(ev.Part.of(a), ev.Part.of(b), "greater", replicates=REPLICATES, seed=len(out)))
    return out, true


def _verdicts(results):
    return {v: sum(r.verdict == v for r in results) / len(results) for v in ev.VERDICTS}


@pytest.fixture(scope="module")
def gain():
    return _experiments(0.05, 1)


@pytest.fixture(scope="module")
def null():
    return _experiments(0.0, 2)


def test_a_true_five_point_gain_agrees(gain):
    results, true = gain
    assert true == pytest.approx(0.05, abs=0.01)
    assert _verdicts(results)["agrees"] >= 0.95


def test_no_effect_is_inconclusive(null):
    assert _verdicts(null[0])["inconclusive"] >= 0.90


def test_a_reversed_effect_disagrees():
    results, _ = _experiments(-0.05, 3)
    shares = _verdicts(results)
    assert shares["disagrees"] >= 0.95 and shares["agrees"] == 0


@pytest.mark.parametrize("scenario", ["gain", "null"])
def test_the_interval_covers_the_true_difference_95_percent_of_the_time(scenario, request):
    results, true = request.getfixturevalue(scenario)
    covered = np.mean([r.effect.low <= true <= r.effect.high for r in results])
    # 160 experiments: the binomial sd of a 95 % coverage is 1.7 points
    assert 0.91 <= covered <= 0.99, covered


def test_seed_variation_widens_the_interval():
    rng = np.random.default_rng(0)
    images = rng.random(IMAGES) < 0.5
    same = ev.Part.of(np.repeat(images[None], SEEDS, 0))
    shifted = ev.Part.of(np.stack([rng.random(IMAGES) < p for p in (0.3, 0.5, 0.7)]))
    narrow, wide = ev.estimate(same, replicates=REPLICATES), ev.estimate(shifted, replicates=REPLICATES)
    assert wide.high - wide.low > 2 * (narrow.high - narrow.low)
    assert narrow.low < narrow.value < narrow.high


def test_one_seed_is_the_image_bootstrap_near_the_binomial_interval():
    from hrvlm.results.metrics import binomial_se

    correct = np.random.default_rng(4).random((1, IMAGES)) < 0.3
    est = ev.estimate(ev.Part.of(correct), replicates=2000)
    half = 1.96 * binomial_se(est.value, IMAGES)
    assert (est.high - est.low) / 2 == pytest.approx(half, rel=0.1)
    assert est.seeds == 1 and est.images == IMAGES


def test_deterministic_and_seeded():
    rng = np.random.default_rng(5)
    a, b = rng.random((2, SEEDS, 300)) < 0.5
    one = ev.paired(ev.Part.of(a), ev.Part.of(b), "less", replicates=300)
    assert one == ev.paired(ev.Part.of(a), ev.Part.of(b), "less", replicates=300)
    assert one != ev.paired(ev.Part.of(a), ev.Part.of(b), "less", replicates=300, seed=1)


def test_a_ratio_pairs_numerators_and_denominators():
    """A transfer-like rate Σx / Σw: the point is the ratio of sums, per seed, averaged."""
    x = np.array([[1, 0, 1, 0], [1, 1, 0, 0]])
    w = np.array([[1, 1, 1, 0], [1, 1, 1, 1]])
    est = ev.estimate(ev.Part.of(x, w), replicates=200)
    assert est.value == pytest.approx((2 / 3 + 2 / 4) / 2)


def test_parts_average_with_equal_weight():
    small, big = np.ones((1, 10)), np.zeros((1, 1000))
    assert ev.estimate([ev.Part.of(small), ev.Part.of(big)], replicates=100).value == pytest.approx(0.5)


def test_verdict_reads_the_interval():
    def effect(low, high):
        return ev.Estimate(value=(low + high) / 2, low=low, high=high, seeds=1, images=1, replicates=1)
    assert ev.verdict(effect(0.01, 0.05), "greater") == "agrees"
    assert ev.verdict(effect(0.01, 0.05), "less") == "disagrees"
    assert ev.verdict(effect(-0.01, 0.05), "greater") == "inconclusive"
    assert ev.verdict(effect(float("nan"), float("nan")), "less") == "inconclusive"
    with pytest.raises(ValueError, match="unknown direction 'up'"):
        ev.verdict(effect(0, 1), "up")


def test_unpairable_inputs_are_refused():
    with pytest.raises(ValueError, match="same parts, seeds and images"):
        ev.paired(ev.Part.of(np.ones((2, 5))), ev.Part.of(np.ones((2, 6))), "greater")
    with pytest.raises(ValueError, match="non-empty"):
        ev.Part.of(np.ones((0, 5)))


def test_the_same_outcomes_give_the_same_interval_in_another_process():
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = ("import numpy as np; from hrvlm.results import evidence as ev; rng = np.random.default_rng(7); "
            "a, b = rng.random((2, 3, 200)) < 0.5; e = ev.paired(ev.Part.of(a), ev.Part.of(b), 'greater', "
            "replicates=300).effect; print(repr((e.value, e.low, e.high)))")
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(root)}).stdout
    rng = np.random.default_rng(7)
    a, b = rng.random((2, 3, 200)) < 0.5
    here = ev.paired(ev.Part.of(a), ev.Part.of(b), "greater", replicates=300).effect
    assert out.strip() == repr((here.value, here.low, here.high))
