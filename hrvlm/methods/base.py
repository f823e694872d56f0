"""What every training method shares: the :class:`Method` interface, the batch, the registry.

A method is a small object the training loop (:mod:`hrvlm.training.train`) drives without knowing what it is:

* ``perturb(batch)`` — its attack objective: adversarial images, or ``None`` (clean training);
* ``loss(batch, adv)`` — its training loss (a scalar) and the figures to log;
* ``trainable_parameters(model)`` — which of the model's parameters train (the rest are frozen);
* ``extra_parameters()`` — parameters it owns (a re-initialised logit scale, a learned curvature …),
  and ``extra_learning_rates()`` those of them with their own learning rate;
* ``head_spec()`` — the classification head the trained weights are evaluated with
  (:func:`hrvlm.heads.build_head`), so robust accuracy is measured white-box on *that* head.

Settings are data: ``defaults`` lists every setting with its default value (the per-profile values
live in ``hrvlm/resources/profiles.json`` as ``profiles.<profile>.methods.<name>``, where an optional
``loop`` object overrides the loop's settings for that method); an unknown setting or a bad value is a
``ValueError`` at construction, before any model is loaded.  Methods register by name
(:func:`register_method`).

What the loop guarantees (:mod:`hrvlm.training.train`):

* ``setup`` runs once, on the *pretrained* weights (also when a run resumes), before
  ``trainable_parameters`` is asked; a frozen copy made there (``copy.deepcopy(ctx.model)``) is the
  original model — freeze it yourself (``requires_grad_(False)``, ``eval()``);
* parameters not returned by ``trainable_parameters`` get ``requires_grad=False``; a method with no
  trainable and no extra parameters (CLIP) is written as a run without training steps;
* ``perturb`` runs with the whole model in ``eval()`` (BatchNorm on running statistics), outside
  autocast (attacks take their own ``autocast``: ``ctx.attack_autocast``); ``.grad`` it leaves is discarded;
* ``loss`` runs in training mode (BatchNorm frozen unless the run says ``batchnorm="batch"``), inside
  autocast, as the forward of the module DDP wraps; return a mean over the batch so that DDP's gradient
  average equals the single-process gradient (a batch-contrastive term, e.g. QT-AFT's InfoNCE, sees only
  its rank's part of the batch: the same as one process only with one rank);
* randomness: draw from torch's global RNG (restored exactly on resume) or from seeds kept in
  ``state_dict``; ``head_spec`` is asked once training ends (it may hold learned values).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Iterator

import torch
from torch import nn

from hrvlm.core.registry import registrar

METHODS: dict[str, type["Method"]] = {}


# Class decorator: ``@register_method(name)`` makes a :class:`Method` subclass buildable by ``name``.
register_method = registrar(METHODS, "name", "a method")


def build_method(name: str, settings: dict | None = None) -> "Method":
    """The registered method ``name`` with ``settings`` (unknown names and settings are errors)."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(METHODS)}")
    return METHODS[name](**(settings or {}))


@dataclass
class Batch:
    """One training batch: images in [0, 1], leaf labels, and the items' dataset indices (a method reads
    per-item data, e.g. QT-AFT's captions, through them from ``TrainContext.train_set``)."""

    images: torch.Tensor                 # [B, 3, S, S] float in [0, 1]
    labels: torch.Tensor                 # [B] int64 leaf-class indices
    index: torch.Tensor | None = None    # [B] dataset indices (for provenance and debugging)

    def to(self, device: torch.device) -> "Batch":
        return Batch(self.images.to(device, non_blocking=True), self.labels.to(device, non_blocking=True),
                     self.index)


@dataclass
class TrainContext:
    """What the loop hands a method in :meth:`Method.setup`."""

    model: nn.Module                     # the PixelCLIP being fine-tuned
    tokenizer: Any
    dataset: Any                         # the training set's DatasetSpec (class names, hierarchy, templates)
    eps: float                           # the profile's training ε in [0, 1] pixel units
    device: torch.device
    autocast: torch.dtype | None         # forward dtype (bf16 / fp16) or None for float32
    attack_autocast: torch.dtype | None  # the training attack's: never fp16 (hrvlm.core.precision says why)
    seed: int
    train_set: Any = None                # the training split ``Batch.index`` indexes (per-item data: captions)


class Method:
    """Base class of the training methods; subclasses set ``defaults`` and implement :meth:`loss`."""

    name: ClassVar[str] = "method"
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, **settings: Any):
        unknown = sorted(set(settings) - set(self.defaults))
        if unknown:
            raise ValueError(f"method {self.name!r} has no setting(s) {unknown}; its settings: {sorted(self.defaults)}")
        self.settings = {**self.defaults, **settings}
        self.check_settings()
        self.ctx: TrainContext | None = None

    def check_settings(self) -> None:
        """Raise a ``ValueError`` naming any bad value of ``self.settings`` (subclasses extend)."""

    def setup(self, ctx: TrainContext) -> None:
        """Called once before training: build frozen copies, cache text features, heads."""
        self.ctx = ctx

    def trainable_parameters(self, model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
        """Default: the image tower (TeCoA, PMG-AFT, FARE and QT-AFT fine-tune the vision encoder)."""
        return model.clip.visual.named_parameters(prefix="clip.visual")

    def extra_parameters(self) -> dict[str, nn.Parameter]:
        return {}

    def extra_learning_rates(self) -> dict[str, float]:
        """Learning rates of extra parameters that do not train at the loop's ``lr`` (name → lr; the
        loop puts each in its own optimiser group, without weight decay, on the loop's schedule)."""
        return {}

    def perturb(self, batch: Batch) -> torch.Tensor | None:
        return None

    def loss(self, batch: Batch, adv: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def head_spec(self) -> dict:
        return {"kind": "cosine"}

    def state_dict(self) -> dict:
        """Method state beyond its parameters, for exact resume (default: none)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        if state:
            raise ValueError(f"method {self.name!r} keeps no state, got {sorted(state)}")

    def config(self) -> dict:
        return {"name": self.name, **self.settings}
