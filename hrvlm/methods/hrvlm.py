"""HRVLM (Dong et al., CVPR 2026): hierarchical adversarial image–text alignment on the Poincaré ball.

Per training step (the method as the papernotes.org note on the paper gives it, Eqs. 8–14; the step's
order is our reconstruction, the paper's code not being public):

1. ``perturb``: one image perturbation δ (L∞ ε = step = the profile's ε, 3 steps) and one text
   perturbation δ_T (L∞ ε_T per coordinate of the normalised text embeddings, step ε_T), maximising
   the HITA objective ``Σ_trees Σ_l ω_l CE_l`` *jointly*, as Eq. 10's ``max_{δ_X, δ_T}`` reads: each
   sign-PGD step moves both along the same objective's gradients (:meth:`HRVLM.joint_perturbation`).
   The δ's are shared by all trees (one δ for the summed forest objective);
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
``[L+1, B, 3, S, S]``, with L_vic and L_gap on the leaf copy and one δ_T shared by the copies; ``universal``), ``hnsa`` (``both``,
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
* ``lambda_vic`` λ₁ = 0.1, ``vic_radius`` ζ_vic = 1.0 (hyperbolic distance), ``lambda_gap`` λ₂ = 1 (chapter
  03 trains λ₂ = 10 and 100 beside it, with the stated criterion "the smallest λ₂ that puts most parent–child
  text pairs in depth order"; on mini none does: 16 / 18 / 24 %, 12 % before training),
  ``gap_margin`` ζ_gap = 0.2 in hyperbolic distance to the origin (the hinges of
  :func:`~hrvlm.methods.hrvlm_losses.norm_order_loss`, linear in the scaled features where the ball's
  Euclidean norm saturates; 0.2 lets the five parent levels span the inner half of the leaves' depth
  2 = d_c(0, exp₀ of a tangent vector of norm ``init_norm`` 1)); terms are means over samples and
  edges; L_vic is taken at the leaf level (image vs its class's text point);
* logits ``−d_c/τ``; a level with one class and no HNSA negative (a root) contributes CE = 0;
* δ_T acts on each prompt row's projected text feature ``t`` as ``t + ‖t‖·δ_T``: a perturbation of
  the L2-normalised text embedding (CLIP's zero-shot space, where ε_T = 2·10⁻⁴ means the same for
  every model), in the L∞ norm of the image's δ.  Before (the pooled transformer output, L2 ε_T),
  δ_T was ~3·10⁻⁵ of the feature norm and raised the HITA loss by 0.006 against ~0.1 for δ;
* ``geometry_lr`` = 10⁻² for the learned log-curvature, log-temperature and log feature scales, their
  own optimiser group (:meth:`HRVLM.extra_learning_rates`): a log-parameter moves at most ~lr per
  AdamW step, so the backbone's 10⁻⁵ would allow ×1.2 over a 20k-step run (effectively frozen); at
  10⁻² a scale can change by e within 100 steps (the mini run's length) and by 1 % per step;
* ``random_start`` on for both; the random starts are seeded by the run's seed and the step count.

What each mechanism does is measured by methods of :class:`HRVLM` (tested in
``tests/test_hrvlm_method.py``; figures on the smoke profile's pretrained tiny CLIP, 64 fine-tuning
images, recorded in the book's chapter 03): :meth:`~HRVLM.perturbation_effects` (δ raises the
objective by 0.39, δ_T by 0.040, ~10 % of δ's), :meth:`~HRVLM.term_gradients` (gradient norms of
HITA, λ₁ L_vic and λ₂ L_gap on the image tower: 5.8 / 1.6 / 1.1; on the text projection: 1.9 / 0.15 /
0.13), :meth:`~HRVLM.radial_pulls` (L_vic pulls every image towards the origin, its text point lies
nearer it, while L_gap^intra pushes outwards on average: the paper's "leaves near the boundary" is the
gap's job, not vic's) and :meth:`~HRVLM.depth_order` (the share of parent–child edges in depth order).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from hrvlm.attacks.base import attack_context, autocast_context, make_generator
from hrvlm.attacks.hierarchical import level_weights
from hrvlm.attacks.threat import ThreatModel
from hrvlm.geometry import poincare as geometry
from hrvlm.heads.poincare import TEMPLATE_MEANS, distance_logits, lift, text_prototypes
from hrvlm.hierarchy.trees import forest_for_dataset, hnsa_negatives
from hrvlm.text.prompts import encode_prompts
from hrvlm.data.templates import load_templates

from hrvlm.methods.base import Batch, Method, TrainContext, register_method
from hrvlm.methods.hrvlm_losses import hita_loss, hnsa_logits, hypavg_edges, hypavg_levels, norm_order_loss, vicinity_loss

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
LOSS_TERMS = ("hita", "vic", "gap")  # the weighted terms whose sum is the training loss
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


def project_text(model: nn.Module, pooled: torch.Tensor) -> torch.Tensor:
    """CLIP's text projection (:meth:`~hrvlm.models.clip.PixelCLIP.project_text`) of cached pooled features,
    in float32 with autocast off: the projection is what HRVLM trains."""
    with torch.autocast(device_type=pooled.device.type, enabled=False):
        return model.project_text(pooled.float())


@register_method("hrvlm")
class HRVLM(Method):
    """The paper's method; every ablation and every quantity the paper leaves open is a setting
    (module docstring)."""

    defaults = {
        "components": "full", "perturbation": "universal", "hnsa": "both", "trees": 1, "depth": 5,
        "level_ce": "parents", "hypavg": "recursive", "intra_gap": "hypavg",
        "curvature": 1.0, "learn_curvature": False, "temperature": 0.1, "learn_temperature": False,
        "learn_scales": True, "init_norm": 1.0, "template_mean": "tangent",
        "lambda_vic": 0.1, "vic_radius": 1.0, "lambda_gap": 1.0, "gap_margin": 0.2, "geometry_lr": 1e-2,
        "steps": 3, "step_size": None, "random_start": True, "text_eps": 2e-4, "text_step_size": None,
    }

    def check_settings(self) -> None:
        s = self.settings
        for key, options in CHOICES.items():
            if s[key] not in options:
                raise ValueError(f"hrvlm: unknown {key} {s[key]!r}; choose one of {list(options)}")
        for key in ("trees", "depth", "steps"):
            if not isinstance(s[key], int) or isinstance(s[key], bool) or s[key] < 0:
                raise ValueError(f"hrvlm: {key} must be a non-negative integer, got {s[key]!r}")
        if not 1 <= s["trees"] <= MAX_TREES:
            raise ValueError(f"hrvlm: trees must be in 1..{MAX_TREES} (the paper's forest), got {s['trees']}")
        if s["depth"] < 1:
            raise ValueError(f"hrvlm: depth must be at least 1, got {s['depth']}")
        for key in ("learn_curvature", "learn_temperature", "learn_scales", "random_start"):
            if not isinstance(s[key], bool):
                raise ValueError(f"hrvlm: {key} must be true or false, got {s[key]!r}")
        positive = ("curvature", "temperature", "init_norm", "geometry_lr")
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
        bank = encode_prompts(model, ctx.tokenizer, self.bank_names, load_templates(spec.templates),
                              project=False).float()
        # the projection is linear: a class's tangent-space template mean is the projection of its mean
        self.text_bank = bank.mean(dim=1, keepdim=True) if s["template_mean"] == "tangent" else bank
        self.trees = [self._tree_tensors(tree, names, row, ctx.device) for tree, names in zip(forest, level_names)]
        with torch.no_grad():
            leaf_feats = project_text(model, self.text_bank[self.trees[0].rows[0]]).mean(dim=1)
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

    def extra_learning_rates(self) -> dict[str, float]:
        """Every learned geometry parameter (log c, log τ, log α) at ``geometry_lr`` (see the module docstring)."""
        return {name: self.settings["geometry_lr"] for name in self.extra_parameters()}

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

    def prototypes(self, geo: _Geometry, text_delta: torch.Tensor | None = None) -> torch.Tensor:
        """``[N, D]`` ball points of every bank prompt through the current text projection; with
        ``text_delta`` (δ_T, shaped as the projected features ``[N, T, D]``) each projected prompt
        feature ``t`` becomes ``t + ‖t‖·δ_T``: δ_T perturbs the L2-normalised text embedding."""
        feats = project_text(self._context().model, self.text_bank)
        if text_delta is not None:
            feats = feats + feats.norm(dim=-1, keepdim=True) * text_delta
        return text_prototypes(feats, geo.text_scale, geo.c, self.settings["template_mean"])

    def text_delta_shape(self) -> torch.Size:
        """The shape of δ_T: one row per bank prompt row, in the projection's output dimension."""
        clip = self._context().model.clip
        out = clip.text_projection.out_features if isinstance(clip.text_projection, nn.Linear) \
            else clip.text_projection.shape[1]
        return torch.Size((*self.text_bank.shape[:-1], out))

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
            return norm_order_loss(points, protos[tree.rows[0][labels]], margin, geo.c)
        if levels is None:
            levels = self._hypavg(tree, points, labels, geo)
        return norm_order_loss(*hypavg_edges(levels), margin, geo.c)

    # -- the Method interface ------------------------------------------------------------------------------
    def _weights(self) -> list[float]:
        weights = level_weights(self.settings["depth"])
        return [weights[0]] + [0.0] * self.settings["depth"] if self.settings["perturbation"] == "leaf" else weights

    def _seed(self, k: int) -> int:
        """Random starts differ per step (k = 0 image, 1 text) and repeat exactly on resume."""
        return (self._context().seed * 1_000_003 + self.step * 2 + k) % 2**62

    def perturb(self, batch: Batch) -> torch.Tensor:
        """Adversarial images ``[B, 3, S, S]`` (``[L+1, B, 3, S, S]`` for ``perturbation="per-level"``);
        the text perturbation δ_T, maximised jointly with δ, is kept for the next :meth:`loss`."""
        s = self.settings
        self.calibrate(batch.images)
        self.step += 1
        images, labels, depth = batch.images, batch.labels, s["depth"]
        # per-level: L+1 independent copies of the batch, copy l attacked through level l's CE only;
        # the objective is a sum over copies and the L∞ step elementwise, so one PGD run is L+1 runs
        x = images.unsqueeze(0).repeat(depth + 1, 1, 1, 1, 1) if s["perturbation"] == "per-level" else images
        with torch.no_grad():
            geo = self.current_geometry()
        adv, self._text_delta = self.joint_perturbation(x, labels, geo)
        return adv

    def joint_perturbation(self, x: torch.Tensor, labels: torch.Tensor, geo: _Geometry,
                           image_on: bool = True, text_on: bool = True):
        """``(x + δ, δ_T)`` maximising Eq. 10's ``Σ_trees Σ_l ω_l CE_l(x + δ, t + ‖t‖·δ_T)`` *jointly*
        (``max_{δ, δ_T}``): each of the ``steps`` sign-PGD steps moves δ (L∞ ε, step ``step_size``,
        default ε, inside [0, 1]) and δ_T (L∞ ε_T per coordinate of the normalised text embedding,
        step ``text_step_size``, default ε_T) along the same objective's gradients, from random starts.
        ``image_on`` / ``text_on`` = False keep that block at 0 (δ_T is then ``None``)."""
        ctx, s = self._context(), self.settings
        model = ctx.model
        image = ThreatModel("linf", ctx.eps if image_on else 0.0)
        text = ThreatModel("linf", s["text_eps"] if text_on else 0.0, box=None)
        steps = s["steps"] if image.eps > 0 or text.eps > 0 else 0
        steps_of = (ctx.eps if s["step_size"] is None else s["step_size"],
                    s["text_eps"] if s["text_step_size"] is None else s["text_step_size"])
        base = x.detach().float()
        zero_text = torch.zeros(self.text_delta_shape(), device=base.device)
        starts = [(image, base), (text, zero_text)]
        deltas = [t.random_start(b, make_generator(self._seed(k), b.device)) if s["random_start"] and t.eps > 0
                  and steps > 0 else torch.zeros_like(b) for k, (t, b) in enumerate(starts)]
        with attack_context(model), model.unchecked():
            for _ in range(steps):
                deltas = [d.detach().requires_grad_(True) for d in deltas]
                with autocast_context(base.device, ctx.attack_autocast):
                    points = self._points_per_level(image.apply(base, deltas[0]), geo)
                    objective = self.forest_objective(points, labels, self.prototypes(geo, deltas[1]), geo,
                                                      self._weights())
                grads = torch.autograd.grad(objective, deltas)
                with torch.no_grad():
                    deltas = [t.project(d + size * t.direction(g), b if t.box else None)
                              for (t, b), d, g, size in zip(starts, deltas, grads, steps_of)]
        adv = image.apply(base, deltas[0].detach()).to(x.dtype)
        return adv, (deltas[1].detach() if text.eps > 0 and steps > 0 else None)

    def _points_per_level(self, x: torch.Tensor, geo: _Geometry) -> list[torch.Tensor]:
        """Image points of ``x`` for every level: a batch ``[B, 3, S, S]`` serves all levels, a stack
        ``[L+1, B, 3, S, S]`` (per-level δ) gives each level its own copy (one encoder call either way)."""
        points = self.image_points(x.flatten(0, x.dim() - 4), geo)
        if x.dim() == 5:
            return list(points.view(x.shape[0], x.shape[1], -1))
        return [points] * (self.settings["depth"] + 1)

    def terms(self, points: list[torch.Tensor], labels: torch.Tensor, protos: torch.Tensor,
              geo: _Geometry) -> dict[str, torch.Tensor]:
        """The training loss's terms, each summed over the trees and weighted as in the loss:
        ``hita``, ``vic`` (λ₁ L_vic) and ``gap`` (λ₂ (L_gap^label + L_gap^intra)), as switched on by
        ``components``, plus the unweighted parts (``ce_l``, ``gap_label``, ``gap_intra``, ``vic_raw``)."""
        s = self.settings
        weights = level_weights(s["depth"])
        vic_on, gap_on = s["components"] in ("hita+vic", "full"), s["components"] in ("hita+gap", "full")
        out: dict[str, torch.Tensor] = {}

        def add(key, value):
            out[key] = out[key] + value if key in out else value

        for tree in self.trees:
            logits, targets, levels = self.tree_logits(tree, points, labels, protos, geo, weights)
            hita, per_level = hita_loss(logits, targets, weights)
            add("hita", hita)
            for level, ce in enumerate(per_level):
                add(f"ce_{level}", ce)  # every weight of the training loss is > 0
            if vic_on:
                vic = vicinity_loss(points[0], protos[tree.rows[0][labels]], geo.c, s["vic_radius"])
                add("vic_raw", vic)
                add("vic", s["lambda_vic"] * vic)
            if gap_on:
                label_gap = norm_order_loss(protos[tree.edge_child], protos[tree.edge_parent], s["gap_margin"], geo.c)
                intra_gap = self.intra_gap_loss(tree, points[0], labels, protos, geo, levels)
                add("gap_label", label_gap)
                add("gap_intra", intra_gap)
                add("gap", s["lambda_gap"] * (label_gap + intra_gap))
        return out

    def loss(self, batch: Batch, adv: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, float]]:
        self._context()  # raises before setup
        self.calibrate(batch.images)
        x, labels = (batch.images if adv is None else adv), batch.labels
        text_delta, self._text_delta = (None if adv is None else self._text_delta), None
        geo = self.current_geometry()
        terms = self.terms(self._points_per_level(x, geo), labels, self.prototypes(geo, text_delta), geo)
        total = sum(terms[k] for k in LOSS_TERMS if k in terms)
        logs = {("vic" if k == "vic_raw" else k): float(v.detach()) for k, v in terms.items()
                if k not in ("vic", "gap")}
        logs.update(loss=float(total.detach()), curvature=float(geo.c.detach()),
                    temperature=float(geo.temperature.detach()), image_scale=float(geo.image_scale.detach()),
                    text_scale=float(geo.text_scale.detach()))
        return total, logs

    # -- what each mechanism does, measured (Dong et al., CVPR 2026, arXiv:2604.18867, Eqs. 8–14) ----------
    def perturbation_effects(self, batch: Batch) -> dict[str, float]:
        """How much δ and δ_T raise the training objective ``Σ_trees Σ_l ω_l CE_l`` on ``batch``:
        ``clean`` (x, t), ``image`` (x + δ, t: δ maximised alone), ``text`` (x, t + δ_T: δ_T alone),
        ``joint`` (both, maximised together as in training) and the rises ``image_rise`` = image −
        clean, ``text_rise`` = text − clean; random starts as in training (one seed)."""
        geo = self.current_geometry()
        self.calibrate(batch.images)
        labels, weights = batch.labels, level_weights(self.settings["depth"])
        out = {}
        with torch.no_grad():
            def objective(x, delta):
                return float(self.forest_objective(self._points_per_level(x, geo), labels,
                                                   self.prototypes(geo, delta), geo, weights))
            out["clean"] = objective(batch.images, None)
        for name, image_on, text_on in (("image", True, False), ("text", False, True), ("joint", True, True)):
            adv, delta = self.joint_perturbation(batch.images, labels, geo, image_on, text_on)
            with torch.no_grad():
                out[name] = objective(adv, delta)
        out["image_rise"], out["text_rise"] = out["image"] - out["clean"], out["text"] - out["clean"]
        return out

    def term_gradients(self, batch: Batch, adv: torch.Tensor | None = None,
                       text_delta: torch.Tensor | None = None) -> dict[str, float]:
        """The L2 norm of each weighted loss term's gradient (``hita``, ``vic``, ``gap``) over the
        trainable parameters, on the image tower (``<term>_image``) and on the text projection
        (``<term>_text``): how hard each term pulls each side of the model."""
        ctx = self._context()
        self.calibrate(batch.images)
        named = list(self.trainable_parameters(ctx.model))
        params = [p for _, p in named]
        text_side = [n.startswith("clip.text_projection") for n, _ in named]
        geo = self.current_geometry()
        x = batch.images if adv is None else adv
        with autocast_context(ctx.device, ctx.autocast):
            terms = self.terms(self._points_per_level(x, geo), batch.labels, self.prototypes(geo, text_delta), geo)
        out = {}
        for key in LOSS_TERMS:
            if key in terms:
                grads = torch.autograd.grad(terms[key], params, retain_graph=True, allow_unused=True)
                for side, on_text in (("image", False), ("text", True)):
                    squares = [(g.float() ** 2).sum() for g, t in zip(grads, text_side) if g is not None and t == on_text]
                    out[f"{key}_{side}"] = float(torch.stack(squares).sum().sqrt()) if squares else 0.0
        return out

    def radial_pulls(self, batch: Batch) -> dict[str, float]:
        """Which way each term moves the images' points: per term, the mean over images of
        ``B · ⟨∇_φᵢ term, φᵢ/‖φᵢ‖⟩`` (positive: a descent step moves the image towards the origin) and the
        share of images it pulls inwards (``<term>_inward``), on the clean ``batch``."""
        geo = self.current_geometry()
        self.calibrate(batch.images)
        with torch.no_grad():
            points = self.image_points(batch.images, geo).float()
            protos = self.prototypes(geo)
        leaf = points.detach().requires_grad_(True)
        terms = self.terms([leaf] * (self.settings["depth"] + 1), batch.labels, protos, geo)
        out = {}
        for key in ("hita", "vic", "gap_intra"):
            if key in terms and terms[key].requires_grad:
                (grad,) = torch.autograd.grad(terms[key], leaf, retain_graph=True)
                radial = (grad * leaf / leaf.norm(dim=-1, keepdim=True)).sum(-1) * leaf.shape[0]
                out[key] = float(radial.detach().mean())
                out[f"{key}_inward"] = float((radial > 0).float().mean())
        return out

    def depth_order(self, batch: Batch | None = None) -> dict[str, float]:
        """The share of parent–child edges in depth order, parent nearer the origin (``d_c(0, ·)``):
        ``text`` over the text points of every tree's edges (those L_gap^label orders), and with a
        ``batch`` ``image`` over its HypAvg points (parents with two or more children in the batch,
        those L_gap^intra orders)."""
        geo = self.current_geometry()
        out = {}
        with torch.no_grad():
            protos = self.prototypes(geo)
            d0 = geometry.dist0(protos, geo.c)
            child = torch.cat([t.edge_child for t in self.trees])
            parent = torch.cat([t.edge_parent for t in self.trees])
            out["text"] = float((d0[parent] < d0[child]).float().mean())
            out["text_edges"] = int(child.numel())
            if batch is not None:
                self.calibrate(batch.images)
                points = self.image_points(batch.images, geo).float()
                pairs = [hypavg_edges(self._hypavg(tree, points, batch.labels, geo)) for tree in self.trees]
                deeper = torch.cat([geometry.dist0(children, geo.c) for children, _ in pairs])
                shallower = torch.cat([geometry.dist0(parents, geo.c) for _, parents in pairs])
                out["image"] = float((shallower < deeper).float().mean()) if deeper.numel() else float("nan")
                out["image_edges"] = int(deeper.numel())
        return out
