"""Theorem 1 quantities: closed forms vs brute force, monotonicity, saturation, the Euclidean cap, the reconstruction's table."""
import math

import numpy as np
import pytest
import torch

from hrvlm.geometry import poincare as G
from hrvlm.geometry import theory as T

# our reconstruction of Theorem 1's table: r = λ = 1, rival 90° from the true prototype, φ rotated by β_c away from the rival.
PUBLISHED = {
    0.5: (1.681, 1.622, 1.431, 0.250, 0.500),
    0.9: (5.201, 4.479, 2.947, 0.810, 1.620),
    0.99: (9.894, 5.629, 3.101, 0.980, 1.960),
    0.999: (14.508, 5.655, 3.103, 0.998, 1.996),
    0.9999: (19.114, 5.655, 3.103, 1.000, 2.000),
    "limit": (math.inf, 5.655, 3.103, None, 2.000),
}


def unit(angle):
    return torch.stack([torch.cos(angle), torch.sin(angle)], dim=-1)


def brute_force_margin(eta, beta_true, beta_rival, c, scale, hyperbolic=True):
    """Explicit 2-D points (true prototype at angle 0, φ at −β_c, rival at β_k − β_c), softmax log-probs numerically."""
    eta, beta_true, beta_rival = (torch.as_tensor(v, dtype=torch.float64) for v in (eta, beta_true, beta_rival))
    phi = eta[..., None] * unit(-beta_true)
    protos = eta[..., None, None] * torch.stack([unit(torch.zeros_like(beta_true)), unit(beta_rival - beta_true)], dim=-2)
    if hyperbolic:
        logits = -scale * G.dist(phi[..., None, :], protos, c)
    else:
        logits = scale * (phi[..., None, :] * protos).sum(-1)
    logp = torch.log_softmax(logits, dim=-1)
    return (logp[..., 0] - logp[..., 1]).numpy()


@pytest.mark.parametrize("c", [0.5, 1.0, 3.0])
@pytest.mark.parametrize("scale", [1.0, 10.0])
def test_hyperbolic_closed_form_matches_brute_force(c, scale):
    rng = np.random.default_rng(0)
    eta = rng.uniform(0.01, 0.99, 200) / math.sqrt(c)
    beta_true = rng.uniform(0, math.pi / 2, 200)
    beta_rival = rng.uniform(0, math.pi, 200)
    closed = T.hyperbolic_log_margin(eta, beta_true, beta_rival, c, scale)
    np.testing.assert_allclose(closed, brute_force_margin(eta, beta_true, beta_rival, c, scale), atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("scale", [1.0, 100.0])
def test_euclidean_closed_form_matches_brute_force(scale):
    rng = np.random.default_rng(1)
    eta, beta_true, beta_rival = rng.uniform(0.01, 3, 200), rng.uniform(0, math.pi, 200), rng.uniform(0, math.pi, 200)
    closed = T.euclidean_log_margin(eta, beta_true, beta_rival, scale)
    brute = brute_force_margin(eta, beta_true, beta_rival, 1.0, scale, hyperbolic=False)
    np.testing.assert_allclose(closed, brute, atol=1e-9 * scale, rtol=1e-9)


def test_empirical_margin_matches_closed_form_in_high_dimension():
    """Random orthonormal frames in 16-D with prescribed angles; extra far-away classes do not change the margin."""
    gen = torch.Generator().manual_seed(0)
    n, c, scale = 50, 1.3, 5.0
    eta = torch.rand(n, dtype=torch.float64, generator=gen) * 0.95 / math.sqrt(c)
    beta_true = torch.rand(n, dtype=torch.float64, generator=gen) * 0.5
    beta_rival = beta_true + 0.2 + torch.rand(n, dtype=torch.float64, generator=gen)
    frame, _ = torch.linalg.qr(torch.randn(n, 16, 3, dtype=torch.float64, generator=gen))
    e0, e1 = frame[..., 0], frame[..., 1]
    phi = eta[:, None] * (torch.cos(beta_true)[:, None] * e0 - torch.sin(beta_true)[:, None] * e1)
    rival_angle = (beta_rival - beta_true)[:, None]
    psi_true, psi_rival = eta[:, None] * e0, eta[:, None] * (torch.cos(rival_angle) * e0 + torch.sin(rival_angle) * e1)
    psi_far = eta[:, None] * -e0  # at angle π - β_c > β_k: never the strongest rival
    measured = torch.stack(
        [
            T.empirical_margin(phi[i : i + 1], torch.stack([psi_far[i], psi_true[i], psi_rival[i]]), torch.tensor([1]), c, scale)[0]
            for i in range(n)
        ]
    )
    expected = T.hyperbolic_log_margin(eta.numpy(), beta_true.numpy(), beta_rival.numpy(), c, scale)
    np.testing.assert_allclose(measured.numpy(), expected, atol=1e-6, rtol=1e-6)


def test_logit_margin_is_the_true_logit_minus_the_best_rival():
    logits = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 1.0]])
    assert T.logit_margin(logits, torch.tensor([0, 2])).tolist() == [1.0, -4.0]
    batched = T.logit_margin(logits.double().expand(4, 2, 3), torch.tensor([0, 2]).expand(4, 2))  # any leading dims
    assert batched.dtype == torch.float64 and batched.tolist() == [[1.0, -4.0]] * 4


def test_empirical_margin_sign_and_euclidean_variant():
    protos = G.expmap0(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]))
    images = protos * 0.9
    labels = torch.tensor([0, 1, 2])
    assert torch.all(T.empirical_margin(images, protos, labels) > 0)
    assert torch.all(T.empirical_margin(images, protos, labels.roll(1)) < 0)
    assert T.empirical_margin(images, protos, labels).dtype == torch.float64
    cos = T.empirical_margin_euclidean(images * 7, protos, labels, scale=2.0, cosine=True)
    torch.testing.assert_close(cos, torch.full((3,), 2.0, dtype=torch.float64))  # cos 0 − cos 90°, times λ
    inner = T.empirical_margin_euclidean(images, protos, labels)
    torch.testing.assert_close(inner, (images * protos).sum(-1).double())


@pytest.mark.parametrize("c", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("rival_deg", [10.0, 90.0, 180.0])
def test_zero_angle_margin_increases_and_is_unbounded(c, rival_deg):
    gap = np.logspace(0, -12, 400)  # 1 - sqrt(c)·η
    eta = (1 - gap) / math.sqrt(c)
    m = T.hyperbolic_log_margin(eta, 0.0, np.deg2rad(rival_deg), c, scale=2.0)
    assert np.all(np.diff(m) > 0) and m[0] == 0
    growth = T.zero_angle_growth(eta, np.deg2rad(rival_deg), c, scale=2.0)
    # The asymptote's error shrinks like (1 - cη²)²; the margin exceeds any bound.
    assert abs(m[-1] - growth[-1]) < 1e-9 and m[-1] > 25
    error = np.abs(m - growth)[gap < 1e-3]
    assert np.all(np.diff(error) <= 1e-12) and np.all(error[gap[gap < 1e-3] < 1e-5] < 1e-4)


@pytest.mark.parametrize("c", [0.5, 1.0, 2.0])
def test_nonzero_angle_margin_saturates(c):
    rng = np.random.default_rng(2)
    beta_true = rng.uniform(0.01, 1.0, 50)
    beta_rival = beta_true + rng.uniform(0.01, 2.0, 50)
    limit = T.saturation_limit(beta_true, beta_rival, c, scale=3.0)
    near_edge = T.hyperbolic_log_margin((1 - 1e-9) / math.sqrt(c), beta_true, beta_rival, c, scale=3.0)
    np.testing.assert_allclose(near_edge, limit, rtol=1e-6)
    # Bounded: the limit holds for every depth, approached from below when the rival is farther than the class.
    etas = np.linspace(0, 1 - 1e-6, 200)[:, None] / math.sqrt(c)
    assert np.all(T.hyperbolic_log_margin(etas, beta_true, beta_rival, c, scale=3.0) <= limit + 1e-9)
    assert T.saturation_limit(0.0, 1.0) == np.inf


def test_euclidean_margin_never_exceeds_cap():
    rng = np.random.default_rng(3)
    eta, scale = rng.uniform(0, 5, 1000), rng.uniform(0.1, 100, 1000)
    beta_true, beta_rival = rng.uniform(0, math.pi, 1000), rng.uniform(0, math.pi, 1000)
    assert np.all(T.euclidean_log_margin(eta, beta_true, beta_rival, scale) <= T.euclidean_margin_cap(eta, scale) + 1e-12)
    # Also on random embeddings of any angles in 8-D, with inner-product logits and equal norms.
    gen = torch.Generator().manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(500, 8, generator=gen, dtype=torch.float64), dim=-1)
    protos = torch.nn.functional.normalize(torch.randn(6, 8, generator=gen, dtype=torch.float64), dim=-1)
    for eta_i in (0.3, 1.0, 4.0):
        m = T.empirical_margin_euclidean(eta_i * emb, eta_i * protos, torch.randint(0, 6, (500,), generator=gen), scale=7.0)
        assert torch.all(m <= 2 * 7.0 * eta_i**2 + 1e-12)
    # The cap is attained at ψ_k = −ψ_c, φ = ψ_c.
    assert T.euclidean_log_margin(2.0, 0.0, math.pi, 3.0) == pytest.approx(T.euclidean_margin_cap(2.0, 3.0))


def test_margin_table_reproduces_the_reconstruction():
    table = T.margin_table()
    cols = ["hyperbolic β_c=0°", "hyperbolic β_c=5°", "hyperbolic β_c=20°", "Euclidean β_c=0°", "Euclidean cap 2λη²"]
    assert list(table.index) == list(PUBLISHED)
    for eta, row in PUBLISHED.items():
        for col, value in zip(cols, row):
            if value is None:
                continue
            got = table.loc[eta, col]
            assert (got == value) if math.isinf(value) else abs(got - value) <= 1e-3, (eta, col, got, value)


def test_margin_table_other_settings():
    table = T.margin_table(etas=[0.1, 0.5], betas_true_deg=[0, 10], rival_deg=60, c=2.0, scale=4.0, limit=False)
    assert list(table.index) == [0.1, 0.5] and table.shape == (2, 5)
    expected = T.hyperbolic_log_margin(0.5, np.deg2rad(10), np.deg2rad(70), 2.0, 4.0)
    assert table.loc[0.5, "hyperbolic β_c=10°"] == pytest.approx(expected)
    with pytest.raises(ValueError):
        T.hyperbolic_log_margin(1.0, 0.0, 1.0, c=1.0)


@pytest.mark.parametrize("c", [0.5, 1.0, 4.0])
def test_closed_form_check_agrees_to_float64_precision(c):
    etas = np.linspace(0.01, 0.999, 50) / math.sqrt(c)
    table = T.closed_form_check(etas, betas_true_deg=(0, 5, 20), c=c, scale=2.0)
    assert list(table.index) == [0.0, 5.0, 20.0]
    assert (table["configurations"] == 50).all()
    assert (table["max |measured − closed|"] < 1e-7).all()


def test_closed_form_check_detects_a_wrong_closed_form(monkeypatch):
    """The check measures independently: a closed form off by a factor shows up as a large deviation."""
    right = T.hyperbolic_log_margin
    monkeypatch.setattr(T, "hyperbolic_log_margin", lambda *args: 1.01 * right(*args))
    table = T.closed_form_check(np.linspace(0.1, 0.99, 20), betas_true_deg=(5,))
    assert table["max |measured − closed|"].iloc[0] > 1e-3
