"""The AutoAttack ensembles (Croce & Hein, ICML 2020) and the components they add to APGD.

Versions of :class:`AutoAttack`:

* ``"tecoa"`` (default): APGD-CE then APGD-DLR, what TeCoA and QT-AFT report as "AutoAttack".
* ``"standard"``: the reference suite: APGD-CE, APGD-T (targeted DLR), FAB-T (targeted FAB) and
  Square (5,000 queries), with the reference's settings: 100 iterations, 1 restart, 9 target classes.

Each component attacks only the points still classified correctly, so the output is the per-sample
worst case over the components (the reference's ``run_standard_evaluation``).

APGD-CE/DLR are ours (:mod:`hrvlm.attacks.apgd`).  APGD-T, FAB-T and Square wrap torchattacks 3.5.1,
whose implementations follow the reference code; we pass the reference's settings, not those of
torchattacks' own ``AutoAttack`` (10 iterations, and ``n_classes − 1`` targets, e.g. 99 for CIFAR-100),
a source of its differing numbers (torchattacks #164, #188).  The targets of a point are the classes
with its 2nd … (k+1)-th largest clean logits, k = min(``targets``, C − 1).

Few classes (e.g. PCAM, C = 2): a component runs only when it is defined for C classes, its
``min_classes``: APGD-DLR needs 3 (the 3rd-largest logit), APGD-T 4 (its targeted DLR uses the 4th),
FAB-T and Square 2 (with C = 2 FAB-T's one target is the other class: untargeted FAB).  So binary
datasets get APGD-CE + FAB-T + Square (``standard``) or APGD-CE only (``tecoa``, as the peers do);
:meth:`AutoAttack.components_for` says which run for C classes and ``config()`` records the rule.
"""
from __future__ import annotations

import contextlib
import copy as _copy
import functools

import torch
import torchattacks
from torch import nn

from hrvlm.attacks.apgd import APGD
from hrvlm.attacks.base import Attack, Forward, misclassified
from hrvlm.attacks.threat import ThreatModel

TORCHATTACKS_NORMS = {"linf": "Linf", "l2": "L2"}


class _Logits(nn.Module):
    """``images → logits``, the ``nn.Module`` torchattacks attacks."""

    def __init__(self, logits, device: torch.device):
        super().__init__()
        # a plain function, not a submodule: torchattacks' eval()/train() calls must not touch the
        # caller's modules (attack_context set and restores their modes)
        self.logits = logits
        # torchattacks reads its device from the model's first parameter
        self.anchor = nn.Parameter(torch.empty(0, device=device), requires_grad=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits(images)


@contextlib.contextmanager
def _frozen(forward):
    """``forward``'s parameters without gradients for the duration, restored afterwards.

    torchattacks' FAB calls ``backward()``, which would otherwise add into the parameters' ``.grad``
    (hrvlm's own attacks only take input gradients).  A ``forward`` that is not an ``nn.Module`` has
    no parameters we can see: the caller must not rely on its model's ``.grad`` then.
    """
    params = [p for p in forward.parameters() if p.requires_grad] if isinstance(forward, nn.Module) else []
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


class TorchattacksComponent(Attack):
    """An AutoAttack component computed by torchattacks; subclasses implement :meth:`build`.

    torchattacks seeds torch's global RNG; it runs in a forked RNG so the caller's stream is unchanged,
    and with ``forward``'s parameters frozen so their ``.grad`` is unchanged too.
    ``seed=None`` draws the seed from the global RNG.  Results are projected onto the threat model
    (torchattacks can overshoot ε by float round-off).
    """

    def __init__(self, threat: ThreatModel, restarts: int = 1, *, seed: int | None = 0,
                 autocast: torch.dtype | None = None):
        super().__init__(threat, seed=seed, autocast=autocast)
        if threat.box != (0.0, 1.0):
            raise ValueError(f"{self.name} works on images in the [0, 1] box, got box={threat.box}")
        if restarts < 1:
            raise ValueError(f"need restarts >= 1, got {restarts}")
        self.restarts = int(restarts)

    def build(self, model: nn.Module, num_classes: int, seed: int) -> torchattacks.attack.Attack:
        raise NotImplementedError

    def common(self) -> dict:
        """torchattacks arguments every component shares."""
        return {"norm": TORCHATTACKS_NORMS[self.threat.norm], "eps": self.threat.eps, "n_restarts": self.restarts}

    def params(self) -> dict:
        return {"restarts": self.restarts, "min_classes": self.min_classes,
                "implementation": f"torchattacks-{torchattacks.__version__}"}

    def perturb(self, forward: Forward, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        x = images.float()
        if self.threat.eps == 0:
            return images.clone()
        logits = functools.partial(self.logits, forward)
        with torch.no_grad():
            num_classes = logits(x[:1]).shape[1]
        if num_classes < self.min_classes:
            raise ValueError(f"{self.name} needs >= {self.min_classes} classes, the classifier has {num_classes}")
        seed = int(torch.randint(2**31 - 1, ())) if self.seed is None else int(self.seed)
        with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []), _frozen(forward):
            adv = self.build(_Logits(logits, x.device), num_classes, seed)(x, labels)
        delta = self.threat.project(adv.detach().float() - x, x)
        return self.threat.apply(x, delta).to(images.dtype)


class APGDT(TorchattacksComponent):
    """Targeted APGD on the targeted DLR loss, one run per target class (AutoAttack's APGD-T)."""

    name = "apgd-t"
    min_classes = 4

    def __init__(self, threat: ThreatModel = ThreatModel(), steps: int = 100, restarts: int = 1, targets: int = 9,
                 rho: float = 0.75, **kw):
        super().__init__(threat, restarts, **kw)
        if steps < 1 or targets < 1:
            raise ValueError(f"need steps >= 1 and targets >= 1, got {steps}, {targets}")
        self.steps, self.targets, self.rho = int(steps), int(targets), float(rho)

    def build(self, model, num_classes, seed):
        # torchattacks runs n_classes - 1 targets
        return torchattacks.APGDT(model, steps=self.steps, rho=self.rho, seed=seed,
                                  n_classes=min(self.targets, num_classes - 1) + 1, **self.common())

    def params(self) -> dict:
        return {"loss": "dlr-targeted", "steps": self.steps, "targets": self.targets, "rho": self.rho,
                **super().params()}


class FABT(TorchattacksComponent):
    """Targeted FAB (minimal-distortion boundary attack), one run per target class (AutoAttack's FAB-T)."""

    name = "fab-t"

    def __init__(self, threat: ThreatModel = ThreatModel(), steps: int = 100, restarts: int = 1, targets: int = 9,
                 **kw):
        super().__init__(threat, restarts, **kw)
        if steps < 1 or targets < 1:
            raise ValueError(f"need steps >= 1 and targets >= 1, got {steps}, {targets}")
        self.steps, self.targets = int(steps), int(targets)

    def build(self, model, num_classes, seed):
        return torchattacks.FAB(model, steps=self.steps, seed=seed, multi_targeted=True,
                                n_classes=min(self.targets, num_classes - 1) + 1, **self.common())

    def params(self) -> dict:
        return {"steps": self.steps, "targets": self.targets, **super().params()}


class Square(TorchattacksComponent):
    """Square Attack: random search on the margin loss, no gradients (catches gradient masking)."""

    name = "square"

    def __init__(self, threat: ThreatModel = ThreatModel(), queries: int = 5000, restarts: int = 1,
                 p_init: float = 0.8, **kw):
        super().__init__(threat, restarts, **kw)
        if queries < 1:
            raise ValueError(f"need queries >= 1, got {queries}")
        self.queries, self.p_init = int(queries), float(p_init)

    def build(self, model, num_classes, seed):
        return torchattacks.Square(model, n_queries=self.queries, p_init=self.p_init, loss="margin", seed=seed,
                                   **self.common())

    def perturb(self, forward, images, labels):
        with torch.no_grad():  # gradient-free: no autograd graphs
            return super().perturb(forward, images, labels)

    def params(self) -> dict:
        return {"loss": "margin", "queries": self.queries, "p_init": self.p_init, **super().params()}


class AutoAttack(Attack):
    """An AutoAttack ``version`` ("tecoa" or "standard", see the module docstring): its components in
    sequence, each on the points still classified correctly.

    ``steps`` and ``restarts`` go to every gradient-based component; ``queries`` (Square) and ``targets``
    (APGD-T, FAB-T) exist in ``standard`` only.  Points misclassified before any attack are returned
    unchanged; components not defined for the number of classes are skipped (:meth:`components_for`).
    """

    name = "autoattack"
    VERSIONS = ("tecoa", "standard")

    def __init__(self, threat: ThreatModel = ThreatModel(), version: str = "tecoa", steps: int = 100,
                 restarts: int = 1, queries: int | None = None, targets: int | None = None, *,
                 seed: int | None = 0, autocast: torch.dtype | None = None):
        super().__init__(threat, seed=seed, autocast=autocast)
        if version not in self.VERSIONS:
            raise ValueError(f"unknown AutoAttack version {version!r}; known: {list(self.VERSIONS)}")
        shared = {"seed": seed, "autocast": autocast}
        components = [APGD(threat, "ce", steps, restarts, **shared)]
        if version == "tecoa":
            if queries is not None or targets is not None:
                raise ValueError("queries and targets are settings of AutoAttack version='standard' only "
                                 "(its Square and targeted components); 'tecoa' runs APGD-CE and APGD-DLR")
            components.append(APGD(threat, "dlr", steps, restarts, **shared))
        else:
            queries, targets = 5000 if queries is None else queries, 9 if targets is None else targets
            components += [APGDT(threat, steps, restarts, targets, **shared),
                           FABT(threat, steps, restarts, targets, **shared),
                           Square(threat, queries, restarts, **shared)]
        self.version, self.components = version, components
        self.steps, self.restarts, self.queries, self.targets = int(steps), int(restarts), queries, targets
        self.name = "autoattack" if version == "tecoa" else f"autoattack-{version}"

    def stopping_early(self) -> "AutoAttack":
        """A copy whose APGD components stop at each image's first misclassified iterate (the
        torchattacks components run as they are)."""
        copy = _copy.copy(self)
        copy.components = [a.stopping_early() for a in self.components]
        return copy

    def components_for(self, num_classes: int) -> list[str]:
        """Names of the components that run on a ``num_classes``-way classifier, in order."""
        return [a.name for a in self.components if num_classes >= a.min_classes]

    def params(self) -> dict:
        out = {"autoattack_version": self.version, "attacks": [a.name for a in self.components],
               "min_classes": {a.name: a.min_classes for a in self.components},
               "steps": self.steps, "restarts": self.restarts}
        if any(getattr(a, "stop_on_success", False) for a in self.components):
            out["stop_on_success"] = True
        if self.version == "standard":
            out.update(queries=self.queries, targets=self.targets,
                       implementation=f"apgd-ce: hrvlm; others: torchattacks-{torchattacks.__version__}")
        return out

    def perturb(self, forward: Forward, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            logits = self.logits(forward, images)
        robust = ~misclassified(logits, labels)
        adv = images.clone()
        for attack in self.components:
            if logits.shape[1] < attack.min_classes:
                continue
            # one host synchronisation per component (not per step): attack only the robust points
            index = robust.nonzero().squeeze(1)
            if index.numel() == 0:
                break
            sub = attack.perturb(forward, images[index], labels[index])
            with torch.no_grad():
                fooled = misclassified(self.logits(forward, sub), labels[index])
            adv[index[fooled]] = sub[fooled]
            robust[index[fooled]] = False
        return adv
