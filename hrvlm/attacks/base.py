"""What every attack shares: the ``Attack`` interface, the attack context, per-sample losses.

An attack is an object ``attack(forward, images, labels) -> adversarial images`` where ``forward``
maps images in [0, 1] to logits ``[B, C]`` (e.g. ``head.level(l)`` of a :class:`hrvlm.heads.Head`).  The
attack holds its :class:`~hrvlm.attacks.threat.ThreatModel` and reports its full configuration with
:meth:`Attack.config` (for the records store).
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from hrvlm.attacks.threat import ThreatModel
from hrvlm.geometry.theory import logit_margin

# Bump when an attack's semantics change (defaults, selection rules), so records stay comparable.
ALGORITHM_VERSION = 1

Forward = Callable[[torch.Tensor], torch.Tensor]


# -- per-sample losses on logits [B, C] and labels [B] (larger = more adversarial) ---------------------
def ce_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, labels, reduction="none")


def margin_loss(logits: torch.Tensor, labels: torch.Tensor, kappa: float = 0.0) -> torch.Tensor:
    """CW's margin ``max_{j≠y} z_j − z_y``, capped at ``kappa`` (no push beyond a κ-confident mistake)."""
    return (-logit_margin(logits, labels)).clamp(max=kappa)


def dlr_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Difference of logits ratio (Croce & Hein, 2020): ``−(z_y − max_{j≠y} z_j) / (z_π1 − z_π3)``.

    Shift- and scale-invariant in the logits, so a zero-shot logit scale does not matter.  It needs
    the third-largest logit: with fewer than 3 classes (PCAM) it is undefined and we fall back to
    cross-entropy, as TeCoA, FARE and QT-AFT do (they run APGD-CE only on binary datasets).
    """
    if logits.shape[1] < 3:
        warnings.warn("DLR loss needs >= 3 classes; using cross-entropy for this 2-class problem", stacklevel=2)
        return ce_loss(logits, labels)
    top = logits.topk(3, dim=1).values
    return -logit_margin(logits, labels) / (top[:, 0] - top[:, 2] + 1e-12)


def misclassified(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return logits.argmax(dim=1) != labels


# -- running a forward as an attack target --------------------------------------------------------------
@contextlib.contextmanager
def attack_context(forward):
    """Eval semantics, input gradients only, and no per-call input validation for the duration of an attack.

    * Every submodule is in eval mode; the training flags are restored afterwards.
    * The parameters of ``forward`` (an ``nn.Module``) that require gradients are frozen
      (``requires_grad_(False)``) and unfrozen afterwards, also on error: attacks differentiate with
      respect to the input only, and a frozen weight lets autograd skip saving what only its gradient
      needs (memory; the time saved on a GPU is measured in ``benchmarks/NOTES.md``).  The input
      gradient is unchanged, and training graphs built before the attack still reach the weights.
      A plain function's closed-over parameters are not visible here (wrap it in a module); give
      attacks the unwrapped model, not a DistributedDataParallel wrapper.
    * ``PixelCLIP.unchecked()`` when ``forward`` wraps one (``forward.model``): our iterates are
      clamped to [0, 1] already, and its range check would cost a host synchronisation per step.
    """
    if torch.is_inference_mode_enabled():
        raise RuntimeError("attacks need autograd: call them outside torch.inference_mode() "
                           "(torch.no_grad() is fine, gradients are re-enabled inside)")
    is_module = isinstance(forward, nn.Module)
    modules = list(forward.modules()) if is_module else []
    flags = [m.training for m in modules]
    trainable = [p for p in forward.parameters() if p.requires_grad] if is_module else []
    with contextlib.ExitStack() as stack:
        if modules:
            forward.eval()
        inner = getattr(forward, "model", None)
        if hasattr(inner, "unchecked"):
            stack.enter_context(inner.unchecked())
        stack.enter_context(torch.enable_grad())
        for p in trainable:
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p in trainable:
                p.requires_grad_(True)
            for m, flag in zip(modules, flags):
                m.training = flag


def autocast_context(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` for ``dtype`` (e.g. bf16 on GPU), or nothing when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_generator(seed: int | None, device: torch.device) -> torch.Generator | None:
    """A seeded generator on ``device`` (reproducible random starts), or None for torch's global RNG."""
    return None if seed is None else torch.Generator(device=device).manual_seed(int(seed))


def check_batch(images: torch.Tensor, labels: torch.Tensor) -> None:
    """Clear errors for malformed inputs; runs once per call, never inside the step loop."""
    if not torch.is_tensor(images) or not images.is_floating_point() or images.dim() < 2:
        raise ValueError("images must be a floating-point tensor [B, ...] in [0, 1]")
    if not torch.is_tensor(labels) or labels.dtype != torch.long or labels.shape != images.shape[:1]:
        raise ValueError(f"labels must be an int64 tensor of shape [{images.shape[0]}] (one class index "
                         f"per image), got {getattr(labels, 'dtype', type(labels))} {list(getattr(labels, 'shape', []))}")
    if labels.device != images.device:
        raise ValueError(f"images are on {images.device} but labels on {labels.device}")


class Attack:
    """Base class: subclasses set ``name`` and implement :meth:`perturb` (called in :func:`attack_context`)."""

    name = "attack"
    min_classes = 2  # the fewest classes the attack is defined for (AutoAttack skips it below that)

    def __init__(self, threat: ThreatModel, *, seed: int | None = 0, autocast: torch.dtype | None = None):
        if not isinstance(threat, ThreatModel):
            raise TypeError(f"threat must be a ThreatModel, got {type(threat).__name__}")
        self.threat = threat
        self.seed = seed
        self.autocast = autocast

    def __call__(self, forward: Forward, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        check_batch(images, labels)
        with attack_context(forward):
            adv = self.perturb(forward, images.detach(), labels.detach())
        return adv.detach()

    def perturb(self, forward: Forward, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def stopping_early(self) -> "Attack":
        """This attack for a caller that reads only whether each image ends misclassified (a robust
        accuracy, not the adversarial images): a copy that may stop perturbing an image once it is
        misclassified, when the attack has such a mode (PGD, MPGD, CW, APGD, AutoAttack), else itself.
        The copy's :meth:`config` says so."""
        return self

    def logits(self, forward: Forward, images: torch.Tensor) -> torch.Tensor:
        """float32 logits, the forward run under the attack's autocast dtype."""
        with autocast_context(images.device, self.autocast):
            return forward(images).float()

    def params(self) -> dict:
        """Attack-specific settings for :meth:`config` (subclasses extend)."""
        return {}

    def config(self) -> dict:
        """Everything needed to re-run this attack: name, threat model, settings, versions."""
        from hrvlm import __version__

        return {"name": self.name, **self.threat.to_dict(), **self.params(), "seed": self.seed,
                "autocast": None if self.autocast is None else str(self.autocast).removeprefix("torch."),
                "version": f"hrvlm-{__version__}/attacks-v{ALGORITHM_VERSION}"}

    def __repr__(self) -> str:
        cfg = self.config()
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in cfg.items() if k != 'name')})"
