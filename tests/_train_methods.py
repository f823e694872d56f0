"""A test-local training method for the harness tests (never a copy of a library method): TeCoA-like
cross-entropy of PGD images against fixed class prompts, with a learnable temperature (an extra
parameter), a call counter (method state) and a log of the train/eval flags it saw."""
from __future__ import annotations

import torch
from torch import nn

from hrvlm.attacks import PGD, ThreatModel
from hrvlm.heads import build_head
from hrvlm.methods import METHODS, Method, register_method
from hrvlm.data.templates import load_templates

NAME = "test-ce"


class ProbeCE(Method):
    defaults = {"attack_steps": 2, "random_start": False}

    def setup(self, ctx):
        super().setup(ctx)
        self.head = build_head(None, ctx.model, ctx.tokenizer, [list(ctx.dataset.classnames)],
                               load_templates(ctx.dataset.templates))
        self.temperature = nn.Parameter(torch.zeros((), device=ctx.device))
        self.calls = 0
        self.seen = {"perturb": [], "loss": []}

    def extra_parameters(self):
        return {"temperature": self.temperature}

    def _flags(self):
        return [(type(m).__name__, m.training) for m in self.ctx.model.modules()]

    def perturb(self, batch):
        self.seen["perturb"].append(self._flags())
        attack = PGD(ThreatModel("linf", self.ctx.eps), steps=self.settings["attack_steps"],
                     random_start=self.settings["random_start"], seed=self.calls)
        return attack(self.head.level(0), batch.images, batch.labels)

    def loss(self, batch, adv):
        self.seen["loss"].append(self._flags())
        self.calls += 1
        logits = self.head.level(0)(batch.images if adv is None else adv) * self.temperature.exp()
        loss = nn.functional.cross_entropy(logits.float(), batch.labels)
        return loss, {"loss": float(loss.detach())}

    def head_spec(self):
        return {"kind": "cosine", "logit_scale": self.head.logit_scale}

    def state_dict(self):
        return {"calls": self.calls}

    def load_state_dict(self, state):
        self.calls = int(state["calls"])


def register() -> None:
    if NAME not in METHODS:
        register_method(NAME)(ProbeCE)


def unregister() -> None:
    METHODS.pop(NAME, None)
