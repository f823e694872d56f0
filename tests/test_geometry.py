"""Identities, numerics and geoopt agreement for hrvlm.geometry.poincare (float32 and float64, several curvatures)."""
import math

import pytest
import torch

from hrvlm.geometry import poincare as G

DTYPES = [torch.float32, torch.float64]
CURVATURES = [0.5, 1.0, 2.0]
# Per-dtype tolerances, as in geoopt's own tests.
TOL = {torch.float32: dict(atol=2e-5, rtol=2e-4), torch.float64: dict(atol=1e-10, rtol=1e-9)}


def tangent(*shape, dtype, scale=1.0, seed=0):
    """Tangent vectors with norms log-spread over [0.01, 2]·scale (inside float32's resolvable radius)."""
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(*shape, generator=gen, dtype=torch.float64)
    radius = torch.exp(torch.empty(*shape[:-1], 1, dtype=torch.float64).uniform_(math.log(0.01), math.log(2), generator=gen))
    return (v / v.norm(dim=-1, keepdim=True) * radius * scale).to(dtype)


def points(*shape, dtype, c=1.0, seed=0):
    return G.expmap0(tangent(*shape, dtype=dtype, seed=seed), c)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c", CURVATURES)
def test_exp_log_inverse(dtype, c):
    v = tangent(64, 5, dtype=dtype) / math.sqrt(c)
    torch.testing.assert_close(G.logmap0(G.expmap0(v, c), c), v, **TOL[dtype])
    y = points(64, 5, dtype=dtype, c=c, seed=1)
    torch.testing.assert_close(G.expmap0(G.logmap0(y, c), c), y, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c", CURVATURES)
def test_distance_axioms(dtype, c):
    x, y, z = (points(200, 3, dtype=dtype, c=c, seed=s) for s in (0, 1, 2))
    assert torch.all(G.dist(x, x, c) == 0)
    torch.testing.assert_close(G.dist(x, y, c), G.dist(y, x, c), **TOL[dtype])
    assert torch.all(G.dist(x, y, c) > 0)
    slack = 1e-4 if dtype == torch.float32 else 1e-10
    assert torch.all(G.dist(x, z, c) <= G.dist(x, y, c) + G.dist(y, z, c) + slack)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c", CURVATURES)
def test_dist_equals_mobius_form(dtype, c):
    x, y = points(100, 4, dtype=dtype, c=c), points(100, 4, dtype=dtype, c=c, seed=1)
    mobius = 2 / math.sqrt(c) * torch.atanh(math.sqrt(c) * G.mobius_add(-x, y, c).norm(dim=-1))
    torch.testing.assert_close(G.dist(x, y, c), mobius, atol=TOL[dtype]["atol"] * 10, rtol=TOL[dtype]["rtol"] * 10)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c", CURVATURES)
def test_distance_from_origin_closed_form(dtype, c):
    v = tangent(100, 6, dtype=dtype) / math.sqrt(c)
    y = G.expmap0(v, c)
    closed = 2 * v.norm(dim=-1)
    torch.testing.assert_close(G.dist(torch.zeros_like(y), y, c), closed, **TOL[dtype])
    torch.testing.assert_close(G.dist0(y, c), closed, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_pairwise_matches_broadcast_dist(dtype):
    c = 1.5
    x, y = points(3, 7, 4, dtype=dtype, c=c), points(5, 4, dtype=dtype, c=c, seed=1)
    pair = G.pairwise_dist(x, y, c)
    assert pair.shape == (3, 7, 5)
    # The expanded ||x-y||^2 costs ~sqrt(eps) absolute precision in float32.
    atol = 2e-3 if dtype == torch.float32 else 1e-7
    torch.testing.assert_close(pair, G.dist(x[..., :, None, :], y, c), atol=atol, rtol=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_mobius_identities(dtype):
    c = 0.7
    x, y = points(50, 3, dtype=dtype, c=c), points(50, 3, dtype=dtype, c=c, seed=1)
    torch.testing.assert_close(G.mobius_add(x, torch.zeros_like(x), c), x, **TOL[dtype])
    torch.testing.assert_close(G.mobius_add(torch.zeros_like(x), x, c), x, **TOL[dtype])
    assert G.mobius_add(-x, x, c).abs().max() < TOL[dtype]["atol"]
    # Left cancellation: (-x) ⊕ (x ⊕ y) = y.
    torch.testing.assert_close(G.mobius_add(-x, G.mobius_add(x, y, c), c), y, atol=5e-5 if dtype == torch.float32 else 1e-10, rtol=5e-4)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c", CURVATURES)
def test_geodesic(dtype, c):
    x, y = points(20, 2, dtype=dtype, c=c), points(20, 2, dtype=dtype, c=c, seed=1)
    torch.testing.assert_close(G.geodesic(x, y, 0.0, c), x, **TOL[dtype])
    torch.testing.assert_close(G.geodesic(x, y, 1.0, c), y, atol=TOL[dtype]["atol"] * 10, rtol=TOL[dtype]["rtol"] * 10)
    t = torch.linspace(0, 1, 7, dtype=dtype)
    path = G.geodesic(x[None], y[None], t[:, None], c)  # [7, 20, 2]
    torch.testing.assert_close(G.dist(x, path, c), t[:, None] * G.dist(x, y, c), atol=1e-4 if dtype == torch.float32 else 1e-9, rtol=1e-4)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c", CURVATURES)
def test_klein_round_trip(dtype, c):
    x = points(40, 3, dtype=dtype, c=c)
    k = G.poincare_to_klein(x, c)
    assert torch.all(c * k.pow(2).sum(-1) < 1)
    torch.testing.assert_close(G.klein_to_poincare(k, c), x, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c", CURVATURES)
def test_einstein_midpoint_identities(dtype, c):
    x = points(8, 1, 4, dtype=dtype, c=c)  # 8 sets of one point
    torch.testing.assert_close(G.einstein_midpoint(x, c=c), x[:, 0], **TOL[dtype])
    pairs = torch.cat([x, -x], dim=1)  # 8 sets {x, -x}
    assert G.einstein_midpoint(pairs, c=c).abs().max() < TOL[dtype]["atol"]
    # Symmetric sets of any size: the four rotations of a point by 90° in a plane.
    p = x[:, 0, :2]
    square = torch.stack([p, p.flip(-1) * torch.tensor([-1.0, 1.0], dtype=dtype), -p, p.flip(-1) * torch.tensor([1.0, -1.0], dtype=dtype)], dim=1)
    assert G.einstein_midpoint(square, c=c).abs().max() < TOL[dtype]["atol"]


@pytest.mark.parametrize("dtype", DTYPES)
def test_einstein_midpoint_weights_dim_and_depth(dtype):
    c = 1.0
    x = points(6, 5, 3, dtype=dtype, c=c)
    weights = torch.rand(6, 5, dtype=dtype, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        G.einstein_midpoint(x.transpose(0, 1), weights.T, c=c, dim=0), G.einstein_midpoint(x, weights, c=c), **TOL[dtype]
    )
    # A zero weight drops its point.
    zero_last = torch.ones(6, 5, dtype=dtype)
    zero_last[:, -1] = 0
    torch.testing.assert_close(G.einstein_midpoint(x, zero_last, c=c), G.einstein_midpoint(x[:, :-1], c=c), **TOL[dtype])
    # HypAvg sits nearer the root than the farthest of its members.
    assert torch.all(G.einstein_midpoint(x, c=c).norm(dim=-1) <= x.norm(dim=-1).max(dim=-1).values + 1e-6)
    with pytest.raises(ValueError):
        G.einstein_midpoint(x, dim=-1)


@pytest.mark.parametrize("dtype", DTYPES)
def test_grouped_einstein_midpoint(dtype):
    c = 2.0
    x = points(30, 4, dtype=dtype, c=c)
    groups = torch.randint(0, 5, (30,), generator=torch.Generator().manual_seed(3))
    groups[groups == 2] = 3  # group 2 left empty
    weights = torch.rand(30, dtype=dtype, generator=torch.Generator().manual_seed(4)) + 0.1
    mids, present = G.grouped_einstein_midpoint(x, groups, 6, c=c, weights=weights)
    assert mids.shape == (6, 4) and present.tolist() == [g in groups.tolist() for g in range(6)]
    assert torch.all(mids[~present] == 0)
    for g in torch.nonzero(present).flatten().tolist():
        member = groups == g
        torch.testing.assert_close(mids[g], G.einstein_midpoint(x[member], weights[member], c=c), **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c", CURVATURES)
def test_project_strictly_inside(dtype, c):
    radius = 1 / math.sqrt(c)
    direction = torch.nn.functional.normalize(torch.randn(50, 3, dtype=dtype), dim=-1)
    far = direction * torch.logspace(-3, 6, 50, dtype=dtype)[:, None] * radius
    projected = G.project(far, c)
    assert torch.all(projected.norm(dim=-1) < radius)
    assert torch.all(projected.norm(dim=-1) <= (1 - G.boundary_eps(dtype)) * radius * (1 + 1e-6))
    inside = far.norm(dim=-1) < (1 - G.boundary_eps(dtype)) * radius
    assert torch.equal(projected[inside], far[inside])
    # expmap0 of any tangent vector lands strictly inside too.
    assert torch.all(G.expmap0(far * 1e3, c).norm(dim=-1) < radius)


def test_boundary_eps_per_dtype():
    assert G.boundary_eps(torch.float32) == 4e-3 and G.boundary_eps(torch.float64) == 1e-5
    assert G.boundary_eps(torch.bfloat16) == 4e-3


def test_gradcheck_float64():
    gen = torch.Generator().manual_seed(0)

    def leaf(*shape, scale=0.3):
        return (torch.randn(*shape, dtype=torch.float64, generator=gen) * scale).requires_grad_()

    x, y, v = leaf(4, 3), leaf(4, 3), leaf(4, 3, scale=1.0)
    c = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
    checks = {
        "mobius_add": (lambda x, y, c: G.mobius_add(x, y, c), (x, y, c)),
        "expmap0": (lambda v, c: G.expmap0(v, c), (v, c)),
        "logmap0": (lambda x, c: G.logmap0(x, c), (x, c)),
        "dist": (lambda x, y, c: G.dist(x, y, c), (x, y, c)),
        "dist0": (lambda x, c: G.dist0(x, c), (x, c)),
        "pairwise_dist": (lambda x, y, c: G.pairwise_dist(x, y, c), (x, y, c)),
        "project": (lambda x: G.project(x * 5, 1.0), (x,)),
        "geodesic": (lambda x, y, c: G.geodesic(x, y, 0.3, c), (x, y, c)),
        "klein": (lambda x, c: G.klein_to_poincare(G.poincare_to_klein(x, c), c), (x, c)),
        "einstein_midpoint": (lambda x, w, c: G.einstein_midpoint(x, w, c), (x, leaf(4).abs().detach().requires_grad_(), c)),
        "grouped": (lambda x, c: G.grouped_einstein_midpoint(x, torch.tensor([0, 2, 0, 2]), 3, c)[0], (x, c)),
        "depth": (lambda d, c: G.depth_of_norm(G.norm_for_depth(d, c, step=0.7), c, step=0.7), (leaf(5).abs().detach().requires_grad_(), c)),
    }
    for name, (fn, inputs) in checks.items():
        assert torch.autograd.gradcheck(fn, inputs), name


@pytest.mark.parametrize("dtype", DTYPES)
def test_finite_gradients_at_extremes(dtype):
    """Pre-exp norms from 1e-8 to 1e4 plus the exact zero, through every downstream operation."""
    c = 1.0
    norms = torch.cat([torch.zeros(1), torch.logspace(-8, 4, 25)]).to(dtype)
    direction = torch.nn.functional.normalize(torch.randn(26, 4, dtype=dtype, generator=torch.Generator().manual_seed(0)), dim=-1)
    v = (direction * norms[:, None]).requires_grad_()
    y = G.expmap0(v, c)
    protos = G.expmap0(torch.randn(3, 4, dtype=dtype), c)
    loss = (
        G.pairwise_dist(y, protos, c).sum()
        + G.dist(y, y.flip(0), c).sum()
        + G.dist(y, y.detach(), c).sum()  # d(x, x): non-differentiable point, must not give NaN
        + G.dist0(y, c).sum()
        + G.logmap0(y, c).sum()
        + G.einstein_midpoint(y, c=c).sum()
        + G.grouped_einstein_midpoint(y, torch.arange(26) % 3, 4, c)[0].sum()
        + G.depth_of_norm(y.norm(dim=-1), c).sum()
    )
    (grad,) = torch.autograd.grad(loss, v)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_finite_at_and_past_boundary(dtype):
    """Points exactly on, and numerically past, the boundary (as an unprojected optimizer step leaves them)."""
    c = 1.0
    direction = torch.nn.functional.normalize(torch.randn(5, 3, dtype=dtype, generator=torch.Generator().manual_seed(1)), dim=-1)
    radii = torch.tensor([1 - 1e-3, 1 - 1e-6, 1.0, 1 + 1e-6, 2.0], dtype=dtype)
    x = (direction * radii[:, None]).requires_grad_()
    out = G.dist(x, x.flip(0), c).sum() + G.logmap0(x, c).sum() + G.dist0(x, c).sum() + G.einstein_midpoint(x, c=c).sum()
    (grad,) = torch.autograd.grad(out, x)
    assert torch.isfinite(out) and torch.isfinite(grad).all()


@pytest.mark.parametrize("half", [torch.bfloat16, torch.float16])
def test_autocast_computes_in_float32(half):
    x = points(8, 4, dtype=torch.float32).to(half)
    protos = points(3, 4, dtype=torch.float32, seed=1).to(half)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outs = [
            G.expmap0(x.float().to(half) * 10),
            G.logmap0(x),
            G.pairwise_dist(x, protos),
            G.dist(x, protos[:1]),
            G.einstein_midpoint(x),
            G.project(x),
        ]
    for out in outs:
        assert out.dtype == torch.float32 and torch.isfinite(out).all()
    # float64 stays float64 under autocast.
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert G.pairwise_dist(x.double(), protos.double()).dtype == torch.float64


def test_learnable_curvature_gets_a_gradient():
    c = torch.tensor(1.0, requires_grad=True)
    y = G.expmap0(torch.randn(10, 3), c)
    G.pairwise_dist(y, y[:3], c).sum().backward()
    assert c.grad is not None and torch.isfinite(c.grad)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c", CURVATURES)
def test_norm_depth_mapping(dtype, c):
    depth = torch.arange(0, 6, dtype=dtype)
    norm = G.norm_for_depth(depth, c, step=0.8)
    assert norm[0] == 0 and torch.all(norm.diff() > 0) and torch.all(norm < 1 / math.sqrt(c))
    torch.testing.assert_close(G.depth_of_norm(norm, c, step=0.8), depth, **TOL[dtype])
    # Equal hyperbolic steps: each level is 0.8 farther from the origin.
    ray = torch.zeros(6, 2, dtype=dtype)
    ray[:, 0] = norm
    torch.testing.assert_close(G.dist0(ray, c), 0.8 * depth, **TOL[dtype])
    assert G.norm_for_depth(3).dtype == torch.float64


# --------------------------------------------------------------- agreement with geoopt (test-only dependency)
@pytest.mark.parametrize("c", CURVATURES)
def test_agrees_with_geoopt(c):
    """The validation chapter's rows (hrvlm.book.validation.geometry_rows): every function in float32 and
    float64 against geoopt in float64, the projection against geoopt in its dtype, the boundary."""
    pytest.importorskip("geoopt.manifolds.stereographic.math")
    from hrvlm.book.validation import geometry_rows, require_pass

    rows = geometry_rows(c=c, n=64, dim=5)
    require_pass(rows)
    assert not any(r.skipped for r in rows) and len(rows) == 20
