"""Adversarial attacks on image classifiers in [0, 1] pixel space, sharing one interface.

``attack = build_attack("pgd", eps=1/255, steps=20)``; ``adv = attack(forward, images, labels)`` where
``forward`` maps images in [0, 1] to logits (e.g. ``head.level(l)`` of a :class:`hrvlm.heads.Head`);
``attack.config()`` is the full, recordable configuration.  The ε-ball, box and random-start rules live
in :class:`ThreatModel` only; every PGD-like loop is :func:`pgd_maximize`.
"""
from __future__ import annotations

import functools
import inspect

from hrvlm.attacks.apgd import APGD
from hrvlm.attacks.autoattack import APGDT, FABT, AutoAttack, Square
from hrvlm.attacks.base import Attack, ce_loss, dlr_loss, margin_loss
from hrvlm.attacks.hierarchical import (level_weights, superclass_attack,
                           transfer_outcome, transfer_summary, universal_hierarchical_perturbation)
from hrvlm.attacks.pgd import CW, PGD, MomentumPGD, pgd_maximize
from hrvlm.attacks.threat import ThreatModel


# name -> factory(threat, **settings); a name is the ``config()["name"]`` of the attack it builds
ATTACKS = {
    "pgd": PGD,
    "mpgd": MomentumPGD,
    "cw": CW,
    "apgd-ce": functools.partial(APGD, loss="ce"),
    "apgd-dlr": functools.partial(APGD, loss="dlr"),
    "autoattack": AutoAttack,
    "autoattack-standard": functools.partial(AutoAttack, version="standard"),
}


def _factory(name: str):
    if name not in ATTACKS:
        raise KeyError(f"unknown attack {name!r}; known attacks: {sorted(ATTACKS)}")
    return ATTACKS[name]


def attack_settings(name: str) -> list[str]:
    """The settings (keyword arguments besides the threat model) that attack ``name`` accepts."""
    factory = _factory(name)
    fixed = getattr(factory, "keywords", {})  # a partial's settings are fixed by the name (APGD's loss)
    settings = []
    for cls in getattr(factory, "func", factory).__mro__:  # follow **kw up to the class that takes them
        if "__init__" not in vars(cls):
            continue
        params = list(inspect.signature(cls.__init__).parameters.values())[2:]  # after self, threat
        settings += [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
                     and p.name not in fixed and p.name not in settings]
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return settings


def build_attack(name: str, eps: float, norm: str = "linf", **settings) -> Attack:
    """The attack ``name`` (see :data:`ATTACKS`) with an ``eps``-ball in ``norm``; ``settings`` go to its class.

    ``eps`` is in [0, 1] pixel units: ``1/255``, not ``1``.  A setting the attack does not take is an
    error (e.g. ``step_size`` for APGD and AutoAttack, which adapt their step sizes).
    """
    factory = _factory(name)
    unknown = sorted(set(settings) - set(attack_settings(name)))
    if unknown:
        raise ValueError(f"attack {name!r} takes no setting {', '.join(map(repr, unknown))}; "
                         f"its settings are: {', '.join(attack_settings(name))}")
    return factory(ThreatModel(norm, eps), **settings)


__all__ = ["APGD", "APGDT", "ATTACKS", "Attack", "AutoAttack", "CW", "FABT",
           "MomentumPGD", "PGD", "Square", "ThreatModel", "attack_settings", "build_attack", "ce_loss", "dlr_loss",
           "level_weights", "margin_loss", "pgd_maximize", "superclass_attack",
           "transfer_outcome", "transfer_summary", "universal_hierarchical_perturbation"]
