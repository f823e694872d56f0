"""Experiments for the book's result chapters: train a variant, evaluate its run, tabulate the records.

A chapter is a thin caller of three cached steps, so chapters share their work:

1. :func:`train_run` fine-tunes one :class:`Variant` (a method with settings, e.g. HRVLM with 5
   trees) under a profile through :func:`hrvlm.training.train.train`.  The run folder is named by the hash of
   the training configuration (:meth:`hrvlm.training.train.TrainConfig.name`), so the same variant asked for by
   another chapter, or by a later build, is the same finished run, returned at once; an interrupted
   run resumes.
2. :func:`evaluate_run` evaluates a run with :func:`hrvlm.evaluation.evaluate.evaluate_weights` (one
   :class:`~hrvlm.evaluation.request.EvalRequest` per dataset, with the profile's sizes) on datasets, attacks and
   tree levels into a records store (:mod:`hrvlm.evaluation.records`, by default the one ``hrvlm eval`` uses);
   chunks whose record key is stored are not recomputed.
3. :func:`results_frame` turns ``{variant: records}`` into one frame (a ``variant`` column beside the
   record fields), :func:`accuracy_table` into variant × (dataset, metric) tables in percent, and
   :func:`paper_comparison` into the paper's table beside ours (:func:`hrvlm.results.tables.compare`).

Sizes come from the profile (:mod:`hrvlm.profiles`): its ``book`` entry holds the result chapters'
``train_steps`` (a shorter run than ``hrvlm train``'s, so that the ``mini`` book builds in minutes) and
``eval_n`` (images per evaluation set); ε is given as a multiple of the profile's ``eps_unit``
(:func:`attack`).  :func:`unavailable` says in one line why a profile cannot run here (the ``full``
profile without its datasets), so a chapter can state it and still go through the same code.

Every variant is trained once per seed of the chapter (the profile's ``book.seeds``; a seed sets the data
order, the initialisation and the attacks' random starts, in training and in evaluation), on the same fixed
images: :func:`train_runs` gives ``{variant: {seed: run}}``, :func:`evaluate_runs` ``{variant: records}`` with
every seed's records, and the tables show the mean over seeds (their intervals: :mod:`hrvlm.book.intervals`).

Typical use (a chapter)::

    setting = chapter_setting(profile)
    runs = train_variants(setting)                     # {variant: {seed: run folder}}
    pgd = attack("pgd", profile, multiple=1, steps=20)
    results = evaluate_runs(runs, profile, [pgd], setting.datasets, n=setting.n)
    frame = results_frame(results)
    accuracy_table(frame, profile)                     # the mean over seeds
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from hrvlm.book.workers import map_in_workers, worker_count
from hrvlm.evaluation.records import default_store
from hrvlm.profiles import Profile, get_profile
from hrvlm.results.metrics import binomial_se
from hrvlm.results.tables import AVERAGE, dataset_table

MAIN_TABLE = "hrvlm-main"  # the paper table of the main comparison (hrvlm/resources/paper)


# ----------------------------------------------------------------------------- variants
@dataclass(frozen=True)
class Variant:
    """One row of a results table: a registered ``method`` with ``settings`` over the profile's.

    ``label`` names the row in tables and figures; ``paper`` is the paper table's method id for this
    row (``"hrvlm-5trees"``) where the paper has one; ``loop`` overrides the training loop's settings
    (:class:`hrvlm.training.train.TrainConfig` fields) beyond the book's own.  Hashable, so it keys dicts.
    """

    label: str
    method: str
    settings: tuple[tuple[str, object], ...] = ()
    paper: str | None = None
    loop: tuple[tuple[str, object], ...] = ()

    @classmethod
    def of(cls, label: str, method: str, settings: Mapping | None = None, paper: str | None = None,
           loop: Mapping | None = None) -> "Variant":
        """A variant from plain dicts (stored as sorted tuples, so it stays hashable)."""
        return cls(label, method, tuple(sorted((settings or {}).items())), paper, tuple(sorted((loop or {}).items())))


def forest_size(profile: str, depth: int | None = None, max_trees: int | None = None) -> int:
    """How many distinct trees the profile's fine-tuning set has at HRVLM's ``depth`` (the profile's
    HRVLM setting by default), at most ``max_trees`` (HRVLM's maximum, 5): read from the forest,
    never assumed."""
    from hrvlm.data.registry import get_spec
    from hrvlm.hierarchy.trees import forest_for_dataset
    from hrvlm.methods import build_method
    from hrvlm.methods.hrvlm import MAX_TREES

    prof = get_profile(profile)
    depth = depth if depth is not None else build_method("hrvlm", prof.method("hrvlm")).settings["depth"]
    spec = get_spec(prof.train_dataset)
    return len(forest_for_dataset(spec.hierarchy, depth=depth, max_trees=max_trees or MAX_TREES))


def main_variants(profile: str, trees: int = 5) -> list[Variant]:
    """The paper's main rows that can be trained: CLIP, TeCoA, PMG-AFT, FARE, QT-AFT, HRVLM with 1 tree
    and HRVLM with ``trees`` trees, or with every tree the fine-tuning set's forest has if that is fewer
    (the label says how many were used).  AoS is not here: it is reported only."""
    used = min(trees, forest_size(profile))
    return [Variant.of("CLIP", "clip", paper="clip"),
            Variant.of("TeCoA", "tecoa", paper="tecoa"),
            Variant.of("PMG-AFT", "pmg-aft", paper="pmg-aft"),
            Variant.of("FARE", "fare", paper="fare"),
            Variant.of("QT-AFT", "qtaft"),
            Variant.of("HRVLM (1 tree)", "hrvlm", {"trees": 1}, paper="hrvlm-1tree"),
            # the paper's row only when it is the paper's number of trees: 2 trees are not "5 trees"
            Variant.of(f"HRVLM ({used} trees)" if used > 1 else "HRVLM (1 tree, forest of one)", "hrvlm",
                       {"trees": used}, paper="hrvlm-5trees" if used == 5 else None)]


# ----------------------------------------------------------------------------- profiles
def book_settings(profile: str) -> dict:
    """The profile's ``book`` entry (sizes of the book's chapters), a ``KeyError`` naming what is missing."""
    prof = get_profile(profile)
    if not prof.book:
        raise KeyError(f"profile {profile!r} has no 'book' entry in profiles.json")
    return dict(prof.book)


def unavailable(profile: str) -> str | None:
    """Why the profile's experiments cannot run on this machine (one line), or ``None`` if they can.

    Checks files only, in milliseconds: every evaluation set and the fine-tuning set must be present
    (the ``full`` profile's real datasets under the data root).  Missing pretrained weights are left to
    the loader, which fails in one line offline.
    """
    from hrvlm.evaluation.evaluate import EvalRequest

    prof = get_profile(profile)
    try:
        EvalRequest(prof.train_dataset, split="train", dataset_options=prof.dataset_options).check()
        for name in prof.eval_datasets:
            EvalRequest(name, dataset_options=prof.dataset_options).check()
    except (FileNotFoundError, KeyError, ValueError) as err:
        return str(err.args[0] if err.args else err).splitlines()[0]
    return None


# ----------------------------------------------------------------------------- a chapter's setting
@dataclass(frozen=True)
class Setting:
    """What a result chapter runs: the profile, the variants (rows), the evaluation sets and their size,
    why nothing can run here (``unavailable``, ``None`` when it can) and the ``seeds`` every variant is
    trained and evaluated with."""

    profile: str
    variants: tuple[Variant, ...]
    datasets: tuple[str, ...]
    n: int | None
    unavailable: str | None
    seeds: tuple[int, ...] = (0,)

    def note(self) -> str:
        """The chapter's opening sentence: which world produced "ours", on which sets, and whether it ran."""
        sets = ", ".join(self.datasets)
        seeds = len(self.seeds)
        return (mini_world_note(self.profile) + f" This chapter evaluates on {sets}, {self.n} images each, "
                + (f"every row trained and evaluated with {seeds} seeds ({', '.join(map(str, self.seeds))}): "
                   "each number is the mean over the seeds." if seeds > 1 else
                   f"every row trained and evaluated with one seed ({self.seeds[0]}): intervals cover the images only.")
                + (f" **Not run on this machine**: {self.unavailable}" if self.unavailable else ""))

    def precision_note(self) -> str:
        """How precise the numbers are: the largest standard error of one set's accuracy (its binomial SE
        at 50 %, 50/√n points) and of the average over the sets, what the intervals add, and where a
        difference becomes evidence (the paired tests of the claims chapter)."""
        if not self.n:
            return ""
        sets = len(self.datasets)
        one, mean = 100 * binomial_se(0.5, self.n), 100 * binomial_se(0.5, self.n * sets)
        average = f" and the average over the {sets} sets up to {mean:.1f}" if sets > 1 else ""
        intervals = ("add the spread over seeds" if len(self.seeds) > 1 else "cover the images only (one seed)")
        return (f"With {self.n} images per set, one set's accuracy has a standard error of up to {one:.1f} points"
                f"{average} from the images alone; the tables' 95 % intervals {intervals}, and a difference is "
                "evidence only where its paired test says so (chapter 11's verdicts).")

    def absent(self, what: str) -> str:
        """``what`` ("Nothing was evaluated") and why, for a table or a finding that has no numbers."""
        return what + (" (this profile cannot run here: see the note at the top)." if self.unavailable else ".")


def book_seeds(profile: str, seeds: Sequence[int] | None = None) -> tuple[int, ...]:
    """``seeds`` (sorted, distinct), or the profile's ``book.seeds``: the seeds every variant of a result
    chapter is trained and evaluated with (one run per variant and seed)."""
    chosen = book_settings(profile).get("seeds", [0]) if seeds is None else seeds
    if isinstance(chosen, (int, str)) or not chosen or any(isinstance(s, bool) or not isinstance(s, int) for s in chosen):
        raise ValueError(f"seeds must be a non-empty list of integers, e.g. [0, 1, 2]; got {chosen!r}")
    return tuple(sorted(set(chosen)))


def chapter_setting(profile: str, *, trees: int = 5, methods: Sequence[str] | None = None,
                    datasets: Sequence[str] | None = None, n: int | None = None, focus: bool = False,
                    seeds: Sequence[int] | None = None) -> Setting:
    """The :class:`Setting` of a chapter: :func:`main_variants` (only the labels in ``methods``, if given),
    ``datasets`` (default: every evaluation set, or with ``focus`` the profile's ``book.focus_datasets``),
    ``n`` images each (default ``book.eval_n``, or ``book.focus_eval_n`` with ``focus``) and the
    :func:`book_seeds`."""
    prof, book = get_profile(profile), book_settings(profile)
    variants = [v for v in main_variants(profile, trees) if methods is None or v.label in methods]
    if methods is not None and len(variants) < len(set(methods)):
        known = [v.label for v in main_variants(profile, trees)]
        raise ValueError(f"methods {sorted(set(methods) - {v.label for v in variants})} are not rows; rows: {known}")
    default_sets = (book.get("focus_datasets") if focus else None) or prof.eval_datasets
    size = n if n is not None else book.get("focus_eval_n" if focus else "eval_n", prof.eval_n)
    return Setting(profile, tuple(variants), tuple(datasets or default_sets), size, unavailable(profile),
                   book_seeds(profile, seeds))


def train_variants(setting: Setting, workers: int | None = None) -> dict:
    """``{variant: {seed: finished run folder}}`` for the setting's variants and seeds (none when it cannot
    run here)."""
    return {} if setting.unavailable else train_runs(setting.variants, setting.profile, setting.seeds, workers=workers)


# ----------------------------------------------------------------------------- training
def train_config(variant: Variant, profile: str, seed: int = 0, steps: int | None = None):
    """The :class:`hrvlm.training.train.TrainConfig` of ``variant`` under ``profile``: the profile's training
    settings, the book's ``train_steps`` (``steps`` overrides it), then the variant's ``loop``."""
    from hrvlm.training.train import config_from_profile

    book = get_profile(profile).book or {}
    loop = {"steps": steps if steps is not None else book.get("train_steps"), **dict(variant.loop)}
    return config_from_profile(variant.method, profile, dict(variant.settings), seed=seed, **loop)


def train_run(variant: Variant, profile: str, seed: int = 0, steps: int | None = None,
              device: str | None = None) -> Path:
    """The finished run folder of ``variant`` (trained now unless a run of the same configuration is
    finished; an interrupted one resumes)."""
    from hrvlm.training.train import train

    return train(train_config(variant, profile, seed, steps), device=device)


def train_runs(variants: Sequence[Variant], profile: str, seeds: Sequence[int] | None = None,
               steps: int | None = None, workers: int | None = None) -> dict:
    """``{variant: {seed: finished run folder}}``, one run per variant and seed (default: :func:`book_seeds`,
    the profile's ``book.seeds``), trained side by side in
    :func:`~hrvlm.book.workers.worker_count` processes (:mod:`hrvlm.book.workers`: the same runs as one by one)."""
    seeds = book_seeds(profile, seeds)
    jobs = [(variant, seed) for variant in variants for seed in seeds]
    done = map_in_workers(functools.partial(_train_job, profile=profile, steps=steps), jobs, worker_count(profile, workers),
                          done=functools.partial(_finished_job, profile=profile, steps=steps))
    runs: dict = {}
    for (variant, seed), run in zip(jobs, done):
        runs.setdefault(variant, {})[seed] = run
    return runs


def _train_job(job: tuple, profile: str, steps: int | None) -> Path:
    variant, seed = job
    return train_run(variant, profile, seed=seed, steps=steps)


def _finished_job(job: tuple, profile: str, steps: int | None) -> Path | None:
    from hrvlm.training.train import finished_run

    variant, seed = job
    return finished_run(train_config(variant, profile, seed, steps))


def run_summary(runs: Mapping[Variant, Mapping[int, os.PathLike]]) -> pd.DataFrame:
    """One row per variant and seed: method, its settings, steps, training time and the run's name."""
    from hrvlm.models.runs import read_record

    rows = []
    for variant, by_seed in runs.items():
        for seed, path in by_seed.items():
            record = read_record(path)
            rows.append({"variant": variant.label, "seed": seed, "method": variant.method,
                         "settings": ", ".join(f"{k}={v}" for k, v in variant.settings) or "profile's",
                         "steps": record["steps"], "batch size": record["config"]["batch_size"],
                         "train time (s)": record["train_time_s"], "run": Path(record["path"]).name})
    return pd.DataFrame(rows).set_index(["variant", "seed"])


# ----------------------------------------------------------------------------- evaluation
def attack(name: str, profile: str, multiple: float = 1.0, **settings):
    """Attack ``name`` (:data:`hrvlm.attacks.ATTACKS`) at ε = ``multiple`` × the profile's ε unit; the
    evaluation runs it in the device's attack precision (bf16 on recent GPUs, else float32)."""
    from hrvlm.attacks import build_attack

    return build_attack(name, get_profile(profile).eps(multiple), **settings)


def dataset_tree(dataset: str, tree: int = 0, depth: int = 5):
    """Tree ``tree`` of ``dataset``'s forest at ``depth`` (what :func:`evaluate_run` attacks with ``levels``)."""
    from hrvlm.data.registry import get_spec
    from hrvlm.hierarchy.trees import forest_for_dataset

    spec = get_spec(dataset)
    if spec.hierarchy is None:
        raise ValueError(f"dataset {dataset!r} has no class hierarchy")
    return forest_for_dataset(spec.hierarchy, depth=depth).trees[tree]


def attackable_levels(dataset: str, tree: int = 0, depth: int = 5) -> list[int]:
    """The levels of ``dataset``'s tree ``tree`` (depth ``depth``) that have two classes or more: the
    levels a superclass attack can target (level 0 = the dataset's classes)."""
    chosen = dataset_tree(dataset, tree, depth)
    return [level for level in range(chosen.depth + 1) if chosen.num_classes(level) > 1]


def level_classes(datasets: Sequence[str], tree: int = 0, depth: int = 5, shown: int = 6) -> pd.DataFrame:
    """Level × dataset: how many classes each attackable level has, and the first ``shown`` names."""
    columns = {}
    for name in datasets:
        chosen = dataset_tree(name, tree, depth)
        columns[name] = {}
        for lv in attackable_levels(name, tree, depth):
            count = chosen.num_classes(lv)
            more = f" (+{count - shown} more)" if count > shown else ""
            columns[name][f"level {lv}"] = f"{count} classes: " + ", ".join(chosen.names[lv][:shown]) + more
    return pd.DataFrame(columns)


def evaluate_run(run: os.PathLike, profile: str, attacks: Sequence = (), datasets: Sequence[str] | None = None, *,
                 store: os.PathLike | None = None, device: str | None = None, progress: bool = True,
                 stored_only: bool = False, **settings) -> list[dict] | None:
    """Every record of ``run`` evaluated on ``datasets`` (default: the profile's evaluation sets) with
    ``attacks`` (each also gives clean accuracy; none: clean only).

    ``settings`` are the :class:`~hrvlm.evaluation.request.EvalRequest` fields of every set's request
    (``levels``, ``n``, ``templates``, ``tree``, ``depth``, ``seed``, ``batch_size``, ...); the profile gives
    ``n`` (its ``book.eval_n``, else its ``eval_n``: the fixed subsets of :func:`hrvlm.data.fixed_subset`),
    ``batch_size`` (its ``eval_batch_size``) and the dataset options, the run its ``method`` and its ``seed``
    (the attacks' random starts: a run of seed 1 is attacked with seed 1; the images are the same for every seed).  Records go to
    ``store`` (default :func:`~hrvlm.evaluation.records.default_store`); stored chunks are read, not recomputed;
    ``stored_only``: the stored records, or ``None`` if one is missing, nothing computed.
    """
    from hrvlm.evaluation.evaluate import EvalRequest, evaluate_weights
    from hrvlm.models.runs import read_record

    prof = get_profile(profile)
    record = read_record(run, verify=False)  # its seed and method; loading the weights verifies them
    settings = {"n": (prof.book or {}).get("eval_n", prof.eval_n), "batch_size": prof.eval_batch_size,
                "seed": record["config"]["seed"], **{k: v for k, v in settings.items() if v is not None}}
    requests = [EvalRequest(name, attacks, method=record["method"]["name"], dataset_options=prof.dataset_options,
                            **settings) for name in datasets or prof.eval_datasets]
    return evaluate_weights(record["model"], record["path"], requests, device=device, progress=progress,
                            store=Path(store) if store is not None else default_store(), stored_only=stored_only)


def _evaluate_job(run: os.PathLike, profile: str, args: tuple, kwargs: dict) -> list[dict]:
    return evaluate_run(run, profile, *args, **kwargs)


def _stored_job(run: os.PathLike, profile: str, args: tuple, kwargs: dict) -> list[dict] | None:
    return evaluate_run(run, profile, *args, **kwargs, stored_only=True)


def evaluate_runs(runs: Mapping, profile: str, *args, workers: int | None = None, **kwargs) -> dict:
    """``{key: records}`` for every ``key: {seed: run}`` of ``runs`` (:func:`train_runs`): the records of
    :func:`evaluate_run` ``(run, profile, *args, **kwargs)`` of each seed's run, seed by seed, every run
    evaluated with its own seed.  The runs are evaluated side by side in :func:`~hrvlm.book.workers.worker_count`
    processes (the same records as one by one)."""
    if "seed" in kwargs:
        raise TypeError("evaluate_runs evaluates every run with its own training seed: do not pass seed")
    jobs = [(key, run) for key, by_seed in runs.items() for _, run in sorted(by_seed.items())]
    job, stored = (functools.partial(f, profile=profile, args=args, kwargs=kwargs) for f in (_evaluate_job, _stored_job))
    results: dict = {key: [] for key in runs}
    for (key, _), records in zip(jobs, map_in_workers(job, [run for _, run in jobs], worker_count(profile, workers),
                                                      done=stored)):
        results[key].extend(records)
    return results


# ----------------------------------------------------------------------------- learning curves
ZERO_SHOT = "zero-shot average"


def learning_curves(setting: Setting, budgets: Sequence[int], attack, *, n: int | None = None,
                    seeds: Sequence[int] | None = None, templates: str | None = None) -> pd.DataFrame:
    """Clean and robust top-1 (%) of every variant of ``setting`` against its training budget.

    Each budget is its own run (the profile's loop with that many steps, its learning-rate schedule spread
    over them): the accuracy a reader gets for that budget, not a point along one longer run.  Each run is
    evaluated with ``attack`` on ``n`` fixed images (default ``setting.n``) of every set of the setting.
    ``seeds`` (default: the setting's first seed, so that a curve costs one run per budget and variant): the
    points are means over them.  One row per (variant, steps, set), the set being the fine-tuning set or
    :data:`ZERO_SHOT`, the mean over the other sets; columns ``variant, steps, dataset, clean, robust, n, seeds``."""
    prof = get_profile(setting.profile)
    columns = ["variant", "steps", "dataset", "clean", "robust", "n", "seeds"]
    seeds = book_seeds(setting.profile, seeds if seeds is not None else setting.seeds[:1])
    fixed = [v.label for v in setting.variants if "steps" in dict(v.loop)]
    if fixed:
        raise ValueError(f"variants {fixed} fix their own steps in their loop: a learning curve needs the budget to vary")
    if setting.unavailable or not budgets:
        return pd.DataFrame(columns=columns)
    rows = []
    for steps in sorted(set(budgets)):
        runs = train_runs(setting.variants, setting.profile, seeds, steps=steps)
        results = evaluate_runs(runs, setting.profile, [attack], setting.datasets, n=n or setting.n,
                                templates=templates, progress=False)
        long = long_results(results_frame(results), setting.profile)
        long = long[(long["attack"] != "clean") & (long["level"] == 0)]
        for variant, group in long.groupby("variant", observed=True, sort=False):
            own = group[group["dataset"] == prof.train_dataset]
            others = group[group["dataset"] != prof.train_dataset]
            for name, part in ((prof.train_dataset, own), (ZERO_SHOT, others)):
                if not part.empty:
                    rows.append({"variant": variant, "steps": steps, "dataset": name, "clean": part["clean"].mean(),
                                 "robust": part["robust"].mean(), "n": n or setting.n, "seeds": len(seeds)})
    frame = pd.DataFrame(rows, columns=columns)
    frame["variant"] = pd.Categorical(frame["variant"], [v.label for v in setting.variants])
    return frame


def settled_budget(curves: pd.DataFrame, metric: str = "robust", dataset: str = ZERO_SHOT) -> int | None:
    """The smallest budget from which the ranking of the variants by ``metric`` on ``dataset`` is the
    ranking at every larger budget (``None`` with fewer than two budgets).  An exact ranking: two variants
    within sampling noise of each other may swap and keep it from settling, which the chapter says."""
    rows = curves[curves["dataset"] == dataset]
    budgets = sorted(rows["steps"].unique())
    if len(budgets) < 2:
        return None
    order = {b: tuple(rows[rows["steps"] == b].sort_values([metric, "variant"], ascending=[False, True])["variant"])
             for b in budgets}
    settled = budgets[-1]
    for budget in reversed(budgets[:-1]):
        if order[budget] != order[budgets[-1]]:
            break
        settled = budget
    return int(settled)


# ----------------------------------------------------------------------------- tables
def results_frame(results: Mapping[Variant, Sequence[dict]]) -> pd.DataFrame:
    """The records of every variant in one frame (:func:`hrvlm.evaluation.records.records_to_frame`), with the
    variant's ``variant`` label and ``paper`` method id; variants keep their order (a categorical)."""
    from hrvlm.evaluation.records import records_to_frame

    frames = []
    for variant, records in results.items():
        frame = records_to_frame(records)
        if not frame.empty:
            frames.append(frame.assign(variant=variant.label, paper=variant.paper))
    if not frames:
        return pd.DataFrame(columns=["variant", "paper", "dataset", "level", "attack_name"])
    frame = pd.concat(frames, ignore_index=True)
    order = [v.label for v in results]
    frame["variant"] = pd.Categorical(frame["variant"], categories=order, ordered=True)
    return frame


def templates_note(frame: pd.DataFrame) -> str:
    """One sentence naming the template sets and subset sizes the records of ``frame`` used."""
    if frame.empty or "templates" not in frame:
        return "Template set(s) used: none (nothing evaluated)."
    sets = ", ".join(f"`{t}`" for t in sorted(frame["templates"].unique()))
    return f"Template set(s) used: {sets}; images per set: {', '.join(map(str, sorted(frame['n'].unique())))}."


def attack_label(row) -> str:
    """A record row's attack in words: ``clean``, ``PGD-20 1×`` (ε as a multiple of the unit filled in
    by :func:`accuracy_table`), ``AutoAttack``."""
    name = row.get("attack_name", "none")
    if name in (None, "none") or (isinstance(name, float) and pd.isna(name)):
        return "clean"
    names = {"pgd": "PGD", "cw": "CW", "mpgd": "MPGD", "autoattack": "AutoAttack",
             "autoattack-standard": "AutoAttack (standard)", "apgd-ce": "APGD-CE", "apgd-dlr": "APGD-DLR"}
    steps = row.get("attack_steps")
    label = names.get(name, name)
    if name in ("pgd", "cw", "mpgd") and steps is not None and not pd.isna(steps):
        label += f"-{int(steps)}"
    return label


def metric_label(attack: str, eps: float) -> str:
    """A table column of an attack at ε = ``eps`` units: ``PGD-20 @ 1×``."""
    return f"{attack} @ {eps:g}×"


def metric_name(record: dict, profile: str) -> str:
    """A record's robust-accuracy column in :func:`accuracy_table` (``PGD-20 @ 1×``), ``clean`` for a clean-only one."""
    attack = record.get("attack") or {"name": "none"}
    label = attack_label({"attack_name": attack.get("name"), "attack_steps": attack.get("steps")})
    return "clean" if label == "clean" else metric_label(label, eps_multiple(attack["eps"], profile))


def eps_multiple(eps: float, profile: str) -> float:
    """ε in units of the profile's ``eps_unit`` (2/255 under ``full`` → 2)."""
    return round(float(eps) / get_profile(profile).eps_unit, 6)


def long_results(frame: pd.DataFrame, profile: str) -> pd.DataFrame:
    """One row per (variant, seed, dataset, level, attack, ε multiple) with ``clean``, ``robust`` (accuracy
    under the attack at that level), ``leaf_robust`` and ``transfer_success`` in percent.  The tables built
    on it (:func:`accuracy_table`) show the mean over seeds; :mod:`hrvlm.book.intervals` gives every cell its interval."""
    columns = ["variant", "seed", "dataset", "level", "attack", "eps", "clean", "robust", "leaf_robust",
               "transfer_success"]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    rows = frame.copy()
    rows["attack"] = [attack_label(r) for r in rows.to_dict("records")]
    eps = rows["attack_eps"] if "attack_eps" in rows else pd.Series(float("nan"), index=rows.index)
    rows["eps"] = [0.0 if a == "clean" else eps_multiple(e, profile) for a, e in zip(rows["attack"], eps)]
    for source, target in (("clean_acc", "clean"), ("robust_acc", "robust"), ("leaf_robust_acc", "leaf_robust"),
                           ("transfer_success_rate", "transfer_success")):
        rows[target] = 100.0 * pd.to_numeric(rows[source], errors="coerce") if source in rows else float("nan")
    if "seed" not in rows:
        rows["seed"] = 0
    return rows[columns].reset_index(drop=True)


def accuracy_table(frame: pd.DataFrame, profile: str, level: int = 0, sets: Sequence[str] | None = None) -> pd.DataFrame:
    """Variant × (dataset, metric) accuracy (%) at ``level``, the mean over seeds, with the ``average`` over
    ``sets`` (default: the profile's evaluation sets; only when every one is present).  Metrics: ``clean``,
    then each attack at each ε (``PGD-20 @ 1×``).  Clean accuracy is read from the records (every attack's record carries it);
    records of one variant and seed disagreeing on one number are an error (mixed subsets:
    :func:`hrvlm.results.tables.dataset_table`, which tabulates the paper comparison too)."""
    rows = long_results(frame, profile)
    rows = rows[rows["level"] == level]
    if rows.empty:
        return pd.DataFrame()
    attacked = rows[rows["attack"] != "clean"]
    cells = pd.concat([rows.assign(metric="clean", value=rows["clean"]),
                       attacked.assign(metric=[metric_label(a, e) for a, e in zip(attacked["attack"], attacked["eps"])],
                                       value=attacked["robust"])])
    prof = get_profile(profile)
    table = dataset_table(cells[["variant", "seed", "dataset", "metric", "value"]], "variant",
                          prof.eval_datasets if sets is None else sets)
    metrics = ["clean"] + sorted(set(cells["metric"]) - {"clean"}, key=_metric_order)
    present = table.columns.get_level_values(0).unique()
    datasets = [d for d in prof.eval_datasets if d in present]
    datasets += [d for d in present if d not in datasets and d != AVERAGE]
    table = table.reindex(columns=pd.MultiIndex.from_product([datasets + [AVERAGE], metrics]))
    table.columns.names = ["dataset", "metric"]
    order = [v for v in frame["variant"].cat.categories if v in table.index] if hasattr(frame["variant"], "cat") \
        else list(table.index)
    return table.loc[order].dropna(axis=1, how="all")


def _metric_order(metric: str):
    attack, _, eps = metric.partition(" @ ")
    rank = next((i for i, p in enumerate(("PGD", "CW", "APGD", "AutoAttack")) if attack.startswith(p)), 9)
    return float(eps.rstrip("×") or 0), rank, attack


def paper_comparison(frame: pd.DataFrame, profile: str, table: str = MAIN_TABLE):
    """The paper's ``table`` beside our level-0 numbers (:func:`hrvlm.results.tables.compare`): each variant's
    records stand in the paper row of its ``paper`` id; variants without one appear under their label."""
    from hrvlm.results.tables import compare

    if frame.empty:
        return compare(table, None, profile)
    ours = frame.assign(method=[p if isinstance(p, str) else v for p, v in zip(frame["paper"], frame["variant"])])
    return compare(table, ours, profile)


def mini_world_note(profile: str) -> str:
    """One sentence saying which world produced "ours" (for a chapter's prose), from the profile's data
    (:func:`hrvlm.results.tables.replica`)."""
    from hrvlm.results.tables import FABRICATED, MINI_WORLD, replica

    prof = get_profile(profile)
    label = replica(profile)
    if label == MINI_WORLD:
        return (f"Ours come from the `{profile}` profile: the mini world's tiny CLIP ({prof.model}, weights "
                f"`{prof.pretrained}`), fine-tuned on {prof.train_dataset}, evaluated on "
                f"{', '.join(prof.eval_datasets)} at ε = {_eps_text(prof)}; they are mini-world replicas, "
                f"never the paper's numbers.")
    note = (f"Ours come from the `{profile}` profile: {prof.model} ({prof.pretrained}) fine-tuned on "
            f"{prof.train_dataset}, evaluated on {len(prof.eval_datasets)} datasets at ε = {_eps_text(prof)}.")
    if label == FABRICATED:
        note += (" The datasets are fabricated test data (`hrvlm data fabricate`: the real file formats and class "
                 "lists, generated images) and the sizes are tiny: this run rehearses the code path, and its "
                 "numbers are no results.")
    return note


def _eps_text(prof: Profile) -> str:
    """The profile's ε unit in the field's notation, k/255 (3/255, not the reduced 1/85)."""
    return f"{prof.eps_unit * 255:.4g}/255"


# ----------------------------------------------------------------------------- figures
def _variant_colors(labels: Sequence[str]):
    import matplotlib.pyplot as plt
    import numpy as np

    return dict(zip(labels, plt.get_cmap("tab10")(np.arange(len(labels)) % 10)))


def plot_grouped_bars(ax, values: pd.DataFrame, title: str = "", intervals: pd.DataFrame | None = None):
    """Grouped bars: one group per row of ``values`` (a variant), one bar per column (a metric), e.g.
    ``accuracy_table(...)["average"]``; returns ``ax``.  A missing value is labelled "not run".
    ``intervals``: the same rows and columns holding :class:`hrvlm.results.evidence.Estimate` objects
    (:func:`hrvlm.book.intervals.average_estimates`), drawn as 95 % error bars."""
    import numpy as np

    x, width = np.arange(len(values.index)), 0.8 / max(len(values.columns), 1)
    for i, metric in enumerate(values.columns):
        column = values[metric]
        where = x + (i - (len(values.columns) - 1) / 2) * width
        bars = ax.bar(where, column.fillna(0).to_numpy(), width, label=str(metric))
        if intervals is not None and metric in intervals.columns:
            found = [intervals.at[row, metric] if row in intervals.index else None for row in values.index]
            low = [max(0.0, 100 * (v - e.low)) if e is not None and pd.notna(v) else 0.0 for v, e in zip(column / 100, found)]
            high = [max(0.0, 100 * (e.high - v)) if e is not None and pd.notna(v) else 0.0 for v, e in zip(column / 100, found)]
            ax.errorbar(where, column.fillna(0).to_numpy(), yerr=[low, high], fmt="none", ecolor="0.2",
                        elinewidth=1, capsize=2)
        ax.bar_label(bars, labels=["not run" if pd.isna(v) else f"{v:.0f}" for v in column], fontsize=7)
    ax.set_xticks(x, [str(label) for label in values.index], rotation=20, ha="right")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_title(title)
    if len(values.columns):
        ax.legend(fontsize="small")
    else:
        ax.text(0.5, 0.5, "no results", ha="center", va="center", transform=ax.transAxes)
    return ax


def plot_against(ax, rows: pd.DataFrame, x: str, y: str, xlabel: str, ylabel: str):
    """One line per variant of ``y`` against ``x`` (columns of :func:`long_results`, averaged over the
    datasets present), markers at the measured points; returns ``ax``."""
    if rows.empty:
        ax.text(0.5, 0.5, "no results", ha="center", va="center", transform=ax.transAxes)
    else:
        means = rows.groupby(["variant", x], observed=True)[y].mean().reset_index()
        labels = [v for v in (rows["variant"].cat.categories if hasattr(rows["variant"], "cat") else
                              rows["variant"].unique()) if v in set(means["variant"])]
        colors = _variant_colors(labels)
        for label in labels:
            part = means[means["variant"] == label].sort_values(x)
            ax.plot(part[x], part[y], marker="o", color=colors[label], label=str(label))
        ticks = sorted(means[x].unique())
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])  # only the measured levels or budgets
        ax.legend(fontsize="small")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(-2, 102)
    return ax


__all__ = ["accuracy_table", "attack", "attack_label", "attackable_levels", "book_seeds", "book_settings",
           "chapter_setting", "dataset_tree", "eps_multiple", "evaluate_run", "evaluate_runs", "forest_size",
           "learning_curves", "level_classes", "long_results", "MAIN_TABLE", "main_variants", "metric_label", "metric_name",
           "mini_world_note", "paper_comparison", "plot_against", "plot_grouped_bars", "results_frame", "run_summary",
           "Setting", "settled_budget", "templates_note", "train_config", "train_run", "train_runs", "train_variants",
           "unavailable", "Variant", "ZERO_SHOT"]
