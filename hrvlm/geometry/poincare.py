"""Poincaré-ball geometry with curvature −c (c > 0): small pure functions on tensors.

The ball is :math:`\\mathbb{D}^d_c = \\{x : c\\|x\\|^2 < 1\\}`; its radius is :math:`1/\\sqrt c`.
Every function takes the curvature magnitude ``c`` (a float or a 0-d tensor, possibly learnable) and
works on any batch shape, with the vector dimension last.

Precision.  Every function computes in float32, or in float64 when any tensor input is float64, and
does so with autocast switched off: inside a bf16/fp16 autocast region, half-precision inputs are
upcast and the result comes back in float32.  Half precision cannot resolve the gap ``1 - c‖x‖²``
near the boundary (bf16's eps is 8e-3), which is why nothing here runs in it.

Numerical guards, shared by all functions (each docstring names the ones it uses):

* ``_TINY = 1e-15`` floors every norm used as a divisor and every other denominator, so that 0 and
  its gradient are finite (the norm is the square root of ``clamp_min(‖x‖², 1e-30)``, whose gradient
  at 0 is zero instead of ``0/0``); a distance is instead masked to exactly 0 where ``x = y``;
* the gap to the boundary ``1 - c‖x‖²`` is floored at ``finfo(dtype).eps``: below it the value is
  rounding noise, and points numerically on or past the boundary get large, finite results;
* the ``artanh`` argument is kept at most ``1 - finfo(dtype).eps`` (artanh then saturates at about
  8.3 in float32 and 18.4 in float64 instead of becoming infinite);
* :func:`project` keeps points at radius ``(1 - eps)/√c`` or less, with geoopt's dtype-aware
  ``eps`` (4e-3 for float32, 1e-5 for float64).  :func:`expmap0` applies the same bound by default,
  so any tangent vector, however long, lands strictly inside the ball.
"""
from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

_TINY = 1e-15
# geoopt's boundary margins: (1 - eps)/sqrt(c) is the largest radius a projected point can have.
BOUNDARY_EPS = {torch.float32: 4e-3, torch.float64: 1e-5}


def _compute_dtype(tensors) -> torch.dtype:
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _full_precision(fn):
    """Run ``fn`` with autocast off and its floating tensor arguments in float32 (float64 if any is)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        floats = [a for a in (*args, *kwargs.values()) if isinstance(a, Tensor) and a.is_floating_point()]
        if not floats:
            return fn(*args, **kwargs)
        dtype = _compute_dtype(floats)

        def up(a):
            return a.to(dtype) if isinstance(a, Tensor) and a.is_floating_point() else a

        with torch.autocast(device_type=floats[0].device.type, enabled=False):
            return fn(*map(up, args), **{k: up(v) for k, v in kwargs.items()})

    return wrapper


def _curv(c, ref: Tensor) -> Tensor:
    """Curvature magnitude as a tensor of ``ref``'s dtype and device (keeps the graph of a learnable c)."""
    return torch.as_tensor(c, dtype=ref.dtype, device=ref.device)


def _sqnorm(x: Tensor) -> Tensor:
    return x.pow(2).sum(dim=-1, keepdim=True)


def _norm(x: Tensor) -> Tensor:
    # sqrt after a clamp: finite value and zero (not NaN) gradient at x = 0.
    return _sqnorm(x).clamp_min(_TINY**2).sqrt()


def _gap(x2: Tensor, c: Tensor) -> Tensor:
    """1 - c‖x‖², floored at the dtype's eps: below it the value is rounding noise, and a smaller floor
    lets products of two gaps overflow float32 in the backward pass."""
    return (1 - c * x2).clamp_min(torch.finfo(x2.dtype).eps)


def _safe_sqrt(s: Tensor) -> Tensor:
    """√s that is exactly 0, with zero (not infinite) gradient, where s ≤ 0."""
    positive = s > 0
    return torch.where(positive, torch.where(positive, s, 1).sqrt(), 0)


def _artanh(x: Tensor) -> Tensor:
    return torch.atanh(x.clamp(max=1 - torch.finfo(x.dtype).eps))


def boundary_eps(dtype: torch.dtype) -> float:
    """Projection margin for a dtype: 4e-3 for float32 (and half types, computed in float32), 1e-5 for float64."""
    return BOUNDARY_EPS.get(dtype, BOUNDARY_EPS[torch.float32])


@_full_precision
def mobius_add(x: Tensor, y: Tensor, c: float | Tensor = 1.0) -> Tensor:
    """Möbius addition :math:`x \\oplus_c y` (Ganea et al., 2018).

    .. math::
        x \\oplus_c y = \\frac{(1 + 2c\\langle x,y\\rangle + c\\|y\\|^2)\\,x + (1 - c\\|x\\|^2)\\,y}
                              {1 + 2c\\langle x,y\\rangle + c^2\\|x\\|^2\\|y\\|^2}

    Guard: the denominator, which is at least :math:`(1 - c\\|x\\|\\|y\\|)^2 > 0` inside the ball,
    is floored at 1e-15.
    """
    c = _curv(c, x)
    xy = (x * y).sum(dim=-1, keepdim=True)
    x2, y2 = _sqnorm(x), _sqnorm(y)
    num = (1 + 2 * c * xy + c * y2) * x + (1 - c * x2) * y
    den = 1 + 2 * c * xy + c.pow(2) * x2 * y2
    return num / den.clamp_min(_TINY)


@_full_precision
def expmap0(v: Tensor, c: float | Tensor = 1.0, project: bool = True) -> Tensor:
    """Exponential map at the origin: tangent vector → point of the ball.

    .. math:: \\exp_0^c(v) = \\tanh(\\sqrt c\\,\\|v\\|)\\,\\frac{v}{\\sqrt c\\,\\|v\\|}

    Guards: ``‖v‖`` floored at 1e-15 (so ``expmap0(0) = 0`` with identity Jacobian); the tanh
    argument is capped at ``artanh(1 - eps)`` with the dtype's :func:`boundary_eps` when ``project``
    (the default), else at 15.  With ``project`` the result has radius ≤ ``(1 - eps)/√c`` and the
    gradient is finite for every ``‖v‖``; beyond the cap only the direction of ``v`` still moves the point.
    """
    sqrt_c = _curv(c, v).sqrt()
    norm = _norm(v)
    cap = math.atanh(1 - boundary_eps(v.dtype)) if project else 15.0
    scaled = (sqrt_c * norm).clamp(max=cap)
    return torch.tanh(scaled) * v / (sqrt_c * norm)


@_full_precision
def logmap0(y: Tensor, c: float | Tensor = 1.0) -> Tensor:
    """Logarithmic map at the origin, the inverse of :func:`expmap0`.

    .. math:: \\log_0^c(y) = \\operatorname{artanh}(\\sqrt c\\,\\|y\\|)\\,\\frac{y}{\\sqrt c\\,\\|y\\|}

    Guards: ``‖y‖`` floored at 1e-15; the artanh argument capped at ``1 - finfo.eps``, so points on
    or past the boundary map to a long but finite tangent vector.
    """
    sqrt_c = _curv(c, y).sqrt()
    norm = _norm(y)
    return _artanh(sqrt_c * norm) * y / (sqrt_c * norm)


@_full_precision
def dist0(x: Tensor, c: float | Tensor = 1.0) -> Tensor:
    """Distance from the origin, shape ``x.shape[:-1]``.

    .. math:: d_c(0, x) = \\tfrac{2}{\\sqrt c}\\operatorname{artanh}(\\sqrt c\\,\\|x\\|)

    For ``x = expmap0(v)`` this is ``2‖v‖``.  Guard: artanh argument capped at ``1 - finfo.eps``.
    """
    sqrt_c = _curv(c, x).sqrt()
    return (2 / sqrt_c * _artanh(sqrt_c * _norm(x))).squeeze(-1)


def _dist_from_parts(sq_diff: Tensor, x2: Tensor, y2: Tensor, c: Tensor) -> Tensor:
    """(2/√c)·asinh(√c‖x−y‖ / √((1−c‖x‖²)(1−c‖y‖²))) from its squared-norm ingredients."""
    sqrt_c = c.sqrt()
    den = _gap(x2, c) * _gap(y2, c)
    ratio = _safe_sqrt(sq_diff / den)
    return 2 / sqrt_c * torch.asinh(sqrt_c * ratio)


@_full_precision
def dist(x: Tensor, y: Tensor, c: float | Tensor = 1.0) -> Tensor:
    """Geodesic distance between broadcastable point sets, shape = broadcast of ``x.shape[:-1]``, ``y.shape[:-1]``.

    .. math::
        d_c(x,y) = \\tfrac{2}{\\sqrt c}\\operatorname{artanh}\\!\\big(\\sqrt c\\,\\|(-x)\\oplus_c y\\|\\big)
                 = \\tfrac{2}{\\sqrt c}\\operatorname{arsinh}\\!\\Big(\\frac{\\sqrt c\\,\\|x-y\\|}
                   {\\sqrt{(1-c\\|x\\|^2)(1-c\\|y\\|^2)}}\\Big)

    The arsinh form is the one evaluated: it equals the arcosh form
    :math:`\\frac1{\\sqrt c}\\operatorname{arcosh}(1 + 2z)` with :math:`\\sinh^2(\\sqrt c\\,d/2) = z`,
    but keeps full relative precision for nearby points (``arcosh`` near 1 does not).
    Guards: ``1 - c‖·‖²`` floored at ``finfo.eps`` (points on or past the boundary give a large,
    finite distance); the square root is masked to exactly 0 where
    ``‖x − y‖² = 0``, so ``d(x, x) = 0`` with a zero, not NaN, gradient.
    """
    c = _curv(c, x)
    return _dist_from_parts(_sqnorm(x - y), _sqnorm(x), _sqnorm(y), c).squeeze(-1)


@_full_precision
def pairwise_dist(x: Tensor, y: Tensor, c: float | Tensor = 1.0) -> Tensor:
    """All distances between ``x`` ``[..., N, D]`` and ``y`` ``[M, D]`` (or ``[..., M, D]``) → ``[..., N, M]``.

    Same formula as :func:`dist`, with :math:`\\|x-y\\|^2 = \\|x\\|^2 + \\|y\\|^2 - 2\\langle x,y\\rangle`
    expanded so that memory is O(N·M), not O(N·M·D).  This is what distance logits
    :math:`s_k = -\\lambda\\,d_c(\\phi, \\psi_k)` of a batch against class prototypes need.
    Guards: those of :func:`dist`, plus ``‖x − y‖² ≥ 0`` after the expansion.  Cost of the expansion:
    cancellation puts an absolute error of about ``eps·‖x‖²`` on ``‖x − y‖²``, so distances between
    nearly equal points are resolved only to about ``sqrt(eps)`` (use :func:`dist` for those).
    """
    c = _curv(c, x)
    x2 = _sqnorm(x)  # [..., N, 1]
    y2 = _sqnorm(y).transpose(-1, -2)  # [..., 1, M]
    sq_diff = (x2 + y2 - 2 * x @ y.transpose(-1, -2)).clamp_min(0)
    return _dist_from_parts(sq_diff, x2, y2, c)


@_full_precision
def geodesic(x: Tensor, y: Tensor, t: Tensor | float, c: float | Tensor = 1.0) -> Tensor:
    """Point at fraction ``t`` of the geodesic from ``x`` (t = 0) to ``y`` (t = 1).

    .. math:: \\gamma(t) = x \\oplus_c \\exp_0^c\\big(t\\,\\log_0^c((-x) \\oplus_c y)\\big),
              \\qquad d_c(x, \\gamma(t)) = t\\,d_c(x, y)\\ \\text{for } t\\in[0,1]

    ``t`` broadcasts against ``x.shape[:-1]`` (for T points along one path: ``x[None]``, ``y[None]``,
    ``t[:, None]``).  In the Poincaré disk the path is an arc of a circle orthogonal to the boundary,
    which is how tree edges are drawn.  Guards: those of :func:`mobius_add`, :func:`expmap0`, :func:`logmap0`.
    """
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device).unsqueeze(-1)
    return mobius_add(x, expmap0(t * logmap0(mobius_add(-x, y, c), c), c), c)


@_full_precision
def project(x: Tensor, c: float | Tensor = 1.0, eps: float | None = None) -> Tensor:
    """Pull points back inside the ball: rescale to radius ``(1 - eps)/√c`` any point beyond it.

    .. math:: \\operatorname{proj}(x) = x \\cdot \\min\\!\\Big(1, \\frac{1-\\epsilon}{\\sqrt c\\,\\|x\\|}\\Big)

    ``eps`` defaults to :func:`boundary_eps` of the compute dtype (4e-3 float32, 1e-5 float64, as in
    geoopt): a float32 point closer to the boundary than that cannot be told apart from its neighbours.
    Guard: ``‖x‖`` floored at 1e-15.
    """
    eps = boundary_eps(x.dtype) if eps is None else eps
    max_norm = (1 - eps) / _curv(c, x).sqrt()
    norm = _norm(x)
    return torch.where(norm > max_norm, x * (max_norm / norm), x)


@_full_precision
def poincare_to_klein(x: Tensor, c: float | Tensor = 1.0) -> Tensor:
    """Poincaré ball → Beltrami–Klein model of the same curvature.

    .. math:: k = \\frac{2x}{1 + c\\|x\\|^2}

    No guard needed: the denominator is at least 1.
    """
    return 2 * x / (1 + _curv(c, x) * _sqnorm(x))


@_full_precision
def klein_to_poincare(k: Tensor, c: float | Tensor = 1.0) -> Tensor:
    """Beltrami–Klein model → Poincaré ball, the inverse of :func:`poincare_to_klein`.

    .. math:: x = \\frac{k}{1 + \\sqrt{1 - c\\|k\\|^2}}

    Guard: ``1 - c‖k‖²`` floored at 1e-30 before the square root (finite gradient on the boundary).
    """
    return k / (1 + (1 - _curv(c, k) * _sqnorm(k)).clamp_min(_TINY**2).sqrt())


def _lorentz_factor(x: Tensor, c: Tensor) -> Tensor:
    """γ of the Klein image of a Poincaré point, written in Poincaré terms:

    :math:`\\gamma = (1 - c\\|k\\|^2)^{-1/2} = \\frac{1 + c\\|x\\|^2}{1 - c\\|x\\|^2}`, which avoids the
    cancellation in ``1 - c‖k‖²`` near the boundary; the denominator is floored at ``finfo.eps``.
    """
    x2 = _sqnorm(x)
    return (1 + c * x2) / _gap(x2, c)


@_full_precision
def einstein_midpoint(
    x: Tensor, weights: Tensor | None = None, c: float | Tensor = 1.0, dim: int = -2
) -> Tensor:
    """Weighted Einstein midpoint (the paper's HypAvg) of the points along ``dim``; that dim is removed.

    Computed in the Klein model (Khrulkov et al., 2020, "Hyperbolic image embeddings"; the paper's Eq. 8):

    .. math::
        k_i = \\frac{2x_i}{1 + c\\|x_i\\|^2},\\quad
        \\gamma_i = \\frac{1}{\\sqrt{1 - c\\|k_i\\|^2}},\\quad
        m = \\frac{\\sum_i w_i\\gamma_i k_i}{\\sum_i w_i\\gamma_i},\\quad
        \\mathrm{HypAvg} = \\frac{m}{1 + \\sqrt{1 - c\\|m\\|^2}}

    ``x`` is ``[..., N, D]`` with ``dim=-2`` (the point axis; the vector axis is always last);
    ``weights`` (non-negative, default all ones) has ``x``'s shape without the last axis.  The midpoint
    of one point is that point; of ``x`` and ``−x`` it is the origin; it has a smaller norm than the
    farthest input, i.e. it sits nearer the root.
    Guards: γ written as :math:`(1 + c\\|x\\|^2)/(1 - c\\|x\\|^2)` with the denominator floored at
    ``finfo.eps``; ``Σ wγ`` floored at 1e-15; those of :func:`klein_to_poincare`.
    """
    c = _curv(c, x)
    dim = dim % x.dim()
    if dim == x.dim() - 1:
        raise ValueError("dim indexes the points; the last axis holds the vector components")
    w = _lorentz_factor(x, c)
    if weights is not None:
        w = w * weights.unsqueeze(-1)
    num = (w * poincare_to_klein(x, c)).sum(dim=dim)
    den = w.sum(dim=dim).clamp_min(_TINY)
    return klein_to_poincare(num / den, c)


@_full_precision
def grouped_einstein_midpoint(
    x: Tensor,
    group_index: Tensor,
    num_groups: int,
    c: float | Tensor = 1.0,
    weights: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Einstein midpoint of each group of rows of ``x`` ``[N, D]``, groups given by integer labels.

    Returns ``(midpoints [num_groups, D], present [num_groups] bool)``.  Group ``g`` averages the rows
    with ``group_index == g`` by the formula of :func:`einstein_midpoint`; a group with no member gets
    the origin and ``present = False``.  This is HypAvg of the images of a mini-batch whose level-l
    ancestor is ``g`` (the paper's Eq. 8, as the papernotes.org note on it gives it), for all ancestors at
    once, with one scatter-add.
    Guards: those of :func:`einstein_midpoint` (the floored ``Σ wγ`` makes empty groups 0/1e-15 = 0).
    """
    c = _curv(c, x)
    w = _lorentz_factor(x, c).squeeze(-1)
    if weights is not None:
        w = w * weights
    group_index = group_index.to(device=x.device, dtype=torch.long)
    num = x.new_zeros(num_groups, x.shape[-1]).index_add(0, group_index, w.unsqueeze(-1) * poincare_to_klein(x, c))
    den = x.new_zeros(num_groups).index_add(0, group_index, w)
    present = torch.zeros(num_groups, dtype=torch.bool, device=x.device)
    present[group_index] = True
    return klein_to_poincare(num / den.clamp_min(_TINY).unsqueeze(-1), c), present


def norm_for_depth(depth, c: float | Tensor = 1.0, step: float = 1.0) -> Tensor:
    """Euclidean norm of a node placed at tree depth ``depth`` (root = 0) — our convention, not the paper's.

    HRVLM only says that norm encodes depth monotonically.  We choose equal *hyperbolic* spacing:
    a node at depth :math:`\\ell` sits at distance :math:`\\ell\\,\\delta` from the origin (``step`` = δ),

    .. math:: \\eta(\\ell) = \\tfrac{1}{\\sqrt c}\\tanh\\!\\big(\\tfrac{\\sqrt c\\,\\ell\\,\\delta}{2}\\big),

    the inverse of :func:`dist0` along a ray.  Equal hyperbolic steps make the Euclidean norms crowd
    toward the boundary, where the ball has room for exponentially many children.  The paper's level
    index (l = 0 leaf, l = L root) is ``depth = L - l``.  Float tensors stay float64 or become float32;
    anything else (ints, lists) becomes float64.
    Guard: none needed (tanh < 1); note that float32 cannot resolve :math:`\\sqrt c\\,\\ell\\,\\delta/2`
    beyond about 4.5 (see :func:`boundary_eps`).
    """
    depth = _as_float(depth)
    sqrt_c = _curv(c, depth).sqrt()
    return torch.tanh(sqrt_c * depth * step / 2) / sqrt_c


def depth_of_norm(norm, c: float | Tensor = 1.0, step: float = 1.0) -> Tensor:
    """Tree depth encoded by a Euclidean norm, the inverse of :func:`norm_for_depth` (our convention).

    .. math:: \\ell(\\eta) = \\frac{2\\operatorname{artanh}(\\sqrt c\\,\\eta)}{\\sqrt c\\,\\delta} = \\frac{d_c(0, x)}{\\delta}

    Real-valued: a trained embedding lands between integer depths.  Dtypes as in :func:`norm_for_depth`.
    Guard: artanh argument capped at ``1 - finfo.eps``.
    """
    norm = _as_float(norm)
    sqrt_c = _curv(c, norm).sqrt()
    return 2 * _artanh(sqrt_c * norm) / (sqrt_c * step)


def _as_float(value) -> Tensor:
    if isinstance(value, Tensor) and value.is_floating_point():
        return value if value.dtype == torch.float64 else value.float()
    return torch.as_tensor(value, dtype=torch.float64)
