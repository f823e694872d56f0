"""CLIP: no fine-tuning — the pretrained model itself, the reference row of every table."""
from __future__ import annotations

from typing import Iterator

from torch import nn

from .base import Batch, Method, register_method


@register_method("clip")
class Clip(Method):
    """The pretrained model, evaluated as it is: nothing trains, so the loop runs no optimiser steps
    (``fine_tunes`` is False) and the run's weights are the pretrained ones."""

    fine_tunes = False
    defaults: dict = {}

    def trainable_parameters(self, model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
        return iter(())

    def loss(self, batch: Batch, adv):
        raise RuntimeError("method 'clip' does not fine-tune (fine_tunes is False): evaluate the pretrained "
                           "model instead of training it")
