"""HRVLM (Dong et al., CVPR 2026): hierarchical adversarial image–text alignment on the Poincaré ball.

Per training step (the method as the papernotes.org note on the paper gives it, Eqs. 8–14; the step's
order is our reconstruction, the paper's code not being public):

1. ``perturb``: one image perturbation δ (PGD, ε = step = the profile's ε, 3 steps) maximising the
   HITA objective ``Σ_trees Σ_l ω_l CE_l`` with the text clean, then one text perturbation δ_T (L2
   ball ε_T per prompt row, 3 normalised-gradient steps) maximising the same objective at the
   adversarial images.  The δ's are shared by all trees (one δ for the summed forest objective);
2. ``loss``: for every tree, HITA (level-wise CE with HNSA negatives, ω_l = 1 − l/(L+1)) at
   (x + δ, t + δ_T), plus λ₁ L_vic and λ₂ (L_gap^label + L_gap^intra); the forest loss is the plain
   sum over the trees sharing the leaves.

Model side: image features and text features are lifted to the ball by the :mod:`hrvlm.heads.poincare`
functions (the evaluation head is the same formula, rebuilt from :meth:`HRVLM.head_spec`).  The image
tower and CLIP's text projection train; the frozen text transformer's pooled outputs (pre-projection)
of every prompt of every level of every tree are encoded once in :meth:`HRVLM.setup` and cached; each
step only applies the current projection to them (in float32, so a δ_T of 2·10⁻⁴ is not lost to
bf16 rounding).

Settings.  From the paper: ``depth`` L = 5, ``steps`` 3 with step = ε, ``text_eps`` ε_T = 2·10⁻⁴,
the level weights, ``trees`` 1–5 (main rows 1 and 5; a dataset whose forest has fewer distinct trees
is a clear error at setup — mini-finetune has 2 at depth 5).  Ablations: ``components`` (Table 10:
``hita``, ``hita+vic``, ``hita+gap``, ``full``), ``perturbation`` (Table 12: ``leaf`` = δ and δ_T
maximise the leaf CE only; ``per-level`` = one δ per level, each maximising and then entering only
its level's CE — run as one PGD over L+1 copies of the batch, ``perturb`` returning
``[L+1, B, 3, S, S]``, with L_vic and L_gap on the leaf copy; ``universal``), ``hnsa`` (``both``,
``lower``, ``upper``; ``none`` is ours).  The loss always has every level, whatever the strategy.
**Ours** (the paper does not give them):

* ``level_ce`` — the HypAvg open question: ``"parents"`` (default, the literal reading: at level
  l ≥ 1 the CE is on the HypAvg'ed parent embeddings φ^l_c of the classes present in the batch,
  against their class) or ``"images"`` (every image against its level-l ancestor);
* ``hypavg`` — ``"recursive"`` (default: level l+1 averages the level-l points) or ``"direct"``
  (every level averages the images);
* ``intra_gap`` — which order L_gap^intra enforces: ``"hypavg"`` (default: each image-side parent
  point at least ζ_gap nearer the origin than each of its children; a parent with one child in the
  batch *is* that child and is skipped) or ``"image-text"`` (each image deeper than its leaf's text
  point, MERU's instance-below-concept order).  L_gap^label orders the text points of every
  parent–child edge of the tree (edges whose two prompts coincide, e.g. padded chains, are skipped);
* ``curvature`` c = 1 (``learn_curvature`` off; learned c is clamped to [0.1, 10] as in MERU),
  ``temperature`` τ = 0.1 (``learn_temperature`` off; learned τ ≥ 0.01);
* feature scales α (image, text): learned (``learn_scales``), initialised so that the mean feature
  becomes a tangent vector of norm ``init_norm`` = 1 (ball radius tanh 1 ≈ 0.76 for c = 1): the text
  scale from the cached leaf prompts at setup, the image scale from the first training batch's
  clean images (raw image and text norms differ 8× on the mini-world CLIP);
* ``template_mean`` — how templates combine into a class point: ``"tangent"`` (default) or
  ``"einstein"`` (see :mod:`hrvlm.heads.poincare`);
* ``lambda_vic`` λ₁ = 0.1, ``vic_radius`` ζ_vic = 1.0 (hyperbolic distance), ``lambda_gap`` λ₂ = 1.0,
  ``gap_margin`` ζ_gap = 0.05 (Euclidean norm in the ball); terms are means over samples and edges;
  L_vic is taken at the leaf level (image vs its class's text point);
* logits ``−d_c/τ``; a level with one class and no HNSA negative (a root) contributes CE = 0;
* δ_T lives in the text transformer's pooled output (the input of the trainable projection, as δ is
  on the input of the trainable image tower), one L2 ball of radius ε_T per prompt row (per class
  with ``template_mean="tangent"``, where the projection's linearity makes that equivalent);
  ``text_steps`` = 3 and ``text_step_size`` ε_T; ``step_size`` (image) defaults to ε as in the paper;
  δ first, then δ_T (a sequential, not joint, maximisation);
* ``random_start`` on for both; the random starts are seeded by the run's seed and the step count.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from hrvlm.attacks.base import attack_context, autocast_context, make_generator
from hrvlm.attacks.hierarchical import level_weights, text_perturbation
from hrvlm.attacks.pgd import pgd_maximize
from hrvlm.attacks.threat import ThreatModel
from hrvlm.heads.poincare import TEMPLATE_MEANS, distance_logits, lift, text_prototypes
from hrvlm.hierarchy import forest_for_dataset, hnsa_negatives
from hrvlm.zeroshot import encode_prompts, load_templates

from .base import Batch, Method, TrainContext, register_method
from .hrvlm_losses import hita_loss, hnsa_logits, hypavg_levels, norm_order_loss, vicinity_loss

CHOICES = {
    "components": ("hita", "hita+vic", "hita+gap", "full"),
    "perturbation": ("leaf", "per-level", "universal"),
    "hnsa": ("both", "lower", "upper", "none"),
    "level_ce": ("parents", "images"),
    "hypavg": ("recursive", "direct"),
    "intra_gap": ("hypavg", "image-text"),
    "template_mean": TEMPLATE_MEANS,
}
MAX_TREES = 5
CURVATURE_RANGE = (0.1, 10.0)
MIN_TEMPERATURE = 0.01


@dataclass
class _TreeTensors:
    """One tree as index tensors: ``rows[l]`` the text-bank row of each class of level ``l``,
    ``parents[l]`` each class's parent at ``l+1``, HNSA masks (``None`` where switched off or absent),
    and the text edges (bank rows) that L_gap^label orders."""

    name: str
    sizes: list[int]
    rows: list[torch.Tensor]
    parents: list[torch.Tensor]
    ancestor: torch.Tensor
    lower: list[torch.Tensor | None]
    upper: list[torch.Tensor | None]
    edge_child: torch.Tensor
    edge_parent: torch.Tensor


@dataclass
class _Geometry:
    """The current curvature, temperature and feature scales (tensors, in the graph when learned)."""

    c: torch.Tensor
    temperature: torch.Tensor
    image_scale: torch.Tensor
    text_scale: torch.Tensor


@contextlib.contextmanager
def _without_text_projection(clip: nn.Module):
    """open_clip's ``encode_text`` then returns the pooled transformer output (what HRVLM caches)."""
    projection = clip.text_projection
    clip.text_projection = None
    try:
        yield
    finally:
        clip.text_projection = projection


def project_text(clip: nn.Module, pooled: torch.Tensor) -> torch.Tensor:
    """CLIP's text projection applied to cached pooled features, in float32 with autocast off."""
    projection = clip.text_projection
    with torch.autocast(device_type=pooled.device.type, enabled=False):
        pooled = pooled.float()
        if isinstance(projection, nn.Linear):
            bias = None if projection.bias is None else projection.bias.float()
            return F.linear(pooled, projection.weight.float(), bias)
        return pooled @ projection.float()


@register_method("hrvlm")
class HRVLM(Method):
    """The paper's method; every ablation and every quantity the paper leaves open is a setting
    (module docstring)."""

    defaults = {
        "components": "full", "perturbation": "universal", "hnsa": "both", "trees": 1, "depth": 5,
        "level_ce": "parents", "hypavg": "recursive", "intra_gap": "hypavg",
        "curvature": 1.0, "learn_curvature": False, "temperature": 0.1, "learn_temperature": False,
        "learn_scales": True, "init_norm": 1.0, "template_mean": "tangent",
        "lambda_vic": 0.1, "vic_radius": 1.0, "lambda_gap": 1.0, "gap_margin": 0.05,
        "steps": 3, "step_size": None, "random_start": True,
        "text_eps": 2e-4, "text_steps": 3, "text_step_size": None,
    }

    def check_settings(self) -> None:
        s = self.settings
        for key, options in CHOICES.items():
            if s[key] not in options:
                raise ValueError(f"hrvlm: unknown {key} {s[key]!r}; choose one of {list(options)}")
        for key in ("trees", "depth", "steps", "text_steps"):
            if not isinstance(s[key], int) or isinstance(s[key], bool) or s[key] < 0:
                raise ValueError(f"hrvlm: {key} must be a non-negative integer, got {s[key]!r}")
        if not 1 <= s["trees"] <= MAX_TREES:
            raise ValueError(f"hrvlm: trees must be in 1..{MAX_TREES} (the paper's forest), got {s['trees']}")
        if s["depth"] < 1:
            raise ValueError(f"hrvlm: depth must be at least 1, got {s['depth']}")
        for key in ("learn_curvature", "learn_temperature", "learn_scales", "random_start"):
            if not isinstance(s[key], bool):
                raise ValueError(f"hrvlm: {key} must be true or false, got {s[key]!r}")
        positive = ("curvature", "temperature", "init_norm")
        non_negative = ("lambda_vic", "vic_radius", "lambda_gap", "gap_margin", "text_eps")
        for key in positive + non_negative + ("step_size", "text_step_size"):
            value = s[key]
            if value is None and key.endswith("step_size"):
                continue
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if not ok or (value <= 0 if key in positive or key.endswith("step_size") else value < 0):
                bound = "> 0" if key in positive or key.endswith("step_size") else ">= 0"
                raise ValueError(f"hrvlm: {key} must be a finite number {bound}, got {value!r}")
        if s["learn_curvature"] and not CURVATURE_RANGE[0] <= s["curvature"] <= CURVATURE_RANGE[1]:
            raise ValueError(f"hrvlm: a learned curvature starts in {list(CURVATURE_RANGE)}, got {s['curvature']}")

    # -- setup -------------------------------------------------------------------------------------------
    def setup(self, ctx: TrainContext) -> None:
        super().setup(ctx)
        s, spec, model = self.settings, ctx.dataset, ctx.model
        if getattr(spec, "hierarchy", None) is None:
            raise ValueError(f"hrvlm needs a class hierarchy, and dataset {spec.name!r} has none; train on a "
                             f"dataset with one (e.g. mini-finetune, imagenet)")
        if not hasattr(model.clip, "text_projection") or model.clip.text_projection is None:
            raise ValueError(f"hrvlm trains CLIP's text projection, and model {model.name!r} has none")
        forest = forest_for_dataset(spec.hierarchy, depth=s["depth"], max_trees=s["trees"])
        if len(forest) < s["trees"]:
            raise ValueError(f"hrvlm: trees={s['trees']} but {spec.hierarchy!r} has only {len(forest)} distinct "
                             f"trees at depth {s['depth']}; set trees <= {len(forest)}")
        leaf_names = list(spec.classnames)
        if len(forest.leaves) != len(leaf_names):
            raise ValueError(f"hrvlm: the forest of {spec.hierarchy!r} has {len(forest.leaves)} leaves but "
                             f"{spec.name!r} has {len(leaf_names)} classes")
        level_names = [[leaf_names] + [list(t.names[l]) for l in range(1, t.depth + 1)] for t in forest]
        self.bank_names = list(dict.fromkeys(n for tree in level_names for names in tree for n in names))
        row = {name: i for i, name in enumerate(self.bank_names)}
        with _without_text_projection(model.clip):
            bank = encode_prompts(model, ctx.tokenizer, self.bank_names, load_templates(spec.templates)).float()
        # the projection is linear: a class's tangent-space template mean is the projection of its mean
        self.text_bank = bank.mean(dim=1, keepdim=True) if s["template_mean"] == "tangent" else bank
        self.trees = [self._tree_tensors(tree, names, row, ctx.device) for tree, names in zip(forest, level_names)]
        with torch.no_grad():
            leaf_feats = project_text(model.clip, self.text_bank[self.trees[0].rows[0]]).mean(dim=1)
            log_text_scale = math.log(s["init_norm"]) - math.log(float(leaf_feats.norm(dim=-1).mean()))
        learned = {"curvature": s["learn_curvature"], "temperature": s["learn_temperature"],
                   "image_scale": s["learn_scales"], "text_scale": s["learn_scales"]}
        initial = {"curvature": math.log(s["curvature"]), "temperature": math.log(s["temperature"]),
                   "image_scale": log_text_scale, "text_scale": log_text_scale}
        self.log_geometry: dict[str, torch.Tensor] = {}
        for key, value in initial.items():
            tensor = torch.tensor(value, dtype=torch.float32, device=ctx.device)
            self.log_geometry[key] = nn.Parameter(tensor) if learned[key] else tensor
        self.calibrated = False
        self.step = 0
        self._text_delta: torch.Tensor | None = None

    def _tree_tensors(self, tree, names, row, device) -> _TreeTensors:
        hnsa = self.settings["hnsa"]

        def tensor(x, dtype=torch.long):
            return torch.as_tensor(x, dtype=dtype, device=device)

        rows = [tensor([row[n] for n in level]) for level in names]
        parents = [tensor(tree.parents(l)) for l in range(tree.depth)]
        lower, upper = [], []
        for level in range(tree.depth + 1):
            neg = hnsa_negatives(tree, level)
            # a "negative" with the class's own prompt (two nodes, one name) would be the class itself
            if level > 0 and hnsa in ("both", "lower"):
                lower.append(tensor(neg.lower, torch.bool) & (rows[level][:, None] != rows[level - 1][None, :]))
            else:
                lower.append(None)
            if level < tree.depth and hnsa in ("both", "upper"):
                upper.append(tensor(neg.upper, torch.bool) & (rows[level][:, None] != rows[level + 1][None, :]))
            else:
                upper.append(None)
        child = torch.cat(rows[:-1])
        parent = torch.cat([rows[l + 1][parents[l]] for l in range(tree.depth)])
        keep = child != parent  # a padded chain repeats a node: the same prompt cannot be ordered against itself
        return _TreeTensors(tree.name, [len(level) for level in names], rows, parents, tensor(tree.ancestor),
                            lower, upper, child[keep], parent[keep])

    def _context(self) -> TrainContext:
        if self.ctx is None:
            raise RuntimeError("hrvlm: call setup(ctx) first")
        return self.ctx

    # -- parameters and state ------------------------------------------------------------------------------
    def trainable_parameters(self, model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
        """The image tower and CLIP's text projection (the text transformer stays frozen)."""
        yield from model.clip.visual.named_parameters(prefix="clip.visual")
        projection = model.clip.text_projection
        if isinstance(projection, nn.Module):
            yield from projection.named_parameters(prefix="clip.text_projection")
        else:
            yield "clip.text_projection", projection

    def extra_parameters(self) -> dict[str, nn.Parameter]:
        """The learned log-curvature, log-temperature and log feature scales (as switched on)."""
        if self.ctx is None:
            return {}
        return {f"log_{k}": v for k, v in self.log_geometry.items() if isinstance(v, nn.Parameter)}

    def current_geometry(self) -> _Geometry:
        g = self.log_geometry
        return _Geometry(c=g["curvature"].exp().clamp(*CURVATURE_RANGE),
                         temperature=g["temperature"].exp().clamp_min(MIN_TEMPERATURE),
                         image_scale=g["image_scale"].exp(), text_scale=g["text_scale"].exp())

    def state_dict(self) -> dict:
        self._context()
        return {"step": self.step, "calibrated": self.calibrated,
                "log_geometry": {k: v.detach().cpu().clone() for k, v in self.log_geometry.items()}}

    def load_state_dict(self, state: dict) -> None:
        self._context()
        if set(state) != {"step", "calibrated", "log_geometry"} or set(state["log_geometry"]) != set(self.log_geometry):
            raise ValueError(f"hrvlm: not an hrvlm method state (keys {sorted(state)})")
        with torch.no_grad():
            for k, v in state["log_geometry"].items():
                self.log_geometry[k].copy_(v)
        self.step, self.calibrated = int(state["step"]), bool(state["calibrated"])

    def head_spec(self) -> dict:
        if self.ctx is None:
            raise RuntimeError("hrvlm: head_spec() needs setup(ctx): the feature scales come from the model")
        with torch.no_grad():
            g = self.current_geometry()
        return {"kind": "poincare", "curvature": float(g.c), "temperature": float(g.temperature),
                "image_scale": float(g.image_scale), "text_scale": float(g.text_scale),
                "template_mean": self.settings["template_mean"]}

    # -- features ------------------------------------------------------------------------------------------
    def calibrate(self, images: torch.Tensor) -> None:
        """Set the image scale from the clean images of the first batch (once; recorded in the state)."""
        if self.calibrated:
            return
        ctx = self._context()
        with attack_context(ctx.model), torch.no_grad(), autocast_context(ctx.device, ctx.autocast):
            norm = ctx.model.encode_image(images, normalize=False).float().norm(dim=-1).mean()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(norm)
            norm /= torch.distributed.get_world_size()
        with torch.no_grad():
            self.log_geometry["image_scale"].copy_(math.log(self.settings["init_norm"]) - norm.log())
        self.calibrated = True

    def image_points(self, images: torch.Tensor, geo: _Geometry) -> torch.Tensor:
        ctx = self._context()
        with autocast_context(ctx.device, ctx.autocast):
            feats = ctx.model.encode_image(images, normalize=False)
        return lift(feats, geo.image_scale, geo.c)

    def prototypes(self, geo: _Geometry, bank: torch.Tensor | None = None) -> torch.Tensor:
        """``[N, D]`` ball points of every bank prompt (default the cached, unperturbed features)
        through the current text projection."""
        feats = project_text(self._context().model.clip, self.text_bank if bank is None else bank)
        return text_prototypes(feats, geo.text_scale, geo.c, self.settings["template_mean"])

    # -- objective -----------------------------------------------------------------------------------------
    def _hypavg(self, tree: _TreeTensors, points: torch.Tensor, labels: torch.Tensor, geo: _Geometry):
        return hypavg_levels(points, labels, tree.parents, tree.sizes, geo.c, self.settings["hypavg"] == "recursive")

    def tree_logits(self, tree: _TreeTensors, points: list[torch.Tensor], labels: torch.Tensor,
                    protos: torch.Tensor, geo: _Geometry, weights: list[float]):
        """Per level: HNSA-widened logits and targets (``None`` where the weight is 0), and the HypAvg
        levels of ``points[0]`` when they were built."""
        hypavg = {}

        def levels_of(p):
            if id(p) not in hypavg:
                hypavg[id(p)] = self._hypavg(tree, p, labels, geo)
            return hypavg[id(p)]

        logits, targets = [], []
        for level, weight in enumerate(weights):
            if weight == 0:
                logits.append(None)
                targets.append(None)
                continue
            if self.settings["level_ce"] == "parents":
                entry = levels_of(points[level])[level]
                p, y = entry.points, entry.nodes
            else:
                p, y = points[level], tree.ancestor[level][labels]
            everything = distance_logits(p, protos, geo.c, geo.temperature)
            negatives = [(everything[:, tree.rows[level + step]], mask)
                         for step, mask in ((-1, tree.lower[level]), (1, tree.upper[level])) if mask is not None]
            logits.append(hnsa_logits(everything[:, tree.rows[level]], y, negatives))
            targets.append(y)
        return logits, targets, hypavg.get(id(points[0]))

    def forest_objective(self, points: list[torch.Tensor], labels: torch.Tensor, protos: torch.Tensor,
                         geo: _Geometry, weights: list[float]) -> torch.Tensor:
        """``Σ_trees Σ_l ω_l CE_l``: what the perturbations maximise."""
        return sum(hita_loss(*self.tree_logits(tree, points, labels, protos, geo, weights)[:2], weights)[0]
                   for tree in self.trees)

    def intra_gap_loss(self, tree: _TreeTensors, points: torch.Tensor, labels: torch.Tensor, protos: torch.Tensor,
                   geo: _Geometry, levels) -> torch.Tensor:
        margin = self.settings["gap_margin"]
        if self.settings["intra_gap"] == "image-text":
            return norm_order_loss(points, protos[tree.rows[0][labels]], margin)
        if levels is None:
            levels = self._hypavg(tree, points, labels, geo)
        children, parents = [], []
        for below, above in zip(levels[:-1], levels[1:]):
            n_children = torch.bincount(below.parent, minlength=above.points.shape[0])
            keep = n_children[below.parent] >= 2  # a parent with one child in the batch is that child
            children.append(below.points[keep])
            parents.append(above.points[below.parent[keep]])
        return norm_order_loss(torch.cat(children), torch.cat(parents), margin)

    # -- the Method interface ------------------------------------------------------------------------------
    def _weights(self) -> list[float]:
        weights = level_weights(self.settings["depth"])
        return [weights[0]] + [0.0] * self.settings["depth"] if self.settings["perturbation"] == "leaf" else weights

    def _seed(self, k: int) -> int:
        """Random starts differ per step (k = 0 image, 1 text) and repeat exactly on resume."""
        return (self._context().seed * 1_000_003 + self.step * 2 + k) % 2**62

    def perturb(self, batch: Batch) -> torch.Tensor:
        """Adversarial images ``[B, 3, S, S]`` (``[L+1, B, 3, S, S]`` for ``perturbation="per-level"``);
        the text perturbation δ_T is kept for the next :meth:`loss`."""
        ctx, s = self._context(), self.settings
        self.calibrate(batch.images)
        self.step += 1
        model, images, labels, depth = ctx.model, batch.images, batch.labels, s["depth"]
        with torch.no_grad():
            geo = self.current_geometry()
            protos = self.prototypes(geo)
        # per-level: L+1 independent copies of the batch, copy l attacked through level l's CE only;
        # the objective is a sum over copies and the L∞ step elementwise, so one PGD run is L+1 runs
        x = images.unsqueeze(0).repeat(depth + 1, 1, 1, 1, 1) if s["perturbation"] == "per-level" else images
        if ctx.eps > 0 and s["steps"] > 0:
            def objective(adv):
                return self.forest_objective(self._points_per_level(adv, geo), labels, protos, geo, self._weights())

            step_size = ctx.eps if s["step_size"] is None else s["step_size"]
            with attack_context(model), model.unchecked():
                x = pgd_maximize(objective, x, ThreatModel("linf", ctx.eps), s["steps"], step_size,
                                 random_start=s["random_start"], keep_best=False,
                                 generator=make_generator(self._seed(0), images.device), autocast=ctx.attack_autocast)
        adv = x.detach()
        with attack_context(model), model.unchecked():
            self._text_delta = self._perturb_text(adv, labels, geo)
        return adv

    def _perturb_text(self, adv: torch.Tensor, labels: torch.Tensor, geo: _Geometry) -> torch.Tensor | None:
        s = self.settings
        if s["text_eps"] == 0 or s["text_steps"] == 0:
            return None
        with torch.no_grad():
            points = self._points_per_level(adv, geo)
        shape = self.text_bank.shape

        def objective(bank_rows):
            return self.forest_objective(points, labels, self.prototypes(geo, bank_rows.view(shape)),
                                         geo, self._weights())

        delta = text_perturbation(objective, self.text_bank.flatten(0, -2), s["text_eps"], s["text_steps"],
                                  s["text_step_size"], s["random_start"], self._seed(1))
        return delta.view(shape)

    def _points_per_level(self, x: torch.Tensor, geo: _Geometry) -> list[torch.Tensor]:
        """Image points of ``x`` for every level: a batch ``[B, 3, S, S]`` serves all levels, a stack
        ``[L+1, B, 3, S, S]`` (per-level δ) gives each level its own copy (one encoder call either way)."""
        points = self.image_points(x.flatten(0, x.dim() - 4), geo)
        if x.dim() == 5:
            return list(points.view(x.shape[0], x.shape[1], -1))
        return [points] * (self.settings["depth"] + 1)

    def loss(self, batch: Batch, adv: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, float]]:
        self._context()  # raises before setup
        s = self.settings
        self.calibrate(batch.images)
        x, labels = (batch.images if adv is None else adv), batch.labels
        text_delta, self._text_delta = (None if adv is None else self._text_delta), None
        geo = self.current_geometry()
        points = self._points_per_level(x, geo)
        protos = self.prototypes(geo, None if text_delta is None else self.text_bank + text_delta)
        weights = level_weights(s["depth"])
        vic_on, gap_on = s["components"] in ("hita+vic", "full"), s["components"] in ("hita+gap", "full")
        total = torch.zeros((), device=labels.device)
        logs: dict[str, float] = {}

        def log(key, value):
            logs[key] = logs.get(key, 0.0) + float(value.detach())

        for tree in self.trees:
            logits, targets, levels = self.tree_logits(tree, points, labels, protos, geo, weights)
            hita, per_level = hita_loss(logits, targets, weights)
            tree_loss = hita
            log("hita", hita)
            for level, ce in enumerate(per_level):
                log(f"ce_{level}", ce)  # every weight of the training loss is > 0
            if vic_on:
                vic = vicinity_loss(points[0], protos[tree.rows[0][labels]], geo.c, s["vic_radius"])
                tree_loss = tree_loss + s["lambda_vic"] * vic
                log("vic", vic)
            if gap_on:
                label_gap = norm_order_loss(protos[tree.edge_child], protos[tree.edge_parent], s["gap_margin"])
                intra_gap = self.intra_gap_loss(tree, points[0], labels, protos, geo, levels)
                tree_loss = tree_loss + s["lambda_gap"] * (label_gap + intra_gap)
                log("gap_label", label_gap)
                log("gap_intra", intra_gap)
            total = total + tree_loss
        logs.update(loss=float(total.detach()), curvature=float(geo.c.detach()),
                    temperature=float(geo.temperature.detach()), image_scale=float(geo.image_scale.detach()),
                    text_scale=float(geo.text_scale.detach()))
        return total, logs
