"""HRVLM's loss terms as small pure functions on ball points (the paper's Eqs. 8–14, per
the papernotes.org note on it).

Shapes: ``B`` images, ``C_l`` classes at level ``l`` (0 = leaves), ``D`` dimensions; points lie in
the Poincaré ball of curvature −c.  Distances and norms run in float32 (``hrvlm.geometry.poincare`` forces it).

* :func:`hypavg_levels` — HypAvg (Eq. 8): the batch's image points grouped by their level-``l``
  ancestor and averaged by the Einstein midpoint, level by level;
* :func:`hnsa_logits` — HNSA (Eq. 9): a level's logits plus those of the negatives from the levels
  ``l ± 1`` that share no edge with each sample's class, everything else masked to −∞;
* :func:`hita_loss` — HITA (Eq. 10): ``Σ_l ω_l CE_l``;
* :func:`vicinity_loss` — L_vic: ``mean max(0, d_c(φ, ψ_y) − ζ_vic)``;
* :func:`norm_order_loss` — the L_gap hinges (Eqs. 11, 13): ``mean max(0, d_c(0, parent) − d_c(0, child) + ζ_gap)``.

Means, not the paper's sums, over samples and edges: a term's size then does not grow with the batch
or the tree, and λ₁, λ₂ keep their meaning across profiles (ours).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from hrvlm.geometry import poincare as geometry


@dataclass
class LevelPoints:
    """The image-side points of one level: ``points [G, D]``, their classes ``nodes [G]`` (indices into
    the level's classes) and ``parent [G]``, the row of each one's parent in the next level's
    :class:`LevelPoints` (``None`` at the top level)."""

    points: torch.Tensor
    nodes: torch.Tensor
    parent: torch.Tensor | None = None


def hypavg_levels(points: torch.Tensor, labels: torch.Tensor, parents: Sequence[torch.Tensor],
                  sizes: Sequence[int], c=1.0, recursive: bool = True) -> list[LevelPoints]:
    """HypAvg of a batch at every level: ``points [B, D]`` of images with leaf ``labels [B]``;
    ``parents[l] [C_l]`` is the parent (a class of level ``l+1``) of each class of level ``l``, and
    ``sizes[l]`` the number of classes of level ``l`` (``len(sizes) = len(parents) + 1``).

    Level 0 is the images themselves; level ``l ≥ 1`` has one point per level-``l`` class present in
    the batch: the Einstein midpoint of the level-``(l−1)`` points below it (``recursive``, the
    papernotes' "recursively") or of its images directly (``recursive=False``).
    """
    levels = [LevelPoints(points, labels)]
    image_class = labels
    for level, parent_of in enumerate(parents):
        below = levels[-1]
        group = parent_of.to(points.device)[below.nodes]
        image_class = parent_of.to(points.device)[image_class]
        if recursive:
            mid, present = geometry.grouped_einstein_midpoint(below.points, group, sizes[level + 1], c)
        else:
            mid, present = geometry.grouped_einstein_midpoint(points, image_class, sizes[level + 1], c)
        nodes = present.nonzero().squeeze(1)
        row = torch.full((sizes[level + 1],), -1, dtype=torch.long, device=points.device)
        row[nodes] = torch.arange(nodes.numel(), device=points.device)
        below.parent = row[group]
        levels.append(LevelPoints(mid[nodes], nodes))
    return levels


def hypavg_edges(levels: Sequence[LevelPoints]) -> tuple[torch.Tensor, torch.Tensor]:
    """The image-side parent–child edges of :func:`hypavg_levels`' output as ``(children, parents)``
    point rows; a parent with one child in the batch *is* that child (the same point) and is left out."""
    children, parents = [], []
    for below, above in zip(levels[:-1], levels[1:]):
        keep = torch.bincount(below.parent, minlength=above.points.shape[0])[below.parent] >= 2
        children.append(below.points[keep])
        parents.append(above.points[below.parent[keep]])
    return torch.cat(children), torch.cat(parents)


def hnsa_logits(logits: torch.Tensor, labels: torch.Tensor,
                negatives: Sequence[tuple[torch.Tensor, torch.Tensor]] = ()) -> torch.Tensor:
    """HNSA: ``logits [N, C_l]`` of level ``l`` widened by the negatives of each sample's class.

    ``negatives``: pairs ``(other_logits [N, C_k], mask [C_l, C_k])`` for the levels ``k = l ± 1``
    (``mask[c, j]``: class ``j`` of level ``k`` shares no edge with class ``c``,
    :func:`hrvlm.hierarchy.trees.hnsa_negatives`).  Returns ``[N, C_l + Σ C_k]``: the level's own logits,
    then each other level's, −∞ where ``mask[labels]`` is False, so only true negatives enter the
    softmax denominator; the targets stay ``labels``.
    """
    parts = [logits]
    for other, mask in negatives:
        parts.append(other.masked_fill(~mask.to(other.device)[labels], float("-inf")))
    return torch.cat(parts, dim=1)


def hita_loss(logits: Sequence[torch.Tensor | None], labels: Sequence[torch.Tensor | None],
              weights: Sequence[float]) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
    """HITA: ``Σ_l ω_l · mean CE(logits_l, labels_l)`` and the per-level CEs; levels whose logits are
    ``None`` are skipped (their CE is ``None``)."""
    ces = [None if z is None else F.cross_entropy(z.float(), y) for z, y in zip(logits, labels)]
    terms = [w * ce for ce, w in zip(ces, weights) if ce is not None]
    if not terms:
        raise ValueError("hita_loss needs at least one level")
    return torch.stack(terms).sum(), ces


def vicinity_loss(points: torch.Tensor, class_points: torch.Tensor, c=1.0, radius: float = 1.0) -> torch.Tensor:
    """L_vic: each image only has to lie within hyperbolic ``radius`` (ζ_vic) of its class's text point,
    ``mean_i max(0, d_c(φ_i, ψ_{y_i}) − ζ_vic)``; ``class_points`` is ``[B, D]`` (row i: ψ of image i's class)."""
    return F.relu(geometry.dist(points, class_points, c) - radius).mean()


def norm_order_loss(children: torch.Tensor, parents: torch.Tensor, margin: float, c=1.0) -> torch.Tensor:
    """L_gap: every parent at least ``margin`` (ζ_gap) nearer the origin than its child, in hyperbolic
    distance to the origin: ``mean max(0, d_c(0, parent) − d_c(0, child) + ζ_gap)`` over edge rows.

    Ours, for the paper's ``‖·‖₂``: the order is the same (``d_c(0, x) = 2 artanh(√c‖x‖)/√c`` grows with
    the norm), but the Euclidean norm of a lifted point saturates (``tanh``: its gradient is
    ``1 − tanh²`` ≈ 0.42 of the tangent vector's at the init radius tanh 1), while ``d_c(0, exp₀(v)) =
    2‖v‖`` is linear in the scaled feature, so the hinge's gradient does not fade near the boundary
    and ζ_gap is in the units of the logits' distances.  An empty edge set gives 0."""
    if children.shape[0] == 0:
        return children.new_zeros((), dtype=torch.float32)
    gap = geometry.dist0(parents.float(), c) - geometry.dist0(children.float(), c) + margin
    return F.relu(gap).mean()
