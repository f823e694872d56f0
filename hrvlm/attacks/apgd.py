"""APGD (Croce & Hein, ICML 2020) with the cross-entropy or the DLR loss.

Our own implementation of the published algorithm (not a copy of the reference code): a momentum
PGD whose step size starts at 2ε and is halved, per sample, at checkpoints ``w_j = ⌈p_j·N⌉``
(``p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06)``) when since the last
checkpoint (1) the loss rose in fewer than ρ = 75 % of the steps, or (2) the step was not halved at
the last checkpoint and the best loss has not improved; a halving restarts from the best point.
Per-sample decisions are tensors, so the loop never synchronises with the host.

The AutoAttack ensembles built on it are in :mod:`hrvlm.attacks.autoattack`.
"""
from __future__ import annotations

import copy as _copy

import torch

from hrvlm.attacks.base import Attack, Forward, ce_loss, dlr_loss, make_generator, misclassified
from hrvlm.attacks.threat import ThreatModel

LOSSES = {"ce": ce_loss, "dlr": dlr_loss}


def checkpoints(steps: int) -> list[int]:
    """APGD's step-size checkpoints ``⌈p_j · steps⌉`` (iteration counts, increasing, ≤ steps)."""
    p, points = [0, 22], []  # in percent, so that the arithmetic is exact
    while p[-1] < 100:
        points.append(-(-p[-1] * steps // 100))
        p.append(p[-1] + max(p[-1] - p[-2] - 3, 6))
    return sorted(set(w for w in points if 0 < w <= steps))


class APGD(Attack):
    """Auto-PGD with the cross-entropy (``loss="ce"``) or DLR (``loss="dlr"``) loss.

    ``stop_on_success``: an image leaves the loop at its first misclassified iterate (every decision of
    APGD is per sample, so the others run as before and the same images end misclassified); for callers
    that read only that (:meth:`stopping_early`).  It costs one host synchronisation per step.
    """

    name = "apgd"

    def __init__(self, threat: ThreatModel = ThreatModel(), loss: str = "ce", steps: int = 100,
                 restarts: int = 1, rho: float = 0.75, *, seed: int | None = 0, autocast: torch.dtype | None = None,
                 stop_on_success: bool = False):
        super().__init__(threat, seed=seed, autocast=autocast)
        if loss not in LOSSES:
            raise ValueError(f"unknown APGD loss {loss!r}; use one of {sorted(LOSSES)}")
        if steps < 1 or restarts < 1:
            raise ValueError(f"need steps >= 1 and restarts >= 1, got {steps}, {restarts}")
        self.loss_name, self.steps, self.restarts, self.rho = loss, int(steps), int(restarts), float(rho)
        self.name = f"apgd-{loss}"
        self.min_classes = 3 if loss == "dlr" else 2  # DLR needs the third-largest logit
        self.stop_on_success = bool(stop_on_success)

    def stopping_early(self) -> "APGD":
        copy = _copy.copy(self)
        copy.stop_on_success = True
        return copy

    def params(self) -> dict:
        return {"loss": self.loss_name, "steps": self.steps, "restarts": self.restarts, "rho": self.rho,
                "step_size": "2*eps, halved at checkpoints",
                **({"stop_on_success": True} if self.stop_on_success else {})}

    def perturb(self, forward: Forward, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        x_all = images.float()
        threat, loss_fn = self.threat, LOSSES[self.loss_name]
        shape = (-1,) + (1,) * (x_all.dim() - 1)
        generator = make_generator(self.seed, x_all.device)
        marks = set(checkpoints(self.steps))

        # output: per sample, first a misclassified iterate, else the highest-loss one
        out_adv, out_loss = x_all.clone(), torch.full(x_all.shape[:1], float("-inf"), device=x_all.device)
        out_success = torch.zeros(x_all.shape[:1], dtype=torch.bool, device=x_all.device)

        for _ in range(self.restarts):
            start = threat.random_start(x_all, generator)  # the whole batch's draw: the same random stream
            index = (~out_success).nonzero().squeeze(1) if self.stop_on_success else None
            x, y = (x_all, labels) if index is None else (x_all[index], labels[index])
            delta = start if index is None else start[index]

            def evaluate(delta, with_grad):
                delta = delta.detach().requires_grad_(with_grad)
                with torch.set_grad_enabled(with_grad):
                    logits = self.logits(forward, threat.apply(x, delta))
                    loss = loss_fn(logits, y)
                    grad = torch.autograd.grad(loss.sum(), delta)[0] if with_grad else None
                return loss.detach(), misclassified(logits, y).detach(), grad

            def keep(delta, loss, success):
                at = slice(None) if index is None else index
                better = (success & ~out_success[at]) | ((success == out_success[at]) & (loss > out_loss[at]))
                out_adv[at] = torch.where(better.view(shape), threat.apply(x, delta), out_adv[at])
                out_loss[at] = torch.where(better, loss, out_loss[at])
                out_success[at] = out_success[at] | success

            loss, success, grad = evaluate(delta, True)
            keep(delta, loss, success)
            eta = torch.full((x.shape[0],) + shape[1:], 2 * threat.eps, device=x.device)
            best_delta, best_loss, best_grad = delta, loss, grad  # restart points for step halving
            previous, last_loss = delta, loss
            increases = torch.zeros_like(loss)
            reduced_before = torch.ones_like(success)
            best_at_check, last_mark = best_loss, 0
            for i in range(1, self.steps + 1):
                if index is not None:  # the misclassified samples stop at their iterate
                    going = ~success
                    if not bool(going.all()):
                        index, x, y = index[going], x[going], y[going]
                        delta, previous, grad, eta, last_loss, increases, reduced_before = (
                            t[going] for t in (delta, previous, grad, eta, last_loss, increases, reduced_before))
                        best_delta, best_loss, best_grad, best_at_check = (
                            t[going] for t in (best_delta, best_loss, best_grad, best_at_check))
                    if index.numel() == 0:
                        break
                with torch.no_grad():
                    alpha = 1.0 if i == 1 else 0.75
                    z = threat.project(delta + eta * threat.direction(grad), x)
                    nxt = threat.project(delta + alpha * (z - delta) + (1 - alpha) * (delta - previous), x)
                    previous, delta = delta, nxt
                loss, success, new_grad = evaluate(delta, i < self.steps)
                grad = new_grad if new_grad is not None else grad
                keep(delta, loss, success)
                with torch.no_grad():
                    increases += (loss > last_loss).float()
                    last_loss = loss
                    improved = loss > best_loss
                    best_delta = torch.where(improved.view(shape), delta, best_delta)
                    best_grad = torch.where(improved.view(shape), grad, best_grad)
                    best_loss = torch.where(improved, loss, best_loss)
                    if i in marks:
                        oscillating = increases < self.rho * (i - last_mark)
                        stalled = ~reduced_before & (best_loss <= best_at_check)
                        halve = oscillating | stalled
                        eta = torch.where(halve.view(shape), eta / 2, eta)
                        delta = torch.where(halve.view(shape), best_delta, delta)
                        previous = torch.where(halve.view(shape), best_delta, previous)
                        grad = torch.where(halve.view(shape), best_grad, grad)
                        reduced_before, best_at_check, last_mark = halve, best_loss, i
                        increases = torch.zeros_like(increases)
        return out_adv.to(images.dtype)
