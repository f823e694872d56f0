"""CLIP: no fine-tuning — the pretrained model itself, the reference row of every table."""
from __future__ import annotations

from typing import Iterator

from torch import nn

from hrvlm.methods.base import Batch, Method, register_method


@register_method("clip")
class Clip(Method):
    """The pretrained model, evaluated as it is: no parameter trains, so the loop takes no optimiser
    step and the run's weights are the pretrained ones."""

    defaults: dict = {}

    def trainable_parameters(self, model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
        return iter(())

    def loss(self, batch: Batch, adv):
        raise RuntimeError("method 'clip' does not fine-tune (it has no trainable parameters): evaluate the "
                           "pretrained model instead of training it")
