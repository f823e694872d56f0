"""The papers' ablations as data (chapters 07 and 08 of the book), on top of :mod:`hrvlm.book.experiments`.

An ablation is a list of :class:`~hrvlm.book.experiments.Variant` of one method that differ in one setting
(:func:`variants`); each is trained and evaluated by :mod:`hrvlm.book.experiments` (cached runs, records
store).  The reference variant of every HRVLM ablation (full components, universal perturbation, both
HNSA directions, one tree) is the main table's ``HRVLM (1 tree)`` variant with the ablations' loop, so
it is one run shared by all of them.

How big ablation runs are is profile data (``profiles.<profile>.book``, :func:`sizes`):
``ablation_loop`` overrides the training loop of every ablation variant, reference included.  Where it
is empty (``smoke``, ``full``) the reference is the main table's run and its records the main table's;
``mini`` trains its ablations shorter than its main table, for the book's time budget (all variants of
one table share the loop, so they stay comparable with each other, no longer with the main table).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np
import pandas as pd

from hrvlm.book.experiments import Variant
from hrvlm.book.intervals import as_points, attack_estimates
from hrvlm.profiles import get_profile

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from hrvlm.results.tables import Comparison

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
    # no table of the paper: the open choices of our reading of HRVLM that the review found (issue 21);
    # the first row is the reference run (ours: level_ce "parents", δ_T on)
    "open-choices": ("hrvlm", None, [
        ("reference (level CE on HypAvg parents, δ_T on)", {"level_ce": "parents"}, "hrvlm-1tree"),
        ("level CE on every image (level_ce images)", {"level_ce": "images"}, None),
        ("no text perturbation (ε_T = 0)", {"text_eps": 0.0}, None)]),
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
    ``autoattack``), ``ablation_datasets`` (:func:`datasets`), ``eval_n`` (images per evaluation set) and
    ``autoattack_steps``."""
    from hrvlm.book.experiments import book_settings

    book = book_settings(profile)
    missing = [k for k in ("ablation_loop", "ablation_attacks", "ablation_datasets", "eval_n", "autoattack_steps")
               if k not in book]
    if missing:
        raise KeyError(f"profile {profile!r} lacks the book setting(s) {missing} (profiles.json, "
                       f"profiles.{profile}.book; see its book_keys note)")
    return book


def datasets(profile: str) -> tuple[str, ...]:
    """The evaluation sets of the ablation studies (chapters 07 and 08's caption ladder) and of their claims:
    the profile's ``book.ablation_datasets``, ``null`` for every evaluation set (the paper's average).  A set
    the profile does not evaluate on is a one-line error."""
    prof = get_profile(profile)
    chosen = sizes(profile)["ablation_datasets"]
    if chosen is None:
        return tuple(prof.eval_datasets)
    if not isinstance(chosen, list) or not chosen or any(d not in prof.eval_datasets for d in chosen):
        raise ValueError(f"profile {profile!r}: book.ablation_datasets must be null or a list of its evaluation "
                         f"sets {list(prof.eval_datasets)}; got {chosen!r}")
    return tuple(chosen)


def sets_note(sets: Sequence[str], profile: str) -> str:
    """A chapter's words for the sets its ablations are evaluated on: empty for every evaluation set,
    else which ones, so that a reader knows what the averages are over."""
    if tuple(sets) == tuple(get_profile(profile).eval_datasets):
        return ""
    return f" on {', '.join(sets)} only (book.ablation_datasets; the averages are over these)"


def variants(name: str, profile: str) -> list[Variant]:
    """The variants of ablation ``name`` (a key of :data:`ABLATIONS`) with the profile's ``ablation_loop``.

    A row's setting equal to what the profile already uses is left out of the variant, so that the
    row is the same configuration, hence the same run, as the main table's (e.g. QT-AFT's ``detailed``
    captions in the mini world, ``gloss`` under ``full``)."""
    from hrvlm.methods import build_method
    from hrvlm.profiles import get_profile

    if name not in ABLATIONS:
        raise KeyError(f"unknown ablation {name!r}; known: {sorted(ABLATIONS)}")
    method, _, rows = ABLATIONS[name]
    effective = build_method(method, get_profile(profile).method(method)).settings
    base = REFERENCE if method == "hrvlm" else {}
    loop = sizes(profile)["ablation_loop"]
    return [Variant.of(label, method, {**base, **{k: v for k, v in settings.items() if effective.get(k) != v}},
                       paper=paper, loop=loop) for label, settings, paper in rows]


def caption_variants(profile: str) -> list[Variant]:
    """The caption-quality rows the profile can train: every row of the ``captions`` ablation in the mini
    world; elsewhere only the qualities a class name determines (:data:`hrvlm.text.captions.CLASS_QUALITIES`:
    real data has no rendered properties to state)."""
    from hrvlm.text.captions import CLASS_QUALITIES
    from hrvlm.profiles import get_profile
    from hrvlm.results.tables import is_mini_world

    rows = ABLATIONS["captions"][2]
    mini = is_mini_world(get_profile(profile).train_dataset)
    return [v for v, (_, setting, _) in zip(variants("captions", profile), rows)
            if mini or setting["captions"] in CLASS_QUALITIES]


def tree_variants(profile: str) -> list[Variant]:
    """HRVLM with 1, 2, … N trees, N the distinct trees of the profile's fine-tuning forest (at most 5)."""
    from hrvlm.book.experiments import forest_size

    loop = sizes(profile)["ablation_loop"]
    return [Variant.of(f"{k} tree{'s' if k > 1 else ''}", "hrvlm", {**REFERENCE, "trees": k},
                       paper={1: "hrvlm-1tree", 5: "hrvlm-5trees"}.get(k), loop=loop)
            for k in range(1, forest_size(profile) + 1)]


def attacks(names, profile: str, eps: float = 1.0, pgd_steps: int = 20, autoattack_steps: int | None = None) -> list:
    """``pgd`` (``pgd_steps`` steps) and ``autoattack`` (``autoattack_steps`` per component; ``None``: the
    attack's own) at ε = ``eps`` × the profile's unit, in the order named."""
    from hrvlm.book.experiments import attack

    known = {"pgd": {"steps": pgd_steps}, "autoattack": {} if autoattack_steps is None else {"steps": autoattack_steps}}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown ablation attack(s) {unknown}; use {sorted(known)}")
    return [attack(name, profile, eps, **known[name]) for name in names]


@dataclass(frozen=True)
class Study:
    """One ablation as a chapter shows it: the run folders by variant (none when the profile cannot run
    here), their records ``frame``, the paper's table beside ours (``comparison``, ``None`` without a paper
    table) and, when something ran, ours per dataset (``table``, :func:`hrvlm.book.experiments.accuracy_table`)
    with grouped bars of its averages (``figure``, when asked for)."""

    title: str
    runs: dict
    frame: pd.DataFrame
    comparison: Comparison | None = None
    table: pd.DataFrame | None = None
    figure: Figure | None = None
    intervals: pd.DataFrame | None = None

    def shown(self) -> list:
        """What a chapter displays, in order: the paper's table beside ours (if there is one), ours per dataset
        (means over seeds) and the averages with their 95 % intervals (if anything ran); ``figure`` is drawn by
        matplotlib, with those intervals as error bars."""
        shown = [part for part in (self.comparison, self.table) if part is not None]
        if self.intervals is None:
            return shown
        seeds = len(next(iter(self.runs.values())))
        caption = (f"{self.title}: accuracy (%) averaged over the evaluation sets, mean over {seeds} seed(s) "
                   "[95 % seed × image interval]")
        return shown + [as_points(self.intervals).style.set_caption(caption)]


def study(variants: list[Variant], profile: str, attacks: list, n: int, seeds: Sequence[int] | None = None, *,
          title: str, paper: str | None = None, bars: bool = True, sets: Sequence[str] | None = None) -> Study:
    """Train (or reuse) every variant's run of each seed (default: the profile's ``book.seeds``) and evaluate
    it on ``sets`` (default: every evaluation set of the profile; the ablations pass :func:`datasets`), then
    tabulate (means over seeds, averages over ``sets``): the :class:`Study` of ``variants`` against the paper
    table ``paper``, whose average is over every evaluation set (ours is left out there when ``sets`` are
    fewer).  Nothing runs when the profile cannot run here (:func:`hrvlm.book.experiments.unavailable`): the
    study then has no runs and only the paper's numbers."""
    from hrvlm.book.experiments import (accuracy_table, book_seeds, evaluate_runs, paper_comparison, results_frame,
                                        train_runs, unavailable)

    sets = tuple(sets or get_profile(profile).eval_datasets)
    if unavailable(profile):
        runs, frame = {}, results_frame({})
    else:
        runs = train_runs(variants, profile, book_seeds(profile, seeds))
        results = evaluate_runs(runs, profile, attacks, sets, n=n, progress=False)
        frame = results_frame(results)
    comparison = None if paper is None else paper_comparison(frame, profile, paper)
    if not runs:
        return Study(title, runs, frame, comparison)
    table = accuracy_table(frame, profile, sets=sets)
    estimates = attack_estimates(results, sets, profile)
    figure = average_bars(table, profile, title, estimates) if bars else None
    return Study(title, runs, frame, comparison, table, figure, estimates)


def epoch_minutes(record: dict) -> float:
    """Training time per epoch (minutes) of a run record: the mean of its whole epochs, or the estimate
    extrapolated from its steps when it ran less than one epoch."""
    whole = record.get("epoch_times_s") or []
    seconds = sum(whole) / len(whole) if whole else record.get("epoch_time_s_estimate")
    return math.nan if seconds is None else seconds / 60.0


def perturbation_cost(runs: Mapping[Variant, Mapping[int, os.PathLike]], profile: str) -> pd.DataFrame:
    """Table 12's time per epoch: the paper's minutes per epoch and their ratio to the universal perturbation's,
    beside ours (:func:`epoch_minutes` of each run's record, the mean over its seeds, ``runs`` =
    ``{variant: {seed: run}}`` from the ``perturbation`` ablation; NaN where a row did not run), in the paper's
    row order.  Hardware differs, so the ratios are what compares."""
    from hrvlm.models.runs import read_record
    from hrvlm.results.tables import AVERAGE, paper_table

    _, name, rows = ABLATIONS["perturbation"]
    universal = next(label for label, settings, _ in rows if settings["perturbation"] == "universal")
    reported = paper_table(name).reported()[(AVERAGE, "minutes_per_epoch")]
    ours = pd.Series({v.label: np.mean([epoch_minutes(read_record(run)) for run in by_seed.values()])
                      for v, by_seed in runs.items()}, dtype=float)
    return pd.DataFrame({
        "reported: min / epoch": reported, "reported: × universal": reported / reported.loc[universal],
        f"ours ({profile}): min / epoch": ours.reindex(reported.index),
        f"ours ({profile}): × universal": (ours / ours.get(universal, math.nan)).reindex(reported.index)})


def _mean(values: list) -> float:
    """The mean of the defined values (a run that trained no step, as CLIP's, has no throughput): NaN if none."""
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else math.nan


def training_costs(runs: Mapping[Variant, Mapping[int, os.PathLike]]) -> pd.DataFrame:
    """Variant × (steps, batch size, minutes per epoch, training images per second, device, seeds), from the
    run records of ``{variant: {seed: run}}``: what a method costs to train on this machine (the attack
    included), the mean over its seeds' runs."""
    from hrvlm.models.runs import read_record

    rows = {}
    for variant, by_seed in runs.items():
        records = [read_record(run) for run in by_seed.values()]
        first = records[0]
        rows[variant.label] = {"steps": first["steps"], "batch size": first["config"]["batch_size"],
                               "min / epoch": np.mean([epoch_minutes(r) for r in records]),
                               "images / s": _mean([r["images_per_s"] for r in records]),
                               "device": first["environment"]["device"], "seeds": len(records)}
    return pd.DataFrame(rows).T


def reported_trees() -> pd.DataFrame:
    """The paper's HRVLM rows of the main table (1 and 5 trees): its only numbers on the number of trees."""
    from hrvlm.book.experiments import MAIN_TABLE
    from hrvlm.results.tables import paper_table

    table = paper_table(MAIN_TABLE)
    return table.known().loc[[row["row"] for row in table.rows if row["method"].startswith("hrvlm")]]


def average_bars(table: pd.DataFrame, profile: str, title: str, intervals: pd.DataFrame | None = None):
    """Grouped bars of an accuracy table's averages (:func:`hrvlm.book.experiments.plot_grouped_bars`), with the
    95 % ``intervals`` of :func:`hrvlm.book.intervals.attack_estimates` as error bars: the figure."""
    import matplotlib.pyplot as plt

    from hrvlm.book.experiments import plot_grouped_bars
    from hrvlm.results.tables import AVERAGE

    fig, ax = plt.subplots(figsize=(8, 3.6))
    plot_grouped_bars(ax, table[AVERAGE], title=f"{title} ({profile} profile, average, 95 % intervals)",
                      intervals=intervals)
    fig.tight_layout()
    return fig


def trees_figure(table: pd.DataFrame, profile: str):
    """Average accuracy of each metric against the number of trees: ``table`` is the accuracy table of
    :func:`tree_variants` (row ``k`` = ``k + 1`` trees); the figure."""
    import matplotlib.pyplot as plt

    from hrvlm.results.tables import AVERAGE

    averages = table[AVERAGE]
    trees = range(1, len(averages) + 1)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for metric in averages.columns:
        ax.plot(trees, averages[metric], "o-", label=metric)
    ax.set(xlabel="trees", ylabel="average accuracy (%)", title=f"number of trees ({profile} profile)", xticks=trees)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig
