"""Projected gradient ascent on any differentiable per-sample objective, and the attacks built on it.

:func:`pgd_maximize` is the one PGD loop in hrvlm: :class:`PGD`, :class:`MomentumPGD`, :class:`CW`,
the hierarchical perturbations and the training attacks of the methods all call it.
"""
from __future__ import annotations

import copy as _copy
from typing import Callable

import torch

from hrvlm.attacks.base import Attack, Forward, autocast_context, ce_loss, make_generator, margin_loss, misclassified
from hrvlm.attacks.threat import ThreatModel

# objective(perturbed inputs) -> per-sample loss [B], or (loss [B], success [B] bool)
Objective = Callable[[torch.Tensor], "torch.Tensor | tuple[torch.Tensor, torch.Tensor]"]


def _split(out) -> tuple[torch.Tensor, torch.Tensor | None]:
    loss, success = out if isinstance(out, tuple) else (out, None)
    return loss.float(), success


def pgd_maximize(objective: Objective, images: torch.Tensor, threat: ThreatModel, steps: int,
                 step_size: float, random_start: bool = True, momentum: float | None = None,
                 restarts: int = 1, keep_best: bool = True, generator: torch.Generator | None = None,
                 autocast: torch.dtype | None = None, start: torch.Tensor | None = None,
                 stop_on_success: bool = False) -> torch.Tensor:
    """Maximise ``objective`` over the threat model's admissible set around ``images``; returns ``x + δ``.

    Each step moves ``δ`` (kept in float32) by ``step_size`` along the threat model's steepest-ascent
    direction (sign for L∞, normalised gradient for L2), then projects.  With ``momentum`` μ the step
    follows a velocity ``v ← dir(μ·v + dir(∇))`` (FARE's and QT-AFT's training PGD).

    ``keep_best`` (evaluation): every iterate of every restart, the random start and the final one
    included, is a candidate, and per sample the best is kept — first by ``success`` (e.g.
    "misclassified") when the objective returns it, then by loss.  Since the iterates of ``steps``
    steps are a prefix of those of ``steps + 1``, more steps never make the attack weaker.  Without
    ``keep_best`` (training) the last iterate is returned and the objective may return a scalar.

    ``stop_on_success`` (with ``keep_best`` and an objective returning ``success``): a sample leaves the
    loop at its first successful iterate, which is what it returns; the others go on as before (each
    sample's iterates depend on its own gradient only, and every restart still draws the whole batch's
    start, so the random stream is the same).  Which samples succeed is therefore the same as without
    it, and the work is what the unbroken samples need (a PGD-20 evaluation of a model with 15 % robust
    accuracy runs a few steps per image instead of 20).  Only for callers that read nothing but success:
    the returned image is just across the boundary rather than the highest-loss success.  The objective
    is then called as ``objective(adv, index)`` with the batch positions ``index`` of the rows of
    ``adv``; dropping samples costs one host synchronisation per step.

    ``start`` is the first restart's δ instead of a draw (projected first): another implementation's
    random start, so that two PGDs can be compared from the same point; later restarts draw their own.

    Only input gradients are computed (``torch.autograd.grad`` w.r.t. δ; parameters' ``.grad`` are
    untouched), and without ``stop_on_success`` nothing in the loop synchronises with the host.
    """
    if steps < 0 or restarts < 1:
        raise ValueError(f"need steps >= 0 and restarts >= 1, got steps={steps}, restarts={restarts}")
    if restarts > 1 and not keep_best:
        raise ValueError("restarts > 1 needs keep_best=True (otherwise only the last restart would count)")
    if stop_on_success and not keep_best:
        raise ValueError("stop_on_success needs keep_best=True (a stopped sample returns its successful iterate)")
    if step_size < 0:
        raise ValueError(f"step_size must be >= 0, got {step_size}")
    x = images.detach().float()
    best_adv = x.clone()
    best_loss = torch.full(x.shape[:1], float("-inf"), device=x.device)
    best_success = torch.zeros(x.shape[:1], dtype=torch.bool, device=x.device)
    shape = (-1,) + (1,) * (x.dim() - 1)

    def evaluate(delta: torch.Tensor, with_grad: bool, index: torch.Tensor | None):
        """Loss (and success, or None) of the rows ``index`` (None: all) at ``δ``; updates the best."""
        rows = x if index is None else x[index]
        adv = threat.apply(rows, delta)
        with torch.set_grad_enabled(with_grad), autocast_context(x.device, autocast):
            loss, success = _split(objective(adv) if index is None else objective(adv, index))
        if keep_best:
            if loss.shape != rows.shape[:1]:
                raise ValueError(f"keep_best needs a per-sample loss of shape [{rows.shape[0]}], got "
                                 f"{list(loss.shape)}; return loss per sample or pass keep_best=False")
            if stop_on_success and success is None:
                raise ValueError("stop_on_success needs an objective that returns (loss, success)")
            with torch.no_grad():
                at = slice(None) if index is None else index
                success = torch.zeros_like(loss, dtype=torch.bool) if success is None else success.detach()
                was_success, was_loss = best_success[at], best_loss[at]
                better = (success & ~was_success) | ((success == was_success) & (loss.detach() > was_loss))
                best_adv[at] = torch.where(better.view(shape), adv.detach(), best_adv[at])
                best_loss[at] = torch.where(better, loss.detach(), was_loss)
                best_success[at] = was_success | success
        return loss, success

    for restart in range(restarts):
        if restart == 0 and start is not None:
            delta = threat.project(start.detach().float(), x)
        else:
            delta = threat.random_start(x, generator) if random_start else torch.zeros_like(x)
        index = None
        if stop_on_success:  # samples that succeeded in an earlier restart are done
            index = (~best_success).nonzero().squeeze(1)
            delta = delta[index]
        velocity = None if momentum is None else torch.zeros_like(delta)
        for _ in range(steps):
            if index is not None and index.numel() == 0:
                break
            delta.requires_grad_(True)
            loss, success = evaluate(delta, True, index)
            (grad,) = torch.autograd.grad(loss.sum(), delta)
            delta = delta.detach()
            if index is not None:  # the successful samples stop at this iterate
                going = ~success
                index, delta, grad = index[going], delta[going], grad[going]
                velocity = None if velocity is None else velocity[going]
            rows = x if index is None else x[index]
            with torch.no_grad():
                direction = threat.direction(grad)
                if velocity is not None:
                    velocity = threat.direction(momentum * velocity + direction)
                    direction = velocity
                delta = threat.project(delta + step_size * direction, rows)
        if keep_best and (index is None or index.numel() > 0):
            evaluate(delta, False, index)  # the final iterate is a candidate too
    adv = best_adv if keep_best else threat.apply(x, delta)
    return adv.to(images.dtype)


class PGD(Attack):
    """Projected gradient descent on the cross-entropy (Madry et al.), worst case kept per sample.

    ``step_size`` defaults to ε/4.  Set it explicitly to follow a protocol (TeCoA evaluates with step
    1/255).  ``restarts`` random restarts; the per-sample worst case is kept across steps and restarts.
    ``stop_on_success``: an image stops at its first misclassified iterate (:func:`pgd_maximize`): the
    same images are misclassified, in a fraction of the time; :meth:`stopping_early` gives that copy.
    """

    name = "pgd"
    momentum: float | None = None

    def __init__(self, threat: ThreatModel = ThreatModel(), steps: int = 10, step_size: float | None = None,
                 random_start: bool = True, restarts: int = 1, *, seed: int | None = 0,
                 autocast: torch.dtype | None = None, stop_on_success: bool = False):
        super().__init__(threat, seed=seed, autocast=autocast)
        self.steps = int(steps)
        self.step_size = threat.eps / 4 if step_size is None else float(step_size)
        self.random_start = bool(random_start)
        self.restarts = int(restarts)
        self.stop_on_success = bool(stop_on_success)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return ce_loss(logits, labels)

    def perturb(self, forward: Forward, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        def objective(adv, index=None):
            rows = labels if index is None else labels[index]
            logits = forward(adv).float()
            return self.loss(logits, rows), misclassified(logits, rows)

        return pgd_maximize(objective, images, self.threat, self.steps, self.step_size,
                            random_start=self.random_start, momentum=self.momentum, restarts=self.restarts,
                            generator=make_generator(self.seed, images.device), autocast=self.autocast,
                            stop_on_success=self.stop_on_success)

    def stopping_early(self) -> "PGD":
        copy = _copy.copy(self)
        copy.stop_on_success = True
        return copy

    def params(self) -> dict:
        # stop_on_success only when set, so that the records of the plain attack keep their keys
        return {"loss": "ce", "steps": self.steps, "step_size": self.step_size, "restarts": self.restarts,
                "random_start": self.random_start, "momentum": self.momentum,
                **({"stop_on_success": True} if self.stop_on_success else {})}


class MomentumPGD(PGD):
    """PGD with a normalised-gradient momentum (FARE's and QT-AFT's attack, μ = 0.9)."""

    name = "mpgd"

    def __init__(self, threat: ThreatModel = ThreatModel(), steps: int = 10, step_size: float | None = None,
                 random_start: bool = True, restarts: int = 1, momentum: float = 0.9, **kw):
        super().__init__(threat, steps, step_size, random_start, restarts, **kw)
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.momentum = float(momentum)


class CW(PGD):
    """Carlini–Wagner margin loss on the logits, optimised by PGD within the ε-ball (as TeCoA does).

    ``kappa`` caps the margin (TeCoA: 50, in units of zero-shot logits, i.e. 100·cosine).
    """

    name = "cw"

    def __init__(self, threat: ThreatModel = ThreatModel(), steps: int = 10, step_size: float | None = None,
                 random_start: bool = True, restarts: int = 1, kappa: float = 50.0, **kw):
        super().__init__(threat, steps, step_size, random_start, restarts, **kw)
        self.kappa = float(kappa)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return margin_loss(logits, labels, self.kappa)

    def params(self) -> dict:
        return {**super().params(), "loss": "margin", "kappa": self.kappa}
