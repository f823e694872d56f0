"""Cross-checks against independent implementations, as rows a reader can check (the validation chapter).

Each check is a :class:`Row`: what is compared, against which independent reference, the measured
value, its tolerance and the direction of the bound (``max``: measured ≤ tolerance; ``min``:
measured ≥ tolerance).  A row whose reference is not available here is ``skipped`` with the reason,
never counted as passed.  :func:`require_pass` raises :class:`ValidationFailed` naming every failing row,
so a chapter that calls it fails the build.

* :func:`attack_rows`: our PGD and our APGD-CE/-DLR (AutoAttack's own-code components) beside
  ``torchattacks`` on the same classifier, images and (for PGD) the same random start: the share of
  identical adversarial images and the robust accuracy of each.
* :func:`geometry_rows`: :mod:`hrvlm.geometry.poincare` beside ``geoopt``'s κ-stereographic math (κ = −c), in
  float32 and float64 against geoopt in float64, and the behaviour at and past the boundary.
* :func:`theory_rows`: Theorem 1's quantities (:mod:`hrvlm.geometry.theory`) against their closed forms and limits.
* :func:`classname_rows`: our class lists against the ones torchvision ships in its package (no
  download): Flowers-102's ``classes`` and ImageNet's weight-metadata ``categories``.

Tolerances are fixed before measuring, from what the comparison can differ by: float round-off for
the same algorithm (1e-6 per value, in 99.9 % of an image's values), sampling noise for two implementations of one randomised
algorithm (two binomial standard errors of the difference), dtype resolution for the geometry.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from hrvlm.geometry import poincare as G
from hrvlm.geometry import theory as T

PIXEL_ATOL = 1e-6  # two values equal up to float round-off
# An adversarial image is "identical" to another when this share of its values are equal within PIXEL_ATOL: a
# round-off-flipped sign of a near-zero gradient component moves one value by 2 step sizes, so requiring every
# value would make the row fail by resolution alone (a 224-px image has 150,528 values, a 32-px one 3,072)
IDENTICAL_VALUES = 0.999


class ValidationFailed(AssertionError):
    """One or more validation rows failed; the message lists them."""


@dataclass(frozen=True)
class Row:
    """One check: ``measured`` against ``tolerance`` (``bound="max"``: ≤, ``"min"``: ≥)."""

    area: str
    check: str
    reference: str
    measured: float = math.nan
    tolerance: float = math.nan
    bound: str = "max"
    detail: str = ""
    skipped: str | None = None  # why the reference could not be consulted here

    @property
    def passed(self) -> bool:
        if self.skipped:
            return False
        if not math.isfinite(self.measured):
            return False
        return self.measured <= self.tolerance if self.bound == "max" else self.measured >= self.tolerance

    @property
    def status(self) -> str:
        return "skipped" if self.skipped else "pass" if self.passed else "FAIL"

    def requirement(self) -> str:
        return f"{'≤' if self.bound == 'max' else '≥'} {self.tolerance:.3g}"


def rows_frame(rows) -> pd.DataFrame:
    """The rows as a table: area, check, reference, measured, requirement, status, detail."""
    return pd.DataFrame([{"area": r.area, "check": r.check, "reference": r.reference,
                          "measured": r.measured if not r.skipped else None,
                          "requirement": r.requirement() if not r.skipped else "–",
                          "status": r.status, "detail": r.skipped or r.detail} for r in rows])


def require_pass(rows) -> None:
    """Raise :class:`ValidationFailed` if any row failed (skipped rows are reported, not failures)."""
    failed = [r for r in rows if not r.skipped and not r.passed]
    if failed:
        lines = [f"{r.area}: {r.check} vs {r.reference}: measured {r.measured:.4g}, required {r.requirement()}"
                 for r in failed]
        raise ValidationFailed(f"{len(failed)} validation row(s) failed:\n" + "\n".join(lines))


def noise_tolerance(p: float, n: int) -> float:
    """Two standard errors of the difference of two accuracies near ``p`` on ``n`` images:
    ``2·sqrt(2 p (1 − p) / n)``, at least one image (``1/n``)."""
    return max(2 * math.sqrt(2 * p * (1 - p) / n), 1 / n)


# ----------------------------------------------------------------------------- attacks
def _correct(forward, images, labels) -> torch.Tensor:
    with torch.no_grad():
        return forward(images).argmax(1) == labels


def _pair_rows(name: str, reference: str, forward, x, y, ours, theirs, identical_share: float | None) -> list[Row]:
    """Share of identical images (:data:`IDENTICAL_VALUES`; a row when ``identical_share`` is a requirement)
    and robust accuracies."""
    close = (ours.float() - theirs.float()).flatten(1).abs() <= PIXEL_ATOL
    same = float((close.float().mean(1) >= IDENTICAL_VALUES).float().mean())
    exact, pixels = float(close.all(1).float().mean()), float(close.float().mean())
    acc_ours, acc_theirs = (float(_correct(forward, a, y).float().mean()) for a in (ours, theirs))
    n = len(y)
    accuracies = f"robust accuracy: ours {100 * acc_ours:.1f} %, {reference} {100 * acc_theirs:.1f} % ({n} images)"
    rows = []
    if identical_share is not None:
        rows.append(Row("attacks", f"{name}: share of identical adversarial images", reference, same,
                        identical_share, "min",
                        f"identical: ≥ {100 * IDENTICAL_VALUES:g} % of an image's values with |Δ| ≤ {PIXEL_ATOL:g} "
                        f"({100 * exact:.0f} % of images in every value, {100 * pixels:.3f} % of all values); "
                        + accuracies))
    rows.append(Row("attacks", f"{name}: |robust accuracy ours − theirs|", reference, abs(acc_ours - acc_theirs),
                    noise_tolerance((acc_ours + acc_theirs) / 2, n), "max", accuracies + (f"; identical images {100 * same:.0f} %" if identical_share is None else "")))
    return rows


def attack_rows(forward, images: torch.Tensor, labels: torch.Tensor, eps: float, steps: int = 10,
                apgd_steps: int = 20, seed: int = 0) -> list[Row]:
    """Our attacks beside ``torchattacks`` on classifier ``forward`` (an ``nn.Module``) and ``images``.

    * PGD, ``steps`` steps of ε/4, no random start, last iterate (torchattacks' PGD keeps the last):
      the same algorithm, so ≥ 90 % of images identical (≥ 99.9 % of their values within 1e-6: float
      round-off can flip the sign of a near-zero gradient component, and a flipped step propagates) and
      robust accuracies within noise.
    * PGD from the same random start (torchattacks' own draw, ``uniform(−ε, ε)`` after
      ``torch.manual_seed(seed)``; global RNG state restored afterwards): the same requirements.
    * APGD-CE and APGD-DLR (our own code of Croce & Hein's algorithm, AutoAttack's TeCoA components)
      against torchattacks' APGD, ``apgd_steps`` iterations: different random starts, so robust
      accuracies within two standard errors of their difference (identical share reported only).
    * Our evaluation PGD (worst iterate kept, no random start) fools every image torchattacks' PGD
      fools, and never raises accuracy above clean.

    Our evaluation PGD and our APGD run as the evaluation runs them at level 0 (:meth:`~hrvlm.attacks.Attack.stopping_early`).
    """
    import torchattacks

    reference = f"torchattacks {torchattacks.__version__}"
    # Both in eval mode (batch norm on running statistics), each module's mode restored afterwards:
    # torchattacks restores a wrapper's mode with .train(), which would switch every inner module.
    modes = {module: module.training for module in forward.modules()}
    forward.eval()
    try:
        return _attack_rows(forward, images, labels, eps, steps, apgd_steps, seed, reference)
    finally:
        for module, mode in modes.items():
            module.training = mode


def _attack_rows(forward, images, labels, eps, steps, apgd_steps, seed, reference) -> list[Row]:
    import torchattacks

    from hrvlm.attacks import APGD, PGD, ThreatModel, ce_loss, pgd_maximize

    threat, alpha = ThreatModel("linf", eps), eps / 4
    x, y = images, labels
    rows = []

    def ours_pgd(start=None):
        return pgd_maximize(lambda a: ce_loss(forward(a), y), x, threat, steps=steps, step_size=alpha,
                            random_start=False, keep_best=False, start=start)

    theirs = torchattacks.PGD(forward, eps=eps, alpha=alpha, steps=steps, random_start=False)(x, y)
    rows += _pair_rows(f"PGD-{steps}, no random start", reference, forward, x, y, ours_pgd(), theirs, 0.9)
    # the evaluation PGD keeps each image's worst iterate, of which torchattacks' last one is one; stopping at an
    # image's first misclassified iterate, as the evaluation runs it at level 0
    evaluation_pgd = PGD(threat, steps=steps, step_size=alpha, random_start=False).stopping_early()
    kept = _correct(forward, evaluation_pgd(forward, x, y), y)
    rows.append(Row("attacks", f"PGD-{steps}: images torchattacks fools that our evaluation PGD does not", reference,
                    int((kept & ~_correct(forward, theirs, y)).sum()), 0, "max",
                    "ours keeps each image's worst iterate (torchattacks: the last)"))
    clean = _correct(forward, x, y)
    rows.append(Row("attacks", f"PGD-{steps} accuracy − clean accuracy (ours)", "clean accuracy",
                    float(kept.float().mean() - clean.float().mean()), 0.0, "max",
                    f"clean {100 * float(clean.float().mean()):.1f} %, under PGD {100 * float(kept.float().mean()):.1f} %"))
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        torch.manual_seed(seed)
        start = torch.empty_like(x).uniform_(-eps, eps)  # what torchattacks' PGD draws first
        torch.manual_seed(seed)
        theirs = torchattacks.PGD(forward, eps=eps, alpha=alpha, steps=steps, random_start=True)(x, y)
    rows += _pair_rows(f"PGD-{steps}, same random start", reference, forward, x, y, ours_pgd(start), theirs, 0.9)
    for loss in ("ce", "dlr"):
        # as the evaluation runs it at level 0: an image leaves at its first misclassified iterate (the same images
        # fall as in the full loop, tests/test_attacks.py), so these rows check what the book's numbers come from
        ours = APGD(threat, loss, steps=apgd_steps, seed=seed).stopping_early()(forward, x, y)
        with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
            theirs = torchattacks.APGD(forward, eps=eps, steps=apgd_steps, loss=loss, seed=seed)(x, y)
        rows += _pair_rows(f"APGD-{loss.upper()}-{apgd_steps}", reference, forward, x, y, ours, theirs, None)
    return rows


# ----------------------------------------------------------------------------- geometry
# Relative error allowed against geoopt in float64: float32 resolves ~1e-7, and the ball's functions
# amplify it near the boundary by up to 1/(1 − c‖x‖²) (~1e2 for the points used); float64 ~1e-16 × the same.
GEOMETRY_TOL = {torch.float32: 1e-4, torch.float64: 1e-10}
BOUNDARY_RADII = (1 - 1e-3, 1 - 1e-6, 1.0, 1 + 1e-6, 2.0)  # × 1/√c: inside, at and past the boundary


def _relative_error(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return float(((ours.double() - ref.double()).abs() / (1 + ref.double().abs())).max())


def geometry_rows(c: float = 1.0, n: int = 256, dim: int = 8, seed: int = 0) -> list[Row]:
    """:mod:`hrvlm.geometry.poincare` beside ``geoopt.manifolds.stereographic.math`` (curvature κ = −c).

    Points are ``expmap0`` of tangent vectors with norms log-spread over [0.01, 2]/√c (float32 still
    resolves them).  Per operation and dtype: the largest relative error ``|ours − geoopt₆₄| /
    (1 + |geoopt₆₄|)`` of ours in that dtype against geoopt in float64 (geoopt's own float32 error in
    the detail); the projection, whose radius ``(1 − eps)/√c`` depends on the dtype by design, against
    geoopt in the same dtype.  At and past the boundary (radii :data:`BOUNDARY_RADII`): the number of non-finite
    values and gradients of ``dist``, ``dist0`` and ``logmap0`` (0 required), and the projection
    against geoopt's.
    """
    try:
        with warnings.catch_warnings():  # geoopt compiles its math with torch.jit.script, which torch 2.14 deprecates
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
            import geoopt
            from geoopt.manifolds.stereographic import math as gmath
    except ImportError as err:
        return [Row("geometry", "hrvlm.geometry.poincare vs geoopt", "geoopt", skipped=f"geoopt is not installed ({err}): "
                    "pip install geoopt (the book extra installs it)")]
    reference = f"geoopt {geoopt.__version__}"
    gen = torch.Generator().manual_seed(seed)
    k = torch.tensor(-c, dtype=torch.float64)

    def tangent(count):
        v = torch.randn(count, dim, generator=gen, dtype=torch.float64)
        radius = torch.exp(torch.empty(count, 1, dtype=torch.float64).uniform_(math.log(0.01), math.log(2), generator=gen))
        return v / v.norm(dim=-1, keepdim=True) * radius / math.sqrt(c)

    x, y = G.expmap0(tangent(n), c, project=False), G.expmap0(tangent(n), c, project=False)
    v, far = tangent(n), torch.randn(n, dim, generator=gen, dtype=torch.float64) * 3 / math.sqrt(c)
    weights = torch.rand(n // 8, 8, generator=gen, dtype=torch.float64)
    inputs = {"x": x, "y": y, "v": v, "far": far, "w": weights}
    # name -> (ours(inputs), geoopt(inputs, k)); geoopt's gyromidpoint is Ungar's, which equals the
    # Einstein midpoint taken in the Klein model
    ops = {
        "mobius_add": (lambda i: G.mobius_add(i["x"], i["y"], c), lambda i, kk: gmath.mobius_add(i["x"], i["y"], k=kk)),
        "expmap0": (lambda i: G.expmap0(i["v"], c, project=False), lambda i, kk: gmath.expmap0(i["v"], k=kk)),
        "logmap0": (lambda i: G.logmap0(i["x"], c), lambda i, kk: gmath.logmap0(i["x"], k=kk)),
        "dist": (lambda i: G.dist(i["x"], i["y"], c), lambda i, kk: gmath.dist(i["x"], i["y"], k=kk)),
        "dist0": (lambda i: G.dist0(i["x"], c), lambda i, kk: gmath.dist0(i["x"], k=kk)),
        "project": (lambda i: G.project(i["far"], c), lambda i, kk: gmath.project(i["far"], k=kk)),
        "einstein_midpoint": (lambda i: G.einstein_midpoint(i["x"].reshape(-1, 8, dim), i["w"], c),
                              lambda i, kk: gmath.weighted_midpoint(i["x"].reshape(-1, 8, dim), i["w"], k=kk,
                                                                    reducedim=[-2])),
    }
    rows = []
    for name, (ours, theirs) in ops.items():
        for dtype in (torch.float32, torch.float64):
            cast = {key: value.to(dtype) for key, value in inputs.items()}
            # the projection's radius depends on the dtype by design (boundary eps, geoopt's too):
            # it is compared with geoopt in the same dtype
            ref_dtype = dtype if name == "project" else torch.float64
            ref = theirs({key: value.to(ref_dtype) for key, value in inputs.items()}, k.to(ref_dtype))
            error = _relative_error(ours(cast), ref)
            own = _relative_error(theirs(cast, k.to(dtype)), theirs(inputs, k))
            rows.append(Row("geometry", f"{name}, {str(dtype).removeprefix('torch.')}",
                            f"{reference} ({str(ref_dtype).removeprefix('torch.')})", error, GEOMETRY_TOL[dtype], "max",
                            f"relative error; geoopt's own {str(dtype).removeprefix('torch.')} against its "
                            f"float64: {own:.2g}; {n} points, c = {c:g}"))
    for dtype in (torch.float32, torch.float64):
        direction = torch.nn.functional.normalize(torch.randn(len(BOUNDARY_RADII), dim, generator=gen, dtype=torch.float64), dim=-1)
        edge = (direction * torch.tensor(BOUNDARY_RADII, dtype=torch.float64)[:, None] / math.sqrt(c)).to(dtype)
        point = edge.clone().requires_grad_()
        values = torch.cat([G.dist(point, point.flip(0), c), G.dist0(point, c), G.logmap0(point, c).flatten()])
        (grad,) = torch.autograd.grad(values.sum(), point)
        bad = int((~torch.isfinite(values)).sum() + (~torch.isfinite(grad)).sum())
        dname = str(dtype).removeprefix("torch.")
        rows.append(Row("geometry", f"non-finite values/gradients at and past the boundary, {dname}",
                        "finite by construction", bad, 0, "max",
                        f"radii {', '.join(f'{r:.6g}' for r in BOUNDARY_RADII)} × 1/√c; dist, dist0, logmap0"))
        projected = G.project(edge.detach(), c)
        outside = int((projected.norm(dim=-1) >= 1 / math.sqrt(c)).sum())
        error = _relative_error(projected, gmath.project(edge.detach(), k=k.to(dtype)))
        rows.append(Row("geometry", f"projection of boundary points, {dname}", reference + f" ({dname})", error,
                        GEOMETRY_TOL[dtype], "max", f"{outside} projected point(s) on or outside the ball "
                        f"(boundary eps {G.boundary_eps(dtype):g})"))
        rows.append(Row("geometry", f"projected points strictly inside the ball, {dname}", "‖x‖ < 1/√c",
                        outside, 0, "max", f"{len(BOUNDARY_RADII)} points"))
    return rows


# ----------------------------------------------------------------------------- theory
def theory_rows(c: float = 1.0, scale: float = 1.0) -> list[Row]:
    """Theorem 1's quantities against their closed forms (float64).

    * the closed-form margin vs margins measured from explicit Poincaré distances
      (:func:`hrvlm.geometry.theory.closed_form_check`, 200 norms up to 0.999/√c, β_c = 0°, 5°, 20°): ≤ 1e-7;
    * the margin at η = (1 − 1e-9)/√c vs the saturation limit ``(2λ/√c) log(sin(β_k/2)/sin(β_c/2))``
      (β_c = 5°, 20°; the error is O(1/A) with A = 8cη²/(1 − cη²)² ≈ 2e17): ≤ 1e-6;
    * the zero-angle margin vs its asymptote ``(2λ/√c) log(4√c η sin(β_k/2)/(1 − cη²))`` at
      η = (1 − 1e-4)/√c (error O((1 − cη²)²) ≈ 4e-8·λ): ≤ 1e-6·λ;
    * the Euclidean margin λη²(cos β_c − cos β_k) over 10,000 random angles and norms never above its cap
      2λη²: largest excess ≤ 1e-12.
    """
    rival = 90.0
    rows = []
    table = T.closed_form_check(np.linspace(0.01, 0.999, 200) / math.sqrt(c), (0.0, 5.0, 20.0), rival, c, scale)
    for beta, row in table.iterrows():
        rows.append(Row("theory", f"closed-form margin, β_c = {beta:g}°", "measured Poincaré distances",
                        row["max |measured − closed|"], 1e-7, "max",
                        f"{int(row['configurations'])} norms; worst at η = {row['at η']:.3g}"))
    eta = (1 - 1e-9) / math.sqrt(c)
    for deg in (5.0, 20.0):
        beta = math.radians(deg)
        margin = float(T.hyperbolic_log_margin(eta, beta, beta + math.radians(rival), c, scale))
        limit = float(T.saturation_limit(beta, beta + math.radians(rival), c, scale))
        rows.append(Row("theory", f"saturation limit, β_c = {deg:g}°", "margin at η = (1 − 1e-9)/√c",
                        abs(margin - limit), 1e-6, "max", f"limit {limit:.6f}, margin {margin:.6f}"))
    eta = (1 - 1e-4) / math.sqrt(c)
    growth = float(T.zero_angle_growth(eta, math.radians(rival), c, scale))
    margin = float(T.hyperbolic_log_margin(eta, 0.0, math.radians(rival), c, scale))
    rows.append(Row("theory", "zero-angle growth asymptote", "margin at η = (1 − 1e-4)/√c, β_c = 0",
                    abs(margin - growth), 1e-6 * scale, "max", f"margin {margin:.6f}"))
    rng = np.random.default_rng(0)
    etas, b1, b2 = rng.uniform(0.01, 3, 10_000), rng.uniform(0, math.pi, 10_000), rng.uniform(0, math.pi, 10_000)
    excess = float(np.max(T.euclidean_log_margin(etas, b1, b2, scale) - T.euclidean_margin_cap(etas, scale)))
    rows.append(Row("theory", "Euclidean margin never above 2λη²", "the cap", excess, 1e-12, "max",
                    "10,000 random norms and angles; largest (margin − cap)"))
    return rows


# ----------------------------------------------------------------------------- class names
def _normalised(name: str) -> str:
    return " ".join(name.lower().replace("_", " ").replace("-", " ").split())


def classname_rows(datasets) -> list[Row]:
    """Our class lists against torchvision's own metadata, where its package ships it (no download).

    * ``flowers102``: ``torchvision.datasets.Flowers102.classes`` (102 names in label order): the share
      of our names equal to torchvision's (case, ``_``/``-`` and spacing ignored) ≥ 95 % and the same count;
    * ``imagenet``: ``torchvision.models.ResNet50_Weights.IMAGENET1K_V1.meta["categories"]`` (1,000
      names in label order): the share of labels whose torchvision name is a lemma of the WordNet synset
      of our wnid at that label ≥ 99 % (this checks our wnid order; needs WordNet 3.0);
    * every other set: skipped, since torchvision reads its class list from the downloaded files.
    """
    from hrvlm.data import get_spec
    from hrvlm.data.registry import classname_file

    rows = []
    for name in datasets:
        ours = list(get_spec(name).classnames)
        if name == "flowers102":
            import torchvision

            theirs = list(torchvision.datasets.Flowers102.classes)
            same = sum(_normalised(a) == _normalised(b) for a, b in zip(ours, theirs)) / len(theirs)
            rows.append(Row("class names", "flowers102: same count", f"torchvision {torchvision.__version__} Flowers102.classes",
                            abs(len(ours) - len(theirs)), 0, "max", f"ours {len(ours)}, torchvision {len(theirs)}"))
            differ = [f"{a!r}/{b!r}" for a, b in zip(ours, theirs) if _normalised(a) != _normalised(b)][:3]
            rows.append(Row("class names", "flowers102: share of identical names in label order",
                            f"torchvision {torchvision.__version__} Flowers102.classes", same, 0.95, "min",
                            "first differences (ours/torchvision): " + (", ".join(differ) or "none")))
        elif name == "imagenet":
            rows.append(_imagenet_row(classname_file(name)["wnids"]))
        else:
            rows.append(Row("class names", f"{name}: class list", "torchvision",
                            skipped=f"torchvision ships no class list for {name} (it reads it from the downloaded files)"))
    return rows


def _imagenet_row(wnids) -> Row:
    import torchvision

    from hrvlm.hierarchy.wordnet import synset_from_wnid

    reference = f"torchvision {torchvision.__version__} ImageNet weights' categories + WordNet 3.0"
    categories = torchvision.models.ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
    try:
        lemmas = [{_normalised(lemma) for lemma in synset_from_wnid(w).lemma_names()} for w in wnids]
    except (LookupError, FileNotFoundError, OSError) as err:  # WordNet data absent here
        return Row("class names", "imagenet: wnid order", reference, skipped=f"WordNet is not available ({err})")
    hits = [_normalised(cat) in lem for cat, lem in zip(categories, lemmas)]
    misses = [f"{i}: {categories[i]!r} not in {wnids[i]}" for i, ok in enumerate(hits) if not ok][:3]
    return Row("class names", "imagenet: torchvision's name at each label is a lemma of our wnid", reference,
               sum(hits) / len(hits), 0.99, "min",
               f"{len(categories)} labels vs our {len(wnids)} wnids; misses: " + ("; ".join(misses) or "none"))


# ----------------------------------------------------------------------------- a profile's rows
def validation_rows(profile: str, n: int | None = None, seed: int = 0, device=None) -> list[Row]:
    """Every row for ``profile``: the attacks on the profile's pretrained model and the ``uci-digits``
    images (real images every profile has; ``n`` of its fixed subset, default the book's ``eval_n``) at
    ε = 1 unit, PGD-10 and APGD with the book's ``autoattack_steps``; the geometry (c = 1); the theory;
    the class lists of the profile's evaluation sets (the full profile's 15 under every profile)."""
    from hrvlm.data import fixed_subset, get_dataset
    from hrvlm.core.environment import default_device
    from hrvlm.book.experiments import book_settings
    from hrvlm.heads import build_head
    from hrvlm.models.clip import PretrainedUnavailable, load_clip
    from hrvlm.profiles import get_profile
    from hrvlm.data.templates import load_templates

    prof, book = get_profile(profile), book_settings(profile)
    n = n or book.get("eval_n") or prof.eval_n
    device = default_device(device)
    others = geometry_rows() + theory_rows() + classname_rows(get_profile("full").eval_datasets)
    try:
        model, _, tokenizer = load_clip(prof.model, prof.pretrained, device=device)
    except (PretrainedUnavailable, FileNotFoundError) as err:  # full offline: no weights, the rest still checks
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        return [Row("attacks", "PGD and APGD vs torchattacks", "torchattacks",
                    skipped=f"the profile's pretrained weights {prof.pretrained!r} are not available here: {reason}")] + others
    data = get_dataset(DIGITS, image_size=model.image_size)
    ids = fixed_subset(DIGITS, len(data), n)
    x = torch.stack([data[int(i)][0] for i in ids]).to(device)
    y = torch.tensor([data[int(i)][1] for i in ids], device=device)
    head = build_head({"kind": "cosine"}, model, tokenizer, [list(data.classnames)], load_templates("mini")).level(0)
    return attack_rows(head, x, y, prof.eps(1), steps=10, apgd_steps=int(book.get("autoattack_steps", 20)),
                       seed=seed) + others


DIGITS = "uci-digits"


# ----------------------------------------------------------------------------- real-data transfer
def digits_transfer(records_by_variant, z: float = 1.96) -> pd.DataFrame:
    """Clean and robust zero-shot accuracy on ``uci-digits`` per variant, with intervals and baselines.

    ``records_by_variant``: ``{label: records}`` from :func:`hrvlm.book.experiments.evaluate_run` on
    ``uci-digits`` (leaf level; one record per attack).  Percent, each with its Wilson interval
    (:func:`hrvlm.results.metrics.wilson_interval`; ``z = 1.96``: 95 %), beside the majority baseline of the
    evaluated labels (:func:`hrvlm.results.metrics.majority_baseline`) and chance (1/10).
    """
    from hrvlm.data import fixed_subset, get_dataset
    from hrvlm.results.metrics import majority_baseline, wilson_interval

    data = get_dataset(DIGITS)

    def interval(p, n):
        low, high = wilson_interval(p, n, z)
        return f"{100 * low:.1f}–{100 * high:.1f}"

    rows = []
    for label, records in records_by_variant.items():
        for record in records:
            if record["dataset"] != DIGITS or record["level"] != 0:
                continue
            n = record["n"]
            labels = data.labels[torch.as_tensor(fixed_subset(DIGITS, len(data), n))].numpy()
            row = {"variant": str(label), "n": n, "majority (%)": 100 * majority_baseline(labels),
                   "chance (%)": 100 / len(data.classnames), "clean (%)": 100 * record["clean_acc"],
                   "clean 95 % interval": interval(record["clean_acc"], n)}
            attack = record.get("attack")
            if attack is not None:
                row.update({"attack": attack["name"], "robust (%)": 100 * record["robust_acc"],
                            "robust 95 % interval": interval(record["robust_acc"], n)})
            rows.append(row)
    return pd.DataFrame(rows).set_index("variant") if rows else pd.DataFrame()
