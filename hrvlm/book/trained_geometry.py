"""Theorem 1's two claims, measured on a trained model's embeddings (chapter 03's last section).

* **Norm encodes depth** (:func:`norm_order`): on the Poincaré head of a trained HRVLM run, the text
  point of every parent class should lie nearer the origin than those of its children.
* **Margins grow with depth** (:func:`level_margins`): the log-margin ``s_y − max_{k≠y} s_k`` of each
  image at each level of the tree, clean and under an attack made against that level.
* **A picture** (:func:`disk_layout`): the class points of every level in two dimensions, each keeping
  its norm (so its depth) and getting its direction from the first two principal directions of the
  unit vectors: an honest projection of the norms, a lossy one of the angles.

``head`` is a :class:`hrvlm.heads.Head` built over the tree's level names (level 0 = leaves, level
``L`` = root); the paper's level ``l`` sits at tree depth ``L − l`` from the root.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from hrvlm.geometry import poincare as geometry
from hrvlm.geometry.theory import logit_margin


def tree_head(model, tokenizer, dataset: str, tree, spec: dict | None = None):
    """The head ``spec`` (default: the model's trained head, else cosine) over every level of ``tree``,
    with ``dataset``'s templates."""
    from hrvlm.data import get_spec
    from hrvlm.heads import build_head
    from hrvlm.data.templates import load_templates

    data = get_spec(dataset)
    names = [list(data.classnames)] + [list(tree.names[level]) for level in range(1, tree.depth + 1)]
    spec = spec or getattr(model, "head_spec", None) or {"kind": "cosine"}
    return build_head(spec, model, tokenizer, names, load_templates(data.templates, dataset=data.name))


def sample(dataset: str, n: int, image_size: int, options: dict | None = None):
    """``(images, labels)`` of the fixed ``n``-image subset of ``dataset``'s evaluation split."""
    from hrvlm.data import fixed_subset, get_dataset, get_spec
    from hrvlm.evaluation.evaluate import default_split

    split = default_split(get_spec(dataset))
    data = get_dataset(dataset, split, **{**(options or {}), "image_size": image_size})
    ids = fixed_subset(dataset, len(data), n, split)
    items = [data[int(i)] for i in ids]
    return torch.stack([item[0] for item in items]), torch.as_tensor([int(item[1]) for item in items])


def level_points(head) -> list[torch.Tensor]:
    """The class points (prototypes) of every level, ``[C_l, D]`` float32, leaves first."""
    return [head.prototypes(level).detach().float() for level in range(head.depth + 1)]


def norm_order(head, tree, curvature: float | None = None) -> pd.DataFrame:
    """Per level: classes, mean and range of the text points' norms, the depth they imply
    (:func:`hrvlm.geometry.poincare.depth_of_norm`, when ``curvature`` is given: a Poincaré head), and the fraction
    of parent–child pairs (this level's classes and their parents one level up) whose parent has the
    smaller norm.  Pairs whose parent and child are the same point (a padded chain) are not counted."""
    points = level_points(head)
    rows = []
    for level, p in enumerate(points):
        norms = p.norm(dim=-1)
        row = {"level": level, "tree depth": tree.depth - level, "classes": len(p), "mean norm": float(norms.mean()),
               "min norm": float(norms.min()), "max norm": float(norms.max())}
        if curvature is not None:
            row["implied hyperbolic depth d(0, x)"] = float(geometry.depth_of_norm(norms.double(), curvature).mean())
        if level < tree.depth:
            parent = points[level + 1][torch.as_tensor(tree.parents(level), dtype=torch.long)]
            distinct = (parent - p).norm(dim=-1) > 1e-6
            pairs = int(distinct.sum())
            ordered = (parent.norm(dim=-1) < norms) & distinct
            row["parent–child pairs"] = pairs
            row["parent nearer origin"] = float(ordered.sum()) / pairs if pairs else float("nan")
        rows.append(row)
    return pd.DataFrame(rows).set_index("level")


def ordered_share(frame: pd.DataFrame) -> float:
    """The share of all parent–child pairs of a :func:`norm_order` or :func:`image_order` table whose
    parent is nearer the origin (pairs of every level pooled)."""
    pairs = frame["parent–child pairs"].fillna(0)
    return float((frame["parent nearer origin"].fillna(0) * pairs).sum() / max(float(pairs.sum()), 1.0))


def image_points(head, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """``head.encode`` of ``images`` in batches, float32 (the image points of a Poincaré head)."""
    with torch.no_grad():
        return torch.cat([head.encode(images[i:i + batch_size]).float() for i in range(0, len(images), batch_size)])


def image_order(head, tree, images: torch.Tensor, labels: torch.Tensor, curvature: float) -> pd.DataFrame:
    """The image side of "norm encodes depth", as HRVLM's L_gap^intra orders it: the images' points
    (:func:`image_points`) are averaged per class, level by level (the Einstein midpoints of
    :func:`hrvlm.methods.hrvlm_losses.hypavg_levels`, recursively: level 0 are the images, each standing at
    its leaf, level l ≥ 1 one point per level-l class present), and per level the table gives the pairs of a level-l point and its level-(l+1)
    parent (a parent with one point below it *is* that point and is not counted) and the share whose parent
    lies nearer the origin (``d_c(0, ·)``).  A midpoint of points
    lies nearer the origin than most of them, so a high share is partly the averaging's; the text side
    (:func:`norm_order`) has no such help."""
    from hrvlm.methods.hrvlm_losses import hypavg_edges, hypavg_levels

    points = image_points(head, images)
    parents = [torch.as_tensor(tree.parents(level), dtype=torch.long) for level in range(tree.depth)]
    sizes = [tree.num_classes(level) for level in range(tree.depth + 1)]
    levels = hypavg_levels(points, labels.long(), parents, sizes, curvature, recursive=True)
    rows = []
    for level in range(tree.depth):  # level-l points against their level-(l+1) parents
        below = levels[level]
        children, parents = hypavg_edges(levels[level:level + 2])  # the pairs L_gap^intra orders at this level
        pairs = len(children)
        nearer = geometry.dist0(parents, curvature) < geometry.dist0(children, curvature)
        rows.append({"level": level, "tree depth": tree.depth - level, "points": len(below.points),
                     "mean image-point norm": float(below.points.norm(dim=-1).mean()), "parent–child pairs": pairs,
                     "parent nearer origin": float(nearer.sum()) / pairs if pairs else float("nan")})
    return pd.DataFrame(rows).set_index("level")


def depth_orders(heads, tree, images: torch.Tensor, labels: torch.Tensor) -> pd.DataFrame:
    """One row per ``label: head`` of ``heads`` (trained Poincaré heads): the pooled shares of parent–child
    text pairs (:func:`norm_order`) and image-point pairs (:func:`image_order`) in depth order, with the
    mean text norm at the leaves and at the root's children, so that a share can be read with the scale."""
    rows = {}
    for label, head in heads.items():
        text, image = norm_order(head, tree, head.curvature), image_order(head, tree, images, labels, head.curvature)
        rows[label] = {"text pairs in order": ordered_share(text),
                       "text pairs": int(text["parent–child pairs"].fillna(0).sum()),
                       "image pairs in order": ordered_share(image),
                       "image pairs": int(image["parent–child pairs"].fillna(0).sum()),
                       "mean text norm, leaves": float(text["mean norm"].iloc[0]),
                       f"mean text norm, level {tree.depth - 1}": float(text["mean norm"].iloc[tree.depth - 1])}
    return pd.DataFrame.from_dict(rows, orient="index")


def sweep_reading(orders: pd.DataFrame, values: dict, before: str, ours: str, most: float = 0.5) -> str:
    """What a :func:`depth_orders` table over a λ₂ sweep shows: the text share before training and at every
    λ₂ (``values``: row label → λ₂; ``ours``: the default's row), the smallest λ₂ whose text share exceeds
    ``most`` (the chapter's stated criterion for changing the default) or that none does, and the range of
    the image shares."""
    text = orders["text pairs in order"]
    runs = sorted(values, key=values.get)
    shares = ", ".join(f"{100 * text[label]:.0f} % at λ₂ = {values[label]:g}" for label in runs)
    reached = [label for label in runs if text[label] > most]
    if not reached:
        verdict = f"no λ₂ up to {max(values.values()):g} puts most text pairs in order, so λ₂ stays at our default"
    elif ours in reached:
        verdict = f"our default λ₂ = {values[ours]:g} puts most text pairs in order already"
    else:
        verdict = f"the smallest λ₂ that puts most text pairs in order is {values[reached[0]]:g}"
    image = orders.loc[runs, "image pairs in order"]
    return (f"Text pairs in depth order: {100 * text[before]:.0f} % before training, {shares}; {verdict}. "
            f"Image pairs in depth order: {100 * orders.loc[before, 'image pairs in order']:.0f} % before training, "
            f"{100 * image.min():.0f}–{100 * image.max():.0f} % after.")


def level_margins(head, tree, images: torch.Tensor, labels: torch.Tensor, attack=None,
                  batch_size: int = 128) -> pd.DataFrame:
    """Per level with two classes or more: mean image norm, mean clean log-margin and accuracy, and,
    given an ``attack``, the same under adversarial images made against that level's classifier."""
    from hrvlm.attacks import superclass_attack

    rows = []
    for level in range(tree.depth + 1):
        if head.num_classes(level) < 2:
            continue  # the root: nothing to separate
        clean, adv, norms = [], [], []
        for start in range(0, len(images), batch_size):
            x, y = images[start:start + batch_size], labels[start:start + batch_size]
            target = torch.as_tensor(tree.level_labels(y, level), dtype=torch.long) if level else y
            with torch.no_grad():
                feats = head.encode(x)
                norms.append(feats.float().norm(dim=-1))
                clean.append(logit_margin(head.logits(feats, level).float(), target))
            if attack is not None:
                x_adv, _ = superclass_attack(attack, head, tree, level, x, y)
                with torch.no_grad():
                    adv.append(logit_margin(head.level(level)(x_adv).float(), target))
        clean = torch.cat(clean)
        row = {"level": level, "tree depth": tree.depth - level, "classes": head.num_classes(level),
               "mean image norm": float(torch.cat(norms).mean()), "clean margin": float(clean.mean()),
               "clean accuracy": float((clean > 0).float().mean())}
        if attack is not None:
            adv = torch.cat(adv)
            row.update({"adversarial margin": float(adv.mean()), "robust accuracy": float((adv > 0).float().mean())})
        rows.append(row)
    return pd.DataFrame(rows).set_index("level")


def disk_layout(head, tree) -> tuple[dict, dict, dict]:
    """``(children, positions, depths)`` of the trained class points for :func:`hrvlm.book.plots.plot_poincare_tree`:
    nodes are ``(level, class)``, positions 2-D with each point's own norm, directions from the first
    two principal directions of all points' unit vectors; depth = ``L − level``."""
    points = level_points(head)
    flat = torch.cat(points).double()
    norms = flat.norm(dim=-1, keepdim=True)
    units = flat / norms.clamp_min(1e-12)
    centred = units - units.mean(dim=0)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    plane = units @ v[:2].T
    plane = plane / plane.norm(dim=-1, keepdim=True).clamp_min(1e-12) * norms
    nodes = [(level, i) for level, p in enumerate(points) for i in range(len(p))]
    positions = {node: plane[k].numpy() for k, node in enumerate(nodes)}
    depths = {(level, i): tree.depth - level for level, i in nodes}
    children: dict = {node: [] for node in nodes}
    for level in range(tree.depth):
        for i, parent in enumerate(np.asarray(tree.parents(level))):
            children[(level + 1, int(parent))].append((level, i))
    return children, positions, depths


def reading(norms: pd.DataFrame, margins: pd.DataFrame) -> str:
    """What :func:`norm_order` and :func:`level_margins` (one model) show, in one or two sentences."""
    pairs = norms["parent–child pairs"].fillna(0)
    ordered = float((norms["parent nearer origin"].fillna(0) * pairs).sum())
    total = int(pairs.sum())
    text = (f"{ordered:.0f} of {total} parent–child pairs ({100 * ordered / max(total, 1):.0f} %) have the parent "
            f"nearer the origin; mean text norms run from {norms['mean norm'].iloc[0]:.3f} at the leaves to "
            f"{norms['mean norm'].iloc[-1]:.3f} at the root")
    deepest, shallowest = margins.iloc[0], margins.iloc[-1]
    trend = "larger" if deepest["clean margin"] > shallowest["clean margin"] else "smaller"
    return (text + f". The mean clean margin is {trend} at the leaves ({deepest['clean margin']:.3f}) than at "
            f"level {margins.index[-1]} ({shallowest['clean margin']:.3f}), the shallowest level with two classes.")
