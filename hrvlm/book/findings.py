"""What a result chapter's build shows, in markdown sentences computed from its tables (chapters 04–08).

Each function reads a table of :mod:`hrvlm.book.experiments` (:func:`~hrvlm.book.experiments.accuracy_table` or
:func:`~hrvlm.book.experiments.long_results`) and names the best and worst methods, the gaps between them and,
where the paper has a claim, the claim beside them.  The sentences state whatever the build measured:
nothing here (or anywhere) is tuned toward the paper.  A table without numbers gives one sentence saying
so (:meth:`hrvlm.book.experiments.Setting.absent`), and the chapter's sampling noise closes the list
(:meth:`~hrvlm.book.experiments.Setting.precision_note`).
"""
from __future__ import annotations

from typing import Mapping

import pandas as pd

from hrvlm.book.experiments import MAIN_TABLE, ZERO_SHOT, Setting, settled_budget
from hrvlm.results.metrics import binomial_se
from hrvlm.results.tables import AVERAGE, paper_table

LEAF_TRAINED = ("tecoa", "pmg-aft", "fare")  # the methods trained on leaf classes only (the paper's Fig. 1a)


def _methods(rows, setting: Setting) -> dict[str, str]:
    """Each row label's method (its :class:`~hrvlm.book.experiments.Variant`'s): rows are picked by what they
    run, never by how they are labelled."""
    method = {v.label: v.method for v in setting.variants}
    missing = [r for r in rows if r not in method]
    if missing:
        raise ValueError(f"rows {missing} are no variants of the chapter's setting: pass the setting the table "
                         f"was made from")
    return {r: method[r] for r in rows}


def main_table(table: pd.DataFrame, setting: Setting) -> str:
    """Chapter 04, from ``accuracy_table``: the variants with the highest average robust and clean accuracy,
    CLIP's averages beside the paper's, each HRVLM row's robust gap (points) to the best fine-tuned baseline
    (CLIP, not fine-tuned, is no baseline there), and the paper's claim with its averages."""
    if table.empty or AVERAGE not in table.columns.get_level_values(0):
        return setting.absent("No averages to compare")
    avg = table[AVERAGE]
    attacked = [c for c in avg.columns if c != "clean"]
    if not attacked or "clean" not in avg.columns:
        return setting.absent("No clean and robust averages to compare")
    robust = attacked[0]
    best_robust, best_clean = avg[robust].idxmax(), avg["clean"].idxmax()
    method = _methods(avg.index, setting)
    hrvlm = [v for v in avg.index if method[v] == "hrvlm"]
    clip = [v for v in avg.index if method[v] == "clip"]
    others = [v for v in avg.index if method[v] not in ("hrvlm", "clip")]
    # the paper's 15-dataset averages, by method id (clean and PGD-20, the paper's only attack here)
    reported = paper_table(MAIN_TABLE)
    paper = {row["method"]: row["values"][AVERAGE] for row in reported.rows}
    lines = [f"* Highest average {robust} accuracy: **{best_robust}** ({avg.loc[best_robust, robust]:.1f} %); "
             f"highest clean accuracy: **{best_clean}** ({avg.loc[best_clean, 'clean']:.1f} %)."]
    for v in clip:
        lines.append(f"* {v} without fine-tuning: {avg.loc[v, 'clean']:.1f} % clean, "
                     f"{avg.loc[v, robust]:.1f} % under {robust} (the paper: {paper['clip']['clean']:.1f} % "
                     f"and {paper['clip']['pgd20']:.1f} %).")
    if hrvlm and others:
        best_other = avg.loc[others, robust].idxmax()
        for v in hrvlm:
            gap = avg.loc[v, robust] - avg.loc[best_other, robust]
            lines.append(f"* {v}: {avg.loc[v, 'clean']:.1f} % clean, {avg.loc[v, robust]:.1f} % robust, "
                         f"{gap:+.1f} points of robust accuracy against the best baseline ({best_other}).")
    one, five, sets = paper["hrvlm-1tree"], paper["hrvlm-5trees"], len(reported.columns) - 1
    lines.append(f"* The paper reports HRVLM ahead of every baseline on the {sets}-dataset average "
                 f"({one['clean']:.1f}/{one['pgd20']:.1f} with one tree, {five['clean']:.1f}/{five['pgd20']:.1f} "
                 "with five). Whether the mini world agrees is the paired test of chapter 11, not the gaps above; the "
                 "mini world is not tuned toward the paper's numbers.")
    lines.append("* " + setting.precision_note())
    return "\n".join(lines)


def superclass_attacks(long: pd.DataFrame, setting: Setting) -> str:
    """Chapter 05, from ``long_results`` of level attacks: per variant, robust accuracy at the leaves, its
    range over the superclass levels (≥ 1) and the mean transfer success; then the leaf-trained baselines'
    means over levels ≥ 1 against HRVLM's (the paper: HRVLM higher on robust accuracy, lower on transfer)."""
    if long.empty:
        return setting.absent("Nothing to report")
    mean = long.groupby(["variant", "level"], observed=True)[["robust", "transfer_success"]].mean()
    lines = []
    for v in mean.index.get_level_values(0).unique():
        part = mean.loc[v]
        superclass = part.loc[part.index > 0]
        if superclass.empty:
            continue
        lines.append(f"* **{v}**: {part.loc[0, 'robust']:.1f} % robust at the leaves; at the superclass levels "
                     f"{superclass['robust'].min():.1f}–{superclass['robust'].max():.1f} %; transfer success "
                     f"{superclass['transfer_success'].mean():.1f} % on average.")
    # the comparison needs superclass numbers of both kinds of method
    sup = mean[mean.index.get_level_values(1) > 0].groupby(level=0, observed=True).mean()
    method = _methods(sup.index, setting)
    leaf_only = [v for v in sup.index if method[v] in LEAF_TRAINED]
    hrvlm = [v for v in sup.index if method[v] == "hrvlm"]
    if leaf_only and hrvlm:
        base, hrvlm = sup.loc[leaf_only], sup.loc[hrvlm]
        lines.append(f"* Superclass robust accuracy, mean over levels ≥ 1: leaf-trained baselines "
                     f"{base['robust'].mean():.1f} %, HRVLM {hrvlm['robust'].mean():.1f} %; transfer success "
                     f"{base['transfer_success'].mean():.1f} % against {hrvlm['transfer_success'].mean():.1f} %. "
                     "The paper claims HRVLM is higher on the first and lower on the second.")
    lines.append("* " + setting.precision_note())
    return "\n".join(lines)


def stronger_attacks(long: pd.DataFrame, setting: Setting) -> str:
    """Chapter 06, from ``long_results`` of several attacks and budgets: per attack and ε, the best and worst
    variant (mean over the sets) or a tie; then how far AutoAttack lowers accuracy below PGD (the range over
    variants of PGD's mean minus AutoAttack's, over budgets and sets)."""
    if long.empty:
        return setting.absent("Nothing to report")
    attacked = long[long["attack"] != "clean"]
    mean = attacked.groupby(["attack", "eps", "variant"], observed=True)["robust"].mean()
    lines = []
    for (name, eps), part in mean.groupby(level=[0, 1]):
        part = part.droplevel([0, 1])
        if part.max() == part.min():
            lines.append(f"* {name} at ε = {eps:g}×: every method at {part.max():.1f} %.")
        else:
            lines.append(f"* {name} at ε = {eps:g}×: best **{part.idxmax()}** ({part.max():.1f} %), "
                         f"worst {part.idxmin()} ({part.min():.1f} %).")
    pgd = attacked[attacked["attack"].str.startswith("PGD")].groupby("variant", observed=True)["robust"].mean()
    aa = attacked[attacked["attack"] == "AutoAttack"].groupby("variant", observed=True)["robust"].mean()
    if not aa.empty and not pgd.empty:
        drop = (pgd - aa).dropna()
        lines.append(f"* AutoAttack lowers accuracy below PGD by {drop.min():.1f}–{drop.max():.1f} points "
                     "(mean over budgets and sets): the gap is how much PGD-20 overstates robustness here.")
    lines.append("* The paper states that HRVLM stays ahead under CW, AutoAttack and 2–4/255 without recoverable "
                 "numbers; the lines above are what this build measured, whatever their order.")
    lines.append("* " + setting.precision_note())
    return "\n".join(lines)


def learning_curves(curves: pd.DataFrame, book_steps: int | None) -> str:
    """Where the ranking of the methods by robust accuracy stops moving with the training budget, and where
    the book's own budget ``book_steps`` lies (computed from :func:`hrvlm.book.experiments.learning_curves`)."""
    if curves.empty:
        return ""
    budgets = sorted(int(b) for b in curves["steps"].unique())
    n = int(curves["n"].iloc[0])
    noise = (f" With {n} images per set, one set's accuracy has a standard error of up to "
             f"{100 * binomial_se(0.5, n):.1f} points, so rows closer than that may swap between budgets "
             f"without either being better.")
    settled = settled_budget(curves, "robust", ZERO_SHOT)
    measured = ", ".join(str(b) for b in budgets)
    if settled is None:
        return f"Only one budget was measured ({measured} steps): no ranking can settle." + noise
    if settled == budgets[-1]:
        verdict = (f"The ranking of the rows by robust accuracy on the {ZERO_SHOT} still moves at the largest "
                   f"budget measured ({budgets[-1]} steps; budgets {measured}): the book's ranking may change "
                   f"with more training.")
    else:
        verdict = (f"The ranking of the rows by robust accuracy on the {ZERO_SHOT} is the same from "
                   f"**{settled} steps** on (budgets {measured}).")
    if book_steps is not None:
        verdict += (f" The book trains {book_steps} steps, "
                    + ("inside that settled range." if settled < budgets[-1] and book_steps >= settled
                       else "before the ranking settles: read its ordering as provisional."))
    return verdict + noise


def reading(table: pd.DataFrame | None, title: str) -> str:
    """One sentence on an ``accuracy_table``'s averages (chapters 07, 08): per metric, the best and worst variant
    and the spread in points, or that every variant ties (within 0.05 points)."""
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


def readings(tables: Mapping[str, pd.DataFrame | None]) -> str:
    """A bullet list of :func:`reading` per titled table, in order; a sentence saying so when there is none."""
    return "\n".join(f"* {reading(table, title)}" for title, table in tables.items()) or "*No runs in this build.*"


__all__ = ["LEAF_TRAINED", "main_table", "reading", "readings", "stronger_attacks", "superclass_attacks"]
