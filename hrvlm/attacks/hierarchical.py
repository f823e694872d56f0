"""Hierarchical threat settings (HRVLM, Fig. 1) and HRVLM's training perturbations.

A class tree (:class:`hrvlm.hierarchy.trees.Tree`: ``names[level]`` readable names, ``level_labels(y, level)``;
level 0 = leaves) gives one classifier per level: a :class:`hrvlm.heads.Head` built over ``tree.names``
(``build_head(spec, model, tokenizer, tree.names, templates)``), whatever its kind, so the attacks
below hit the classifier a method deploys.  On top of the ordinary attacks:

(a) :func:`superclass_attack` attacks the level-``l`` classifier with the images' level-``l`` labels
    (e.g. "mammal" instead of "kit fox"); at level 0 it *is* the leaf attack.
(b) :func:`transfer_outcome` / :func:`transfer_summary` score those adversaries with the leaf classifier.
(c) :func:`universal_hierarchical_perturbation`: one δ maximising ``Σ_l ω_l CE_l`` over all levels.
(HRVLM's text perturbation δ_T is maximised jointly with δ: ``hrvlm.methods.hrvlm.HRVLM.joint_perturbation``.)
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import nn

from hrvlm.heads import Head

from hrvlm.attacks.base import Attack, attack_context, ce_loss, make_generator
from hrvlm.attacks.pgd import pgd_maximize
from hrvlm.attacks.threat import ThreatModel


def level_weights(depth: int) -> list[float]:
    """HRVLM's ``ω_l = 1 − l/(L+1)`` for levels ``l = 0..L`` (``depth`` = L): leaves weigh most."""
    if depth < 0:
        raise ValueError(f"depth must be >= 0, got {depth}")
    return [1 - level / (depth + 1) for level in range(depth + 1)]


def _level_labels(tree, leaf_labels: torch.Tensor, level: int) -> torch.Tensor:
    labels = tree.level_labels(leaf_labels, level)
    return torch.as_tensor(labels, dtype=torch.long, device=leaf_labels.device)


def superclass_attack(attack: Attack, classifier: Head, tree, level: int,
                      images: torch.Tensor, leaf_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Attack the level-``level`` head of ``classifier`` with the images' level labels; returns ``(adv, level_labels)``.

    At level 0 this is exactly ``attack(classifier.level(0), images, leaf_labels)``.  A level with a
    single class (the root) has nothing to attack and raises.
    """
    head = classifier.level(level)
    if head.num_classes < 2:
        raise ValueError(f"level {level} has a single class; a superclass attack needs >= 2 classes")
    labels = _level_labels(tree, leaf_labels, level)
    return attack(head, images, labels), labels


@torch.no_grad()
def transfer_outcome(leaf_forward: Callable, images: torch.Tensor, adv_images: torch.Tensor,
                     leaf_labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sample leaf-level correctness on clean and (superclass-)adversarial images (bool tensors)."""
    with attack_context(leaf_forward):
        clean = leaf_forward(images).argmax(dim=1) == leaf_labels
        adv = leaf_forward(adv_images).argmax(dim=1) == leaf_labels
    return {"clean_correct": clean, "adv_correct": adv}


def transfer_summary(clean_correct: torch.Tensor, adv_correct: torch.Tensor) -> dict[str, float]:
    """Leaf accuracy under transferred adversaries and the transfer success rate.

    success rate = (# correct on the clean image and wrong on the adversarial one) / (# correct on the
    clean image): the fraction of the leaf classifier's correct decisions that the superclass
    adversaries overturn (NaN when no image is classified correctly clean).
    """
    clean, adv = clean_correct.bool(), adv_correct.bool()
    n, n_clean = clean.numel(), int(clean.sum())
    flipped = int((clean & ~adv).sum())
    return {"n": n, "clean_accuracy": n_clean / n if n else math.nan,
            "accuracy": float(adv.sum()) / n if n else math.nan,
            "success_rate": flipped / n_clean if n_clean else math.nan}


def universal_hierarchical_perturbation(forward_levels, level_labels: Sequence[torch.Tensor],
                                        images: torch.Tensor, threat: ThreatModel, steps: int = 3,
                                        step_size: float | None = None, weights: Sequence[float] | None = None,
                                        random_start: bool = True, keep_best: bool = False,
                                        seed: int | None = 0, autocast: torch.dtype | None = None) -> torch.Tensor:
    """One image perturbation δ for all levels: PGD on ``Σ_l ω_l CE(logits_l, y_l)`` (HRVLM's HITA, Eq. 10).

    ``forward_levels``: images → list of per-level logits (a :class:`~hrvlm.heads.Head`, which
    encodes each image once) or a sequence of per-level forwards.  ``weights`` default to
    :func:`level_weights`; HRVLM trains with ε = α = 1/255 and 3 steps (``step_size`` defaults to ε).
    Returns the adversarial images (the last iterate unless ``keep_best``).
    """
    if isinstance(forward_levels, Sequence):
        forwards = list(forward_levels)
        target = nn.ModuleList(f for f in forwards if isinstance(f, nn.Module))  # for eval semantics

        def levels(x):
            return [f(x) for f in forwards]
    else:
        target = levels = forward_levels
    level_labels = [torch.as_tensor(y, dtype=torch.long, device=images.device) for y in level_labels]
    weights = level_weights(len(level_labels) - 1) if weights is None else list(weights)
    if len(weights) != len(level_labels):
        raise ValueError(f"{len(weights)} weights for {len(level_labels)} levels")

    def objective(adv):
        logits = levels(adv)
        if len(logits) != len(level_labels):
            raise ValueError(f"the forward returned {len(logits)} levels but {len(level_labels)} label sets were given")
        return sum(w * ce_loss(z.float(), y) for w, z, y in zip(weights, logits, level_labels))

    with attack_context(target):
        adv = pgd_maximize(objective, images, threat, steps, threat.eps if step_size is None else step_size,
                           random_start=random_start, keep_best=keep_best,
                           generator=make_generator(seed, images.device), autocast=autocast)
    return adv.detach()

