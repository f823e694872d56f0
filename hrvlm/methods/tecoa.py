"""TeCoA (Mao et al., ICLR 2023): text-guided contrastive adversarial fine-tuning of the image tower.

Loss: ``CE(s · cos(f_θ(x′), t_k)_k, y)``, the mean over the batch, with ``t_k`` the fixed prompt
embeddings of the training set's classes (its templates, each prompt normalised, averaged, normalised:
the cosine head, :mod:`hrvlm.heads`, the one home of logits) and ``s`` the model's logit scale (≤ 100),
as TeCoA's code does.  ``x′`` maximises the same CE: sign-PGD from a random start, 2 steps of α = ε
(TeCoA's README recipe: ε = α = 1/255, 2 steps; its code defaults are ε = 2/255, 5 steps, α = 1/255).
The prompt embeddings are computed once, at setup (the text tower does not train).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hrvlm.attacks import ce_loss
from hrvlm.heads import HEADS
from hrvlm.text.prompts import encode_prompts
from hrvlm.data.templates import load_templates

from hrvlm.methods.adversarial import AdversarialMethod, is_number
from hrvlm.methods.base import Batch, TrainContext, register_method


@register_method("tecoa")
class TeCoA(AdversarialMethod):
    """Settings: the attack's (``steps`` 2, ``step_size`` 1 × ε, no momentum, random start);
    ``templates``: a template set name (``None``: the training set's own; ``"tecoa"`` is TeCoA's single
    "This is a photo of a {c}"); ``logit_scale``: the training logits' scale (``None``: the model's,
    as TeCoA and the evaluation head use)."""

    defaults = {**AdversarialMethod.defaults, "steps": 2, "step_size": 1.0, "templates": None, "logit_scale": None}

    def check_settings(self) -> None:
        super().check_settings()
        s = self.settings
        self.require("templates", s["templates"] is None or (isinstance(s["templates"], str) and s["templates"]),
                     "null (the training set's templates) or a template set name / JSON path")
        self.require("logit_scale", s["logit_scale"] is None or (is_number(s["logit_scale"]) and s["logit_scale"] > 0),
                     "null (the model's logit scale) or a number > 0")

    def setup(self, ctx: TrainContext) -> None:
        super().setup(ctx)
        templates = load_templates(self.settings["templates"] or ctx.dataset.templates)
        self.text_features = encode_prompts(ctx.model, ctx.tokenizer, list(ctx.dataset.classnames), templates)
        self.classify = self.classifier(ctx.model)

    def classifier(self, model: nn.Module) -> nn.Module:
        """``images → logits`` over the training classes for ``model`` (the training head)."""
        spec = dict(self.head_spec())
        if self.settings["logit_scale"] is not None:
            spec["logit_scale"] = float(self.settings["logit_scale"])
        head = HEADS[spec.pop("kind")](model, [self.text_features], **spec)
        return head.level(0)

    def perturb(self, batch: Batch) -> torch.Tensor:
        labels = batch.labels
        return self.attack(lambda adv: ce_loss(self.classify(adv).float(), labels), batch.images)

    def loss(self, batch: Batch, adv: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, float]]:
        images = batch.images if adv is None else adv
        with self.autocast():
            logits = self.classify(images).float()
        ce = F.cross_entropy(logits, batch.labels)
        return ce, {"ce": float(ce.detach())}
