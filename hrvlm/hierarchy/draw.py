"""Drawings of class trees (matplotlib + networkx: the ``book`` extra, ``pip install 'hrvlm[book]'``; the
library itself needs neither)."""
from __future__ import annotations

import importlib
from typing import Sequence

import numpy as np

from hrvlm.hierarchy.trees import Forest, Tree


def require_plotting() -> None:
    """One line, before any work, where matplotlib or networkx is not installed."""
    missing = []
    for module in ("matplotlib", "networkx"):
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise ModuleNotFoundError(f"drawing trees needs {' and '.join(missing)}: pip install 'hrvlm[book]'")


def tree_layout(tree: Tree) -> dict[tuple[int, int], tuple[float, float]]:
    """Positions of ``(level, index)`` nodes: leaves evenly on a line, grouped so that every subtree is
    contiguous (sorted by their ancestors from the top down), each parent over its leaves' mean."""
    order = np.lexsort(tree.ancestor)  # the last key, level L, sorts first
    x_leaf = np.empty(tree.n_leaves)
    x_leaf[order] = np.arange(tree.n_leaves)
    pos = {}
    for level in range(tree.depth + 1):
        for j in range(len(tree.nodes[level])):
            pos[(level, j)] = (float(x_leaf[tree.ancestor[level] == j].mean()), float(level))
    return pos


def draw_tree(tree: Tree, ax=None, leaves: Sequence[int] | None = None, fontsize: float = 7.0):
    """Draw a tree, leaves at the bottom, root side at the top (readable for 10–50 leaves).

    ``leaves`` restricts the drawing to some leaf indices.  Returns the matplotlib Axes.
    """
    require_plotting()
    import matplotlib.pyplot as plt
    import networkx as nx

    if leaves is not None:
        tree = tree.restrict(leaves)
    if ax is None:
        _, ax = plt.subplots(figsize=(max(6.0, 0.35 * tree.n_leaves), 0.8 * (tree.depth + 1) + 1.5))
    graph = nx.DiGraph()
    for level in range(tree.depth):
        for j, p in enumerate(tree.parents(level)):
            graph.add_edge((level + 1, int(p)), (level, j))
    pos = tree_layout(tree)
    nx.draw_networkx_edges(graph, pos, ax=ax, arrows=False, edge_color="0.6", width=0.8)
    nx.draw_networkx_nodes(graph, pos, ax=ax, node_size=18, node_color=[
        plt.get_cmap("viridis")(0.85 * n[0] / max(tree.depth, 1)) for n in graph.nodes])
    for (level, j), (x, y) in pos.items():
        ax.text(x, y - 0.12 if level == 0 else y + 0.08, tree.names[level][j], fontsize=fontsize,
                rotation=90 if level == 0 else 20, ha="center" if level == 0 else "left",
                va="top" if level == 0 else "bottom", rotation_mode="anchor")
    ax.set_yticks(range(tree.depth + 1), [f"level {l}" for l in range(tree.depth + 1)])
    ax.set_ylim(-1.4, tree.depth + 0.6)
    ax.set_xticks([])
    ax.set_title(tree.name, fontsize=fontsize + 2)
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    return ax


def draw_forest(forest: Forest, leaves: Sequence[int] | None = None, fontsize: float = 7.0):
    """One panel per tree of the forest (see :func:`draw_tree`); returns the matplotlib Figure."""
    require_plotting()
    import matplotlib.pyplot as plt

    n_leaves = len(leaves) if leaves is not None else len(forest.leaves)
    fig, axes = plt.subplots(len(forest), 1, squeeze=False,
                             figsize=(max(6.0, 0.35 * n_leaves), (0.8 * (forest.depth + 1) + 1.5) * len(forest)))
    for tree, ax in zip(forest, axes[:, 0]):
        draw_tree(tree, ax, leaves, fontsize)
    fig.tight_layout()
    return fig
