"""Adversarial attacks on image classifiers in [0, 1] pixel space, sharing one interface.

``attack = build_attack("pgd", eps=1/255, steps=20)``; ``adv = attack(forward, images, labels)`` where
``forward`` maps images in [0, 1] to logits (e.g. a :class:`hrvlm.zeroshot.ZeroShotClassifier`);
``attack.config()`` is the full, recordable configuration.  The ε-ball, box and random-start rules live
in :class:`ThreatModel` only; every PGD-like loop is :func:`pgd_maximize`.
"""
from __future__ import annotations

from .apgd import APGD, AutoAttack
from .base import Attack, ce_loss, dlr_loss, margin_loss
from .hierarchical import (HierarchicalClassifier, level_weights, superclass_attack, text_perturbation,
                           transfer_outcome, transfer_summary, universal_hierarchical_perturbation)
from .pgd import CW, PGD, MomentumPGD, pgd_maximize
from .threat import ThreatModel


def _apgd(loss):
    return lambda threat, **kw: APGD(threat, loss=loss, **kw)


# name -> factory(threat, **settings)
ATTACKS = {
    "pgd": PGD,
    "mpgd": MomentumPGD,
    "cw": CW,
    "apgd-ce": _apgd("ce"),
    "apgd-dlr": _apgd("dlr"),
    "autoattack": AutoAttack,
}


def build_attack(name: str, eps: float, norm: str = "linf", **settings) -> Attack:
    """The attack ``name`` (see :data:`ATTACKS`) with an ``eps``-ball in ``norm``; ``settings`` go to its class.

    ``eps`` is in [0, 1] pixel units: ``1/255``, not ``1``.
    """
    if name not in ATTACKS:
        raise KeyError(f"unknown attack {name!r}; known attacks: {sorted(ATTACKS)}")
    return ATTACKS[name](ThreatModel(norm, eps), **settings)


__all__ = ["APGD", "ATTACKS", "Attack", "AutoAttack", "CW", "HierarchicalClassifier", "MomentumPGD", "PGD",
           "ThreatModel", "build_attack", "ce_loss", "dlr_loss", "level_weights", "margin_loss", "pgd_maximize",
           "superclass_attack", "text_perturbation", "transfer_outcome", "transfer_summary",
           "universal_hierarchical_perturbation"]
