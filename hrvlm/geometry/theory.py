"""The quantities of HRVLM's Theorem 1 (margin vs embedding depth), as functions.

**Reconstructed.**  The paper's text was not available; the statement below is our reconstruction, which
matches both secondary sources: the margin of a hyperbolic
classifier grows without bound as the embedding nears the boundary ([PN]), but only when the image
points exactly along its class direction; at a nonzero angle it saturates at an angle-only value
([EVR]).  The Euclidean counterpart is capped at 2λη².  [PN]: the papernotes.org note on the paper
(en.papernotes.org/CVPR2026/ai_safety/hierarchically_robust_zero-shot_vision-language_models/); [EVR]:
review notes by a reader of the paper's v1 text (GitHub Memory4ever/AI-System-Design, papers/2026/04).

Assumptions, shared by every closed form here (they are the reconstruction's, not verified premises
of the paper):

* the image embedding φ and every class prototype ψ_k have the same norm η (``eta``);
* logits are distance-based, :math:`s_k = -\\lambda\\,d_c(\\phi, \\psi_k)` (λ = ``scale``), or, for the
  Euclidean counterpart, inner products :math:`s_k = \\lambda\\langle\\phi, \\psi_k\\rangle`;
* angles are fixed as η varies: β_c = ``beta_true`` between φ and its class, β_k = ``beta_rival``
  between φ and the strongest rival (radians);
* the log-margin is :math:`m = \\log p_c - \\max_{k\\neq c}\\log p_k = s_c - \\max_{k\\neq c} s_k`
  (the softmax normalizer cancels, so the number and kind of other negatives do not matter);
* curvature −c with c > 0, so η ranges over [0, 1/√c).

It is a geometric margin in embedding space under these conditions, not a certified radius in input space.

Closed forms take numpy-compatible arrays (broadcast together) and return float64 numpy arrays;
:func:`empirical_margin` and :func:`empirical_margin_euclidean` take torch embeddings and return torch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from hrvlm.geometry import poincare as geometry

if TYPE_CHECKING:
    import pandas as pd


def _f64(*values):
    return [np.asarray(v, dtype=np.float64) for v in values]


def _arcosh1p(z):
    """arcosh(1 + z) = log1p(z + √(z² + 2z)), accurate for small z too."""
    return np.log1p(z + np.sqrt(z * (z + 2)))


def hyperbolic_log_margin(eta, beta_true, beta_rival, c=1.0, scale=1.0) -> np.ndarray:
    """Log-margin of a distance-softmax classifier on the Poincaré ball, equal norms η (reconstructed Theorem 1).

    Two points of norm η at angle β are at distance
    :math:`d_c = \\tfrac{1}{\\sqrt c}\\operatorname{arcosh}(1 + A\\sin^2\\tfrac{\\beta}{2})` with
    :math:`A = \\frac{8c\\eta^2}{(1-c\\eta^2)^2}`, so

    .. math::
        m_c(\\eta) = \\frac{\\lambda}{\\sqrt c}\\Big[\\operatorname{arcosh}\\big(1 + A\\sin^2\\tfrac{\\beta_k}{2}\\big)
                   - \\operatorname{arcosh}\\big(1 + A\\sin^2\\tfrac{\\beta_c}{2}\\big)\\Big].

    Assumptions (module docstring): equal norms, logits −λd, fixed angles.  Requires 0 ≤ η < 1/√c.
    """
    eta, beta_true, beta_rival, c, scale = _f64(eta, beta_true, beta_rival, c, scale)
    if np.any(c * eta**2 >= 1):
        raise ValueError("eta must lie inside the ball: c·eta² < 1")
    a = 8 * c * eta**2 / (1 - c * eta**2) ** 2
    return scale / np.sqrt(c) * (_arcosh1p(a * np.sin(beta_rival / 2) ** 2) - _arcosh1p(a * np.sin(beta_true / 2) ** 2))


def saturation_limit(beta_true, beta_rival, c=1.0, scale=1.0) -> np.ndarray:
    """Limit of :func:`hyperbolic_log_margin` as η → 1/√c: finite for β_c > 0, depends on angles only.

    .. math:: \\lim_{\\eta\\to1/\\sqrt c} m_c(\\eta) = \\frac{2\\lambda}{\\sqrt c}\\log\\frac{\\sin(\\beta_k/2)}{\\sin(\\beta_c/2)}

    (from :math:`\\operatorname{arcosh}(1+X) = \\log 2X + O(1/X)`).  This is the [EVR] caveat: the
    margin is unbounded only when β_c = 0, where this returns ``inf``.  Same assumptions as the margin.
    """
    beta_true, beta_rival, c, scale = _f64(beta_true, beta_rival, c, scale)
    with np.errstate(divide="ignore"):
        return 2 * scale / np.sqrt(c) * (np.log(np.sin(beta_rival / 2)) - np.log(np.sin(beta_true / 2)))


def zero_angle_growth(eta, beta_rival, c=1.0, scale=1.0) -> np.ndarray:
    """Asymptote of the margin at β_c = 0, showing the unbounded growth with depth.

    .. math::
        m_c(\\eta)\\big|_{\\beta_c=0} = \\frac{\\lambda}{\\sqrt c}\\operatorname{arcosh}\\big(1 + A\\sin^2\\tfrac{\\beta_k}{2}\\big)
        = \\frac{2\\lambda}{\\sqrt c}\\log\\frac{4\\sqrt c\\,\\eta\\,\\sin(\\beta_k/2)}{1 - c\\eta^2} + O\\big((1-c\\eta^2)^2\\big)

    i.e. it grows like :math:`\\frac{2\\lambda}{\\sqrt c}\\log\\frac{1}{1-c\\eta^2}`, without bound.
    At β_c = 0 the image sits on its prototype, so the margin is also :math:`\\lambda\\,d_c(\\psi_c, \\psi_k)`.
    Same assumptions as :func:`hyperbolic_log_margin`.  Meaningful near the boundary only (−∞ at η = 0).
    """
    eta, beta_rival, c, scale = _f64(eta, beta_rival, c, scale)
    with np.errstate(divide="ignore"):
        return 2 * scale / np.sqrt(c) * np.log(
            4 * np.sqrt(c) * eta * np.sin(beta_rival / 2) / (1 - c * eta**2)
        )


def euclidean_log_margin(eta, beta_true, beta_rival, scale=1.0) -> np.ndarray:
    """Euclidean counterpart: log-margin with inner-product logits :math:`s_k = \\lambda\\langle\\phi,\\psi_k\\rangle`.

    .. math:: m(\\eta) = \\lambda\\langle\\phi, \\psi_c - \\psi_k\\rangle = \\lambda\\eta^2(\\cos\\beta_c - \\cos\\beta_k)

    Assumptions: ‖φ‖ = ‖ψ_c‖ = ‖ψ_k‖ = η (η = 1 is CLIP's cosine classifier); fixed angles.
    Never exceeds :func:`euclidean_margin_cap`.
    """
    eta, beta_true, beta_rival, scale = _f64(eta, beta_true, beta_rival, scale)
    return scale * eta**2 * (np.cos(beta_true) - np.cos(beta_rival))


def euclidean_margin_cap(eta, scale=1.0) -> np.ndarray:
    """Upper bound on the Euclidean log-margin at norm η, over all angles.

    .. math:: \\lambda\\langle\\phi, \\psi_c - \\psi_k\\rangle \\le \\lambda\\,\\eta\\,\\|\\psi_c - \\psi_k\\| \\le 2\\lambda\\eta^2

    (Cauchy–Schwarz, then ‖ψ_c − ψ_k‖ ≤ 2η); attained when ψ_k = −ψ_c and φ = ψ_c.  Assumes equal norms η.
    """
    eta, scale = _f64(eta, scale)
    return 2 * scale * eta**2


def logit_margin(logits: Tensor, labels: Tensor) -> Tensor:
    """The log-margin ``s_y − max_{k≠y} s_k`` over the last dimension, in ``logits``' dtype (the softmax's
    normaliser cancels); positive = correctly classified.  The one definition: the attacks' CW and DLR
    losses and the trained model's level margins use it too."""
    # scatter, not F.one_hot: on CPU one_hot checks the label range with two host synchronisations
    true = logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    return true - logits.scatter(-1, labels.unsqueeze(-1), float("-inf")).amax(dim=-1)


def empirical_margin(image_emb: Tensor, prototypes: Tensor, labels: Tensor, c=1.0, scale=1.0) -> Tensor:
    """Measured hyperbolic log-margin of each embedding, float64, shape ``[N]``.

    .. math:: m_i = \\log p_{y_i} - \\max_{k\\neq y_i}\\log p_k = \\lambda\\big(\\min_{k\\neq y_i} d_c(\\phi_i,\\psi_k) - d_c(\\phi_i,\\psi_{y_i})\\big)

    with logits :math:`-\\lambda\\,d_c(\\phi_i, \\psi_k)`.  ``image_emb`` ``[N, D]`` and ``prototypes``
    ``[K, D]`` (K ≥ 2) are points of the ball; ``labels`` ``[N]`` index the prototypes.  No equal-norm or
    fixed-angle assumption: this is what the closed forms are checked against.  Negative = misclassified.
    """
    logits = -scale * geometry.pairwise_dist(image_emb.double(), prototypes.double(), c)
    return logit_margin(logits, labels.long())


def empirical_margin_euclidean(
    image_emb: Tensor, prototypes: Tensor, labels: Tensor, scale=1.0, cosine: bool = False
) -> Tensor:
    """Measured Euclidean log-margin, float64, shape ``[N]``, with logits :math:`\\lambda\\langle\\phi,\\psi_k\\rangle`.

    .. math:: m_i = \\lambda\\big(\\langle\\phi_i,\\psi_{y_i}\\rangle - \\max_{k\\neq y_i}\\langle\\phi_i,\\psi_k\\rangle\\big)

    With ``cosine=True`` both sides are L2-normalized first (CLIP's zero-shot classifier, η = 1), so
    the margin is at most 2λ.
    """
    image_emb, prototypes = image_emb.double(), prototypes.double()
    if cosine:
        image_emb = torch.nn.functional.normalize(image_emb, dim=-1)
        prototypes = torch.nn.functional.normalize(prototypes, dim=-1)
    return logit_margin(scale * image_emb @ prototypes.T, labels.long())


def margin_table(
    etas=(0.5, 0.9, 0.99, 0.999, 0.9999),
    betas_true_deg=(0.0, 5.0, 20.0),
    rival_deg: float = 90.0,
    c: float = 1.0,
    scale: float = 1.0,
    limit: bool = True,
) -> pd.DataFrame:
    """Hyperbolic and Euclidean log-margins at several norms η, the table of chapter 03 (Theorem 1).

    Setup: the rival prototype sits ``rival_deg`` from the true one and φ is rotated by β_c away from
    the rival, so β_k = ``rival_deg`` + β_c.  Columns: the hyperbolic margin
    (:func:`hyperbolic_log_margin`) and the Euclidean margin (:func:`euclidean_log_margin`) for each
    β_c, then the cap 2λη².  With ``limit``, a last row ``"limit"`` holds η → 1/√c: the saturation
    limit (``inf`` at β_c = 0) for the hyperbolic columns, and the Euclidean values at η = 1/√c.
    With the defaults (c = λ = 1) the values reproduce the reconstruction's table that
    ``tests/test_theory.py`` holds to 1e-3.
    """
    import pandas as pd  # here, not at the top: the attacks import logit_margin and need no pandas

    etas = np.asarray(etas, dtype=np.float64)
    betas = np.deg2rad(np.asarray(betas_true_deg, dtype=np.float64))
    rivals = np.deg2rad(rival_deg) + betas
    edge = 1 / np.sqrt(c)
    columns = {}
    for deg, beta, rival in zip(betas_true_deg, betas, rivals):
        hyp = hyperbolic_log_margin(etas, beta, rival, c, scale)
        columns[f"hyperbolic β_c={deg:g}°"] = np.append(hyp, saturation_limit(beta, rival, c, scale)) if limit else hyp
    for deg, beta, rival in zip(betas_true_deg, betas, rivals):
        euc = euclidean_log_margin(etas, beta, rival, scale)
        columns[f"Euclidean β_c={deg:g}°"] = np.append(euc, euclidean_log_margin(edge, beta, rival, scale)) if limit else euc
    cap = euclidean_margin_cap(etas, scale)
    columns["Euclidean cap 2λη²"] = np.append(cap, euclidean_margin_cap(edge, scale)) if limit else cap
    index = pd.Index([*etas.tolist(), "limit"] if limit else etas.tolist(), name="η")
    return pd.DataFrame(columns, index=index)


def closed_form_check(etas, betas_true_deg=(0.0, 5.0, 20.0), rival_deg: float = 90.0,
                      c: float = 1.0, scale: float = 1.0) -> pd.DataFrame:
    """:func:`hyperbolic_log_margin` against margins measured point by point, on explicit 2-D configurations.

    For each norm η in ``etas`` and angle β_c: the class prototype at angle 0, the rival at
    ``rival_deg``, the image rotated by β_c away from the rival (so β_k = ``rival_deg`` + β_c), all of
    norm η.  The measured margin is :func:`empirical_margin` (pairwise Poincaré distances and the
    softmax; none of the closed form's algebra).  One row per β_c: the number of configurations, the
    largest |measured − closed form| and the η where it occurs.  Requires every η < 1/√c.
    """
    import pandas as pd

    etas = torch.as_tensor(np.asarray(etas, dtype=np.float64))
    rows = []
    for deg in betas_true_deg:
        beta = np.deg2rad(deg)
        angles = torch.tensor([0.0, np.deg2rad(rival_deg)], dtype=torch.float64)
        unit = torch.stack([torch.cos(angles), torch.sin(angles)], dim=-1)
        image_dir = torch.tensor([[np.cos(-beta), np.sin(-beta)]], dtype=torch.float64)
        measured = torch.stack([empirical_margin(eta * image_dir, eta * unit, torch.tensor([0]), c, scale)[0]
                                for eta in etas]).numpy()
        closed = hyperbolic_log_margin(etas.numpy(), beta, beta + np.deg2rad(rival_deg), c, scale)
        error = np.abs(measured - closed)
        worst = int(np.argmax(error))
        rows.append({"β_c (deg)": float(deg), "configurations": int(etas.numel()),
                     "max |measured − closed|": float(error[worst]), "at η": float(etas[worst])})
    return pd.DataFrame(rows).set_index("β_c (deg)")
