"""What both training loops (:mod:`.train`, :mod:`.pretrain`) share about how a run proceeds: the learning-rate
schedule, the order of the batches and which parameters get weight decay.

* **schedule**: linear warm-up, then cosine decay to 0 (:func:`lr_factor`);
* **batch order**: batch ``t`` is a function of ``(seed, t)`` alone, epoch-wise permutations with drop-last
  (:func:`batch_indices`), so the data position of a run is its step and a resumed run reads the batches an
  uninterrupted one would;
* **weight decay**: OpenCLIP's exemption (``src/open_clip_train/main.py`` of mlfoundations/open_clip: no
  decay for parameters of fewer than 2 dimensions, ``bn``, ``ln``, ``logit_scale``), with every
  ``embedding`` (positional, class and token embeddings, which OpenCLIP decays when they are 2-D) and every
  ``norm`` exempt as well (:func:`decay_groups`).  The fine-tuning loop and the pretraining loop apply this
  one rule; before it was shared, pretraining's copy lacked ``norm``, which no parameter of the models the
  profiles train (``hrvlm-tiny-cnn``, ``hrvlm-tiny``, ``ViT-B-32-quickgelu``) has in a 2-D or larger name,
  so their groups, and the weights, are what they were.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable

import torch
from torch import nn

NO_DECAY_KEYWORDS = ("bn", "ln", "norm", "embedding", "logit_scale")


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up to 1 over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def lr_lambda(warmup: int, total: int) -> Callable[[int], float]:
    """:func:`lr_factor` as ``LambdaLR`` takes it (a plain function: ``LambdaLR`` saves no state for it)."""
    def factor(step: int) -> float:
        return lr_factor(step, warmup, total)
    return factor


def batch_indices(step: int, batch_size: int, n: int, seed: int) -> torch.Tensor:
    """Indices of batch ``step``: epoch-wise permutations seeded by ``(seed, epoch)`` (drop-last)."""
    per_epoch = n // batch_size
    if per_epoch == 0:
        raise ValueError(f"batch size {batch_size} exceeds the corpus size {n}")
    epoch, pos = divmod(step, per_epoch)
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)[pos * batch_size:(pos + 1) * batch_size]


def no_decay(name: str, p: nn.Parameter) -> bool:
    """Whether parameter ``name`` is exempt from weight decay: gains, biases, norms, embeddings, temperatures."""
    return p.ndim < 2 or any(k in name for k in NO_DECAY_KEYWORDS)


def decay_groups(named: Iterable[tuple[str, nn.Parameter]], weight_decay: float) -> list[dict]:
    """Two optimiser groups, in the order given: the decayed parameters at ``weight_decay``, then the
    exempt ones (:func:`no_decay`) at 0."""
    named = list(named)
    return [{"params": [p for n, p in named if not no_decay(n, p)], "weight_decay": weight_decay},
            {"params": [p for n, p in named if no_decay(n, p)], "weight_decay": 0.0}]
