"""What the adversarial fine-tuning methods share: the training attack, frozen references, setting checks.

TeCoA, PMG-AFT, FARE and QT-AFT each maximise their own objective with PGD in an L∞ ball of radius
ε = ``ctx.eps`` (the loop's training ε) around the clean batch, through :func:`hrvlm.attacks.pgd_maximize`
(the one PGD loop; its threat model is the one home of ε-balls and the [0, 1] box).  The attack's
settings:

* ``steps`` — PGD iterations;
* ``step_size`` — α as a *fraction of ε*, so that each authors' recipe is reproduced at their own ε
  (TeCoA: α = ε = 1/255; FARE and QT-AFT: α = 1/255 at ε = 4/255, i.e. ε/4) and the attack keeps its
  geometry when a profile or the loop changes ε;
* ``momentum`` — ``None`` for plain sign-PGD (TeCoA, PMG-AFT), μ for FARE's normalised-gradient
  momentum (0.9);
* ``random_start`` — a uniform start in the ε-ball (all four authors' codes start randomly).

The random start draws from torch's global generator, whose state the loop seeds and saves for exact
resume.  The attack runs in whatever BatchNorm mode the loop has put the model in, and never touches
parameters' ``.grad`` (``pgd_maximize`` differentiates with respect to the perturbation only).
"""
from __future__ import annotations

import contextlib
import copy
import math
from typing import Any, Callable

import torch
from torch import nn

from hrvlm.attacks import ThreatModel, pgd_maximize
from hrvlm.attacks.base import autocast_context

from hrvlm.methods.base import Method, TrainContext


def frozen_copy(model: nn.Module) -> nn.Module:
    """The original model as the methods compare against it: a deep copy, in eval mode, without gradients."""
    original = copy.deepcopy(model)
    original.eval()
    original.requires_grad_(False)
    return original


def unchecked(*models: nn.Module) -> contextlib.ExitStack:
    """Skip the models' per-call input-range check (a host synchronisation each call): the loop checks
    its data once, and adversarial iterates are clamped to [0, 1] by the threat model."""
    stack = contextlib.ExitStack()
    for model in models:
        if hasattr(model, "unchecked"):
            stack.enter_context(model.unchecked())
    return stack


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class AdversarialMethod(Method):
    """Base of the methods that fine-tune the image tower against their own PGD attack."""

    defaults = {"steps": 2, "step_size": 1.0, "momentum": None, "random_start": True}

    def require(self, name: str, ok: bool, what: str) -> None:
        """A ``ValueError`` naming the method, the setting, its value and what it must be, unless ``ok``."""
        if not ok:
            raise ValueError(f"method {self.name!r}: setting {name}={self.settings[name]!r} is invalid; "
                             f"it must be {what}")

    def require_number(self, name: str, low: float = 0.0, *, strict: bool = False, high: float | None = None) -> None:
        value = self.settings[name]
        ok = is_number(value) and (value > low if strict else value >= low) and (high is None or value <= high)
        bound = f"{'>' if strict else '>='} {low}" + ("" if high is None else f" and <= {high}")
        self.require(name, ok, f"a finite number {bound}")

    def check_settings(self) -> None:
        s = self.settings
        self.require("steps", isinstance(s["steps"], int) and not isinstance(s["steps"], bool) and s["steps"] >= 0,
                     "an integer >= 0 (PGD iterations; 0 keeps the random start only)")
        self.require_number("step_size", strict=True)
        self.require("momentum", s["momentum"] is None or (is_number(s["momentum"]) and 0 <= s["momentum"] < 1),
                     "null (plain sign-PGD) or a number in [0, 1)")
        self.require("random_start", isinstance(s["random_start"], bool), "true or false")

    def setup(self, ctx: TrainContext) -> None:
        super().setup(ctx)
        self.threat = ThreatModel("linf", ctx.eps)

    def autocast(self):
        """The loop's forward precision (bf16 / fp16 autocast, or float32) for the method's forwards."""
        return autocast_context(self.ctx.device, self.ctx.autocast)

    def attack(self, objective: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
               *frozen: nn.Module) -> torch.Tensor:
        """Adversarial images maximising ``objective`` (images → per-sample loss ``[B]``) around ``images``;
        ``frozen`` are further models the objective runs (their input checks are skipped too)."""
        s = self.settings
        with unchecked(self.ctx.model, *frozen):
            adv = pgd_maximize(objective, images, self.threat, s["steps"], s["step_size"] * self.threat.eps,
                               random_start=s["random_start"], momentum=s["momentum"], keep_best=False,
                               autocast=self.ctx.attack_autocast)
        return adv.detach()
