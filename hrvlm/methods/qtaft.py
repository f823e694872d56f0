"""QT-AFT (Waseda et al., ACM MM 2025): FARE's objective plus caption-guided image→text contrast.

    ℓ_i = ‖f_θ(x′_i) − f_0(x_i)‖² + λ · (−log softmax_j(s · cos(f_θ(x′_i), g(c_j)))_i),
    L = mean_i ℓ_i

FARE's per-sample squared distance (summed over dimensions, raw embeddings) plus λ (= 10, the authors'
training script's ``w_i2t``) times the in-batch InfoNCE from each adversarial image to its own caption
``c_i`` (the other captions of the batch are the negatives; image→text only), ``g`` the frozen text
tower.  The attack maximises the same ℓ (FARE's momentum PGD: 10 steps of α = ε/4, μ = 0.9) with the
current encoder and scale.  ``s = exp(τ)``: τ is re-initialised to ln(1/0.07) (``logit_scale_init``),
learns (an extra parameter, unless ``learn_logit_scale`` is false) and is clamped to [0, ln 100] —
the authors clamp after every optimiser step; clamping before every use gives every use the same value
and needs no hook in the loop.

Captions come from ``captions`` (see :mod:`hrvlm.text.captions`): ``"detailed"`` by default (in the mini
world, each image's object and properties: the analogue of the authors' detailed VLM captions).  When the
source is a fixed list of at most ``cache_captions`` distinct captions, their features are computed once
at setup; otherwise each batch's captions are encoded (without gradients) once per step.  Identical
captions in a batch (e.g. class-name captions) stay negatives of each other, as in the authors' code:
that only adds ``log k`` for a caption shared by ``k`` images.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from hrvlm.text.captions import caption_source, parse_source

from hrvlm.methods.adversarial import is_number
from hrvlm.methods.base import Batch, TrainContext, register_method
from hrvlm.methods.fare import FARE

TEXT_BATCH = 256  # captions per text-encoder call


def image_to_text_infonce(image_features: torch.Tensor, text_features: torch.Tensor,
                          scale: torch.Tensor | float) -> torch.Tensor:
    """Per-image InfoNCE ``[B]``: ``−log softmax_j(scale · cos(u_i, t_j))_i`` over the batch's texts.

    Both feature sets are L2-normalised here (float32); ``text_features[i]`` is image ``i``'s positive.
    """
    if image_features.shape[0] != text_features.shape[0]:
        raise ValueError(f"{image_features.shape[0]} images but {text_features.shape[0]} captions")
    u = F.normalize(image_features.float(), dim=-1)
    t = F.normalize(text_features.float(), dim=-1)
    logits = scale * u @ t.t()
    return F.cross_entropy(logits, torch.arange(len(u), device=u.device), reduction="none")


@register_method("qtaft")
class QTAFT(FARE):
    """Settings: FARE's, plus ``caption_weight`` λ (10), ``captions`` ("detailed"), ``logit_scale_init``
    (1/0.07), ``logit_scale_max`` (100), ``learn_logit_scale`` (true) and ``cache_captions`` (50,000)."""

    defaults = {**FARE.defaults, "caption_weight": 10.0, "captions": "detailed", "logit_scale_init": 1 / 0.07,
                "logit_scale_max": 100.0, "learn_logit_scale": True, "cache_captions": 50_000}

    def check_settings(self) -> None:
        super().check_settings()
        s = self.settings
        self.require_number("caption_weight")
        try:
            kind, path = parse_source(s["captions"])
        except ValueError as err:
            raise ValueError(f"method {self.name!r}: setting captions={s['captions']!r} is invalid: {err}") from None
        self.require("captions", kind != "file" or Path(path).expanduser().exists(),
                     "a captions file or folder that exists")
        self.require_number("logit_scale_max", 1.0)
        high = s["logit_scale_max"] if is_number(s["logit_scale_max"]) else None
        self.require_number("logit_scale_init", 1.0, high=high)
        self.require("learn_logit_scale", isinstance(s["learn_logit_scale"], bool), "true or false")
        count = s["cache_captions"]
        self.require("cache_captions", isinstance(count, int) and not isinstance(count, bool) and count >= 0,
                     "an integer >= 0 (0: encode every batch's captions)")

    def setup(self, ctx: TrainContext) -> None:
        super().setup(ctx)
        s = self.settings
        self.log_scale = nn.Parameter(torch.tensor(math.log(s["logit_scale_init"]), device=ctx.device),
                                      requires_grad=s["learn_logit_scale"])
        self.captions = caption_source(s["captions"], ctx.dataset, ctx.train_set)
        vocabulary = self.captions.vocabulary()
        distinct = list(dict.fromkeys(vocabulary)) if vocabulary is not None else []
        self.caption_rows: dict[str, int] | None = None
        if vocabulary is not None and len(distinct) <= s["cache_captions"]:
            self.caption_features = self.encode_captions(distinct)
            self.caption_rows = {c: i for i, c in enumerate(distinct)}

    def extra_parameters(self) -> dict[str, nn.Parameter]:
        return {"logit_scale": self.log_scale} if self.settings["learn_logit_scale"] else {}

    def scale(self) -> torch.Tensor:
        """``exp(τ)`` with τ clamped to [0, ln logit_scale_max] in place first (the authors' projection)."""
        with torch.no_grad():
            self.log_scale.clamp_(0.0, math.log(self.settings["logit_scale_max"]))
        return self.log_scale.exp()

    @torch.no_grad()
    def encode_captions(self, captions: list[str]) -> torch.Tensor:
        """Unit-norm caption features ``[N, D]`` from the frozen text tower (truncated to its context)."""
        model, tokenizer = self.ctx.model, self.ctx.tokenizer
        with self.autocast():
            feats = [model.encode_text(tokenizer(captions[i:i + TEXT_BATCH]).to(self.ctx.device), normalize=True)
                     for i in range(0, len(captions), TEXT_BATCH)]
        return torch.cat(feats).float()

    def compute_targets(self, batch: Batch) -> dict[str, torch.Tensor]:
        captions = self.captions(batch)
        if self.caption_rows is None:
            features = self.encode_captions(captions)
        else:
            rows = torch.tensor([self.caption_rows[c] for c in captions], device=self.caption_features.device)
            features = self.caption_features[rows]
        return {**super().compute_targets(batch), "captions": features}

    def terms(self, features: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        return {**super().terms(features, batch),
                "i2t": image_to_text_infonce(features, self.targets(batch)["captions"], self.scale())}

    def weights(self) -> dict[str, float]:
        return {**super().weights(), "i2t": float(self.settings["caption_weight"])}

    def loss(self, batch: Batch, adv: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, float]]:
        total, logs = super().loss(batch, adv)
        return total, {**logs, "logit_scale": float(self.log_scale.detach().exp())}
