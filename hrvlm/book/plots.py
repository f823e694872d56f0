"""Plots for the geometry and margin–depth chapter: margin curves of :mod:`hrvlm.geometry.theory`, trees in the Poincaré disk.

Every function draws on a matplotlib ``Axes`` it is given and returns it (or plain data, for the
layout helpers), so that figures are composed in the notebook and nothing here opens a window.
"""
from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from hrvlm.geometry import poincare as geometry, theory


def _colors(n: int):
    return plt.get_cmap("viridis")(np.linspace(0.0, 0.85, max(n, 1)))


def plot_margin_vs_norm(
    ax,
    betas_true_deg: Sequence[float],
    rival_deg: float = 90.0,
    c: float = 1.0,
    scale: float = 1.0,
    kind: str = "hyperbolic",
    num: int = 300,
    eta_range: tuple[float, float] = (0.05, 0.99999),
):
    """Log-margin against √c·η on a logit axis (0.5, 0.9, 0.99, … equally spaced), one curve per β_c.

    ``kind="hyperbolic"``: :func:`hrvlm.geometry.theory.hyperbolic_log_margin`, with each curve's
    :func:`~hrvlm.geometry.theory.saturation_limit` dashed in the same colour (none for β_c = 0: it is ∞).
    ``kind="euclidean"``: :func:`~hrvlm.geometry.theory.euclidean_log_margin` at norm η with the cap 2λη²
    dashed.  The rival sits ``rival_deg`` from the class, φ is rotated by β_c away from it.
    """
    if kind not in ("hyperbolic", "euclidean"):
        raise ValueError(f"kind must be 'hyperbolic' or 'euclidean', not {kind!r}")
    x = 1 - np.logspace(np.log10(1 - eta_range[0]), np.log10(1 - eta_range[1]), num)  # dense near the edge
    eta = x / np.sqrt(c)
    for deg, color in zip(betas_true_deg, _colors(len(betas_true_deg))):
        beta, rival = np.deg2rad(deg), np.deg2rad(rival_deg + deg)
        if kind == "hyperbolic":
            ax.plot(x, theory.hyperbolic_log_margin(eta, beta, rival, c, scale), color=color, label=f"$\\beta_c={deg:g}°$")
            if deg > 0:
                ax.axhline(theory.saturation_limit(beta, rival, c, scale), color=color, linestyle="--", linewidth=1)
        else:
            ax.plot(x, theory.euclidean_log_margin(eta, beta, rival, scale), color=color, label=f"$\\beta_c={deg:g}°$")
    if kind == "euclidean":
        ax.plot(x, theory.euclidean_margin_cap(eta, scale), color="black", linestyle="--", linewidth=1, label="cap $2\\lambda\\eta^2$")
    ax.set_xscale("logit")
    ax.set_xlabel("$\\sqrt{c}\\,\\eta$ (embedding norm, logit scale)")
    ax.set_ylabel("log-margin $m$")
    ax.set_title(f"{kind}, $c={c:g}$, $\\lambda={scale:g}$")
    ax.legend(fontsize="small")
    return ax


def plot_margin_vs_depth(
    ax,
    curvatures: Sequence[float],
    betas_true_deg: Sequence[float],
    rival_deg: float = 90.0,
    scale: float = 1.0,
    max_depth: float = 12.0,
    num: int = 300,
):
    """Hyperbolic log-margin against depth ρ = d_c(0, φ) for several curvatures (colours) and angles (line styles).

    On this axis the β_c = 0 margin grows with slope 2λ for every c (it is λ·d_c(ψ_c, ψ_k) ≈ 2λρ + const),
    while a β_c > 0 margin bends onto its saturation limit (2λ/√c)·log(sin(β_k/2)/sin(β_c/2)),
    drawn dashed.  Norms are η = tanh(√c ρ/2)/√c (:func:`hrvlm.geometry.poincare.norm_for_depth` with step 1).
    """
    rho = np.linspace(1e-3, max_depth, num)
    styles = ["-", "-.", ":", (0, (5, 1))]
    for c, color in zip(curvatures, _colors(len(curvatures))):
        eta = geometry.norm_for_depth(torch.as_tensor(rho), c).numpy()
        for deg, style in zip(betas_true_deg, styles):
            beta, rival = np.deg2rad(deg), np.deg2rad(rival_deg + deg)
            margin = theory.hyperbolic_log_margin(eta[eta * np.sqrt(c) < 1], beta, rival, c, scale)
            ax.plot(rho[: margin.size], margin, color=color, linestyle=style, label=f"$c={c:g}$, $\\beta_c={deg:g}°$")
            if deg > 0:
                ax.axhline(theory.saturation_limit(beta, rival, c, scale), color=color, linestyle="--", linewidth=1)
    ax.set_xlabel("depth $\\rho = d_c(0, \\phi)$")
    ax.set_ylabel("log-margin $m$")
    ax.set_title(f"hyperbolic margin vs depth, $\\lambda={scale:g}$")
    ax.legend(fontsize="small", ncol=2)
    return ax


def truncated_tree(
    root: Hashable, children_of: Callable[[Hashable], Sequence[Hashable]], max_depth: int, max_children: int
) -> dict:
    """``{node: [children]}`` of the tree under ``root``, cut at ``max_depth`` and at the first ``max_children``
    children that ``children_of`` lists (order them there); every reached node is a key, leaves map to ``[]``."""
    tree, frontier = {}, [root]
    for depth in range(max_depth + 1):
        next_frontier = []
        for node in frontier:
            kids = list(children_of(node))[:max_children] if depth < max_depth else []
            tree[node] = kids
            next_frontier.extend(kids)
        frontier = next_frontier
    return tree


def tree_disk_layout(tree: Mapping, root: Hashable, c: float = 1.0, leaf_radius: float = 0.9):
    """Place a tree in the Poincaré disk with norm = depth: returns ``(positions, depths)`` dicts.

    Radius: :func:`hrvlm.geometry.poincare.norm_for_depth` (equal hyperbolic steps per level), with the step
    chosen so the deepest level sits at ``leaf_radius``/√c.  Angle: leaves are spread evenly around the
    circle in depth-first order and each inner node takes the mean angle of its leaves, so subtrees
    occupy disjoint sectors.  The root is at the origin.
    """
    depths, order = {}, []

    def walk(node, depth):
        depths[node] = depth
        order.append(node)
        for kid in tree.get(node, []):
            walk(kid, depth + 1)

    walk(root, 0)
    leaves = [node for node in order if not tree.get(node)]
    leaf_angle = {leaf: 2 * np.pi * i / len(leaves) for i, leaf in enumerate(leaves)}

    def angle(node):
        kids = tree.get(node)
        return leaf_angle[node] if not kids else float(np.mean([angle(kid) for kid in kids]))

    max_depth = max(depths.values()) or 1
    step = 2 * np.arctanh(leaf_radius) / (np.sqrt(c) * max_depth)
    radii = geometry.norm_for_depth(torch.tensor([depths[n] for n in order], dtype=torch.float64), c, step).numpy()
    positions = {n: r * np.array([np.cos(angle(n)), np.sin(angle(n))]) for n, r in zip(order, radii)}
    return positions, depths


def plot_poincare_tree(
    ax, tree: Mapping, positions: Mapping, depths: Mapping, c: float = 1.0, labels: Mapping | None = None,
    label_depth: int = 1,
):
    """Draw a laid-out tree in the Poincaré disk: boundary circle, dotted circles at each level's norm,
    edges as geodesics (arcs orthogonal to the boundary, :func:`hrvlm.geometry.poincare.geodesic`), nodes coloured
    by depth, and text labels (``labels[node]``, default ``str(node)``) for nodes at depth ≤ ``label_depth``."""
    radius = 1 / np.sqrt(c)
    ax.add_patch(plt.Circle((0, 0), radius, fill=False, color="black", linewidth=1))
    for depth in sorted(set(depths.values()) - {0}):
        norm = np.linalg.norm(next(positions[n] for n, d in depths.items() if d == depth))
        ax.add_patch(plt.Circle((0, 0), norm, fill=False, color="grey", linestyle=":", linewidth=0.8))
    t = torch.linspace(0, 1, 32, dtype=torch.float64)[:, None]
    for parent, kids in tree.items():
        for kid in kids:
            a, b = (torch.as_tensor(positions[n], dtype=torch.float64)[None] for n in (parent, kid))
            path = geometry.geodesic(a, b, t, c)[:, 0].numpy()
            ax.plot(path[:, 0], path[:, 1], color="grey", linewidth=0.7, zorder=1)
    nodes = list(positions)
    xy = np.array([positions[n] for n in nodes])
    max_depth = max(depths.values()) or 1
    ax.scatter(xy[:, 0], xy[:, 1], c=[depths[n] for n in nodes], cmap="viridis", vmin=0, vmax=max_depth, s=18, zorder=2)
    for node in nodes:
        if depths[node] <= label_depth:
            text = labels[node] if labels is not None else str(node)
            ax.annotate(text, positions[node], fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlim(-1.05 * radius, 1.05 * radius)
    ax.set_ylim(-1.05 * radius, 1.05 * radius)
    ax.set_aspect("equal")
    ax.axis("off")
    return ax
