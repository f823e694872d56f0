"""The papers' ablations as data (chapters 07 and 08 of the book), on top of :mod:`hrvlm.experiments`.

An ablation is a list of :class:`~hrvlm.experiments.Variant` of one method that differ in one setting
(:func:`variants`); each is trained and evaluated by :mod:`hrvlm.experiments` (cached runs, records
store).  The reference variant of every HRVLM ablation (full components, universal perturbation, both
HNSA directions, one tree) *is* the main table's ``HRVLM (1 tree)`` variant, so it is one run.

How big ablation runs are is profile data (``profiles.<profile>.book``, :func:`sizes`):
``ablation_loop`` overrides the training loop of every ablation variant, reference included.  It is
empty in every profile, so the reference is the main table's run and its records the main table's;
a shorter loop there is the knob for a faster book (all variants of one table share it, so they stay
comparable with each other, no longer with the main table).
"""
from __future__ import annotations

import math

from .experiments import Variant

# the main table's HRVLM row: every HRVLM ablation's reference (same settings → same run)
REFERENCE = {"trees": 1}

# name -> method, paper table (or None) and variants: (row label, the setting of the row, paper row method id)
ABLATIONS = {
    "components": ("hrvlm", "hrvlm-table10", [
        ("+ HITA", {"components": "hita"}, "hrvlm-hita"),
        ("+ HITA + vic", {"components": "hita+vic"}, "hrvlm-hita-vic"),
        ("+ HITA + gap", {"components": "hita+gap"}, "hrvlm-hita-gap"),
        ("Full (HITA + vic + gap)", {"components": "full"}, "hrvlm-1tree")]),
    "perturbation": ("hrvlm", "hrvlm-table12", [
        ("Leaf-only perturbation", {"perturbation": "leaf"}, "hrvlm-leaf-perturbation"),
        ("Separate perturbation per level", {"perturbation": "per-level"}, "hrvlm-per-level-perturbation"),
        ("Universal hierarchical perturbation", {"perturbation": "universal"}, "hrvlm-1tree")]),
    "hnsa": ("hrvlm", "hrvlm-hnsa", [
        ("both neighbouring levels (l-1 and l+1)", {"hnsa": "both"}, "hrvlm-1tree"),
        ("lower level only (l-1)", {"hnsa": "lower"}, "hrvlm-hnsa-lower"),
        ("higher level only (l+1)", {"hnsa": "upper"}, "hrvlm-hnsa-upper")]),
    # no table of the paper: the mini world's caption-quality ladder through QT-AFT's `captions` setting
    "captions": ("qtaft", None, [
        ("class name", {"captions": "name"}, None),
        ("prompt template", {"captions": "template"}, None),
        ("name + WordNet gloss", {"captions": "gloss"}, None),
        ("object with its properties", {"captions": "detailed"}, None)]),
}


def sizes(profile: str) -> dict:
    """The profile's ``book`` entry, checked for the keys the ablation chapters read: ``ablation_loop``
    (training-loop overrides, ``{}`` = the book's own loop), ``ablation_attacks`` (``pgd``: PGD-20,
    ``autoattack``), ``eval_n`` (images per evaluation set) and ``autoattack_steps``."""
    from .experiments import book_settings

    book = book_settings(profile)
    missing = [k for k in ("ablation_loop", "ablation_attacks", "eval_n", "autoattack_steps") if k not in book]
    if missing:
        raise KeyError(f"profile {profile!r} lacks the book setting(s) {missing} (profiles.json, "
                       f"profiles.{profile}.book; see its book_keys note)")
    return book


def variants(name: str, profile: str) -> list[Variant]:
    """The variants of ablation ``name`` (a key of :data:`ABLATIONS`) with the profile's ``ablation_loop``.

    A row's setting equal to what the profile already uses is left out of the variant, so that the
    row is the same configuration, hence the same run, as the main table's (e.g. QT-AFT's ``detailed``
    captions in the mini world, ``gloss`` under ``full``)."""
    from .methods import build_method
    from .profiles import get_profile

    if name not in ABLATIONS:
        raise KeyError(f"unknown ablation {name!r}; known: {sorted(ABLATIONS)}")
    method, _, rows = ABLATIONS[name]
    effective = build_method(method, get_profile(profile).method(method)).settings
    base = REFERENCE if method == "hrvlm" else {}
    loop = sizes(profile)["ablation_loop"]
    return [Variant.of(label, method, {**base, **{k: v for k, v in settings.items() if effective.get(k) != v}},
                       paper=paper, loop=loop) for label, settings, paper in rows]


def tree_variants(profile: str) -> list[Variant]:
    """HRVLM with 1, 2, … N trees, N the distinct trees of the profile's fine-tuning forest (at most 5)."""
    from .experiments import forest_size

    loop = sizes(profile)["ablation_loop"]
    return [Variant.of(f"{k} tree{'s' if k > 1 else ''}", "hrvlm", {**REFERENCE, "trees": k},
                       paper={1: "hrvlm-1tree", 5: "hrvlm-5trees"}.get(k), loop=loop)
            for k in range(1, forest_size(profile) + 1)]


def attacks(names, profile: str, eps: float = 1.0, pgd_steps: int = 20, autoattack_steps: int | None = None) -> list:
    """``pgd`` (``pgd_steps`` steps) and ``autoattack`` (``autoattack_steps`` per component; ``None``: the
    attack's own) at ε = ``eps`` × the profile's unit, in the order named."""
    from .experiments import attack

    known = {"pgd": {"steps": pgd_steps}, "autoattack": {} if autoattack_steps is None else {"steps": autoattack_steps}}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown ablation attack(s) {unknown}; use {sorted(known)}")
    return [attack(name, profile, eps, **known[name]) for name in names]


def run_study(variants: list[Variant], profile: str, attacks: list, n: int, seed: int = 0):
    """Train (or reuse) every variant's run and evaluate it on the profile's evaluation sets: returns
    ``(runs, frame)``, the run folders by variant and :func:`hrvlm.experiments.results_frame`."""
    from .experiments import evaluate_run, results_frame, train_run

    runs = {v: train_run(v, profile, seed=seed) for v in variants}
    results = {v: evaluate_run(run, profile, attacks, n=n, seed=seed, progress=False) for v, run in runs.items()}
    return runs, results_frame(results)


def epoch_minutes(record: dict) -> float:
    """Training time per epoch (minutes) of a run record: the mean of its whole epochs, or the estimate
    extrapolated from its steps when it ran less than one epoch."""
    whole = record.get("epoch_times_s") or []
    seconds = sum(whole) / len(whole) if whole else record.get("epoch_time_s_estimate")
    return math.nan if seconds is None else seconds / 60.0


def results_view(frame, profile: str, title: str):
    """``(table, figure)``: the variants' accuracy table (:func:`hrvlm.experiments.accuracy_table`) and
    grouped bars of its averages."""
    import matplotlib.pyplot as plt

    from .experiments import AVERAGE, accuracy_table, plot_grouped_bars

    table = accuracy_table(frame, profile)
    fig, ax = plt.subplots(figsize=(8, 3.6))
    plot_grouped_bars(ax, table[AVERAGE], title=f"{title} ({profile} profile, average)")
    fig.tight_layout()
    return table, fig


def reading(table, title: str) -> str:
    """One sentence on an accuracy table's averages: per metric, the best and worst variant and the
    spread in points (what a reader should check against the paper's claim, whatever it shows)."""
    from .experiments import AVERAGE

    if table is None or table.empty or AVERAGE not in table.columns.get_level_values(0):
        return f"{title}: no results in this build."
    parts = []
    for metric, values in table[AVERAGE].items():
        values = values.dropna()
        if values.empty:
            continue
        best, worst = values.idxmax(), values.idxmin()
        if values[best] - values[worst] < 0.05:
            parts.append(f"{metric}: every variant at {values[best]:.1f} %")
            continue
        parts.append(f"{metric}: best {best} ({values[best]:.1f} %), worst {worst} ({values[worst]:.1f} %), "
                     f"a spread of {values[best] - values[worst]:.1f} points")
    return f"{title} — " + "; ".join(parts) + "."
