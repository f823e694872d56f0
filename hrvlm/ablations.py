"""The papers' ablations as data, and the runs and records behind them (chapters 07 and 08 of the book).

An ablation is a list of *variants* of one method, each a label, the method settings it changes and
the paper row it reproduces (:data:`ABLATIONS`).  A variant is trained with the profile's settings of
that method updated by its own (:func:`train_variant`, a cached run: the same configuration is the same
run folder, so the reference variant of every HRVLM ablation is one run), then evaluated into a records
store (:func:`evaluate_run`).  How big the runs and evaluations are is profile data
(``profiles.<profile>.book``, :func:`sizes`): under ``full`` the ablation runs use the profile's own
loop, so the reference variant *is* the main table's HRVLM run; under ``mini`` they use a shorter
loop (``ablation_loop``) so that the nine HRVLM variants fit the book's time budget — all variants of
one table share that loop, so they are compared with each other, never with the main table's run.
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

# name -> the method, the setting that varies, and the variants: (row label, settings, paper method id)
ABLATIONS = {
    "components": {
        "method": "hrvlm", "paper": "hrvlm-table10",
        "variants": [("+ HITA", {"components": "hita"}, "hrvlm-hita"),
                     ("+ HITA + vic", {"components": "hita+vic"}, "hrvlm-hita-vic"),
                     ("+ HITA + gap", {"components": "hita+gap"}, "hrvlm-hita-gap"),
                     ("Full (HITA + vic + gap)", {"components": "full"}, "hrvlm-1tree")]},
    "perturbation": {
        "method": "hrvlm", "paper": "hrvlm-table12",
        "variants": [("Leaf-only perturbation", {"perturbation": "leaf"}, "hrvlm-leaf-perturbation"),
                     ("Separate perturbation per level", {"perturbation": "per-level"}, "hrvlm-per-level-perturbation"),
                     ("Universal hierarchical perturbation", {"perturbation": "universal"}, "hrvlm-1tree")]},
    "hnsa": {
        "method": "hrvlm", "paper": "hrvlm-hnsa",
        "variants": [("both neighbouring levels (l-1 and l+1)", {"hnsa": "both"}, "hrvlm-1tree"),
                     ("lower level only (l-1)", {"hnsa": "lower"}, "hrvlm-hnsa-lower"),
                     ("higher level only (l+1)", {"hnsa": "upper"}, "hrvlm-hnsa-upper")]},
    # the paper gives no table: the mini world's quality ladder through QT-AFT's `captions` setting
    "captions": {
        "method": "qtaft", "paper": None,
        "variants": [("class name", {"captions": "name"}, "qtaft-name"),
                     ("prompt template", {"captions": "template"}, "qtaft-template"),
                     ("name + WordNet gloss", {"captions": "gloss"}, "qtaft-gloss"),
                     ("object with its properties", {"captions": "detailed"}, "qtaft-detailed")]},
}


def sizes(profile: str) -> dict:
    """The profile's ``book`` entry with the ablation sizes resolved: ``ablation_loop`` (training-loop
    overrides, ``{}`` = the profile's), ``ablation_n`` and ``qtaft_n`` (images per evaluation set;
    ``None`` in the data = the profile's ``eval_n``), ``ablation_metrics`` and ``autoattack_steps``."""
    from .profiles import get_profile

    prof = get_profile(profile)
    book = dict(prof.book or {})
    missing = [k for k in ("ablation_loop", "ablation_n", "ablation_metrics", "autoattack_steps", "qtaft_n")
               if k not in book]
    if missing:
        raise KeyError(f"profile {profile!r} lacks the book setting(s) {missing} (profiles.json, "
                       f"profiles.{profile}.book; see its book_keys note)")
    for key in ("ablation_n", "qtaft_n"):
        book[key] = prof.eval_n if book[key] is None else book[key]
    return book


def missing_inputs(profile: str) -> str | None:
    """Why the profile's runs cannot happen on this machine (weights not cached, data absent), or
    ``None``; checks files only, so a chapter can say so in one sentence before any work."""
    from .data import get_spec
    from .data.real import REAL, DatasetMissing, require_files
    from .evaluate import default_split
    from .models import cached_weights
    from .profiles import get_profile

    prof = get_profile(profile)
    if prof.pretrain is None and cached_weights(prof.model, prof.pretrained) is None:
        return (f"the `{profile}` profile's weights ({prof.model}, {prof.pretrained!r}) are not in the local cache "
                f"and nothing is downloaded here")
    for name in dict.fromkeys((prof.train_dataset, *prof.eval_datasets)):
        if name in REAL:
            split = "train" if name == prof.train_dataset else default_split(get_spec(name))
            try:
                require_files(name, split, prof.dataset_options.get("root"))
            except DatasetMissing:
                return f"the `{profile}` profile's dataset {name!r} ({split}) is not under the data root ($HRVLM_DATA)"
    return None


def forest_size(profile: str, depth: int = 5) -> int:
    """How many distinct trees the profile's fine-tuning set has (at most the paper's 5)."""
    from .data import get_spec
    from .hierarchy import forest_for_dataset
    from .methods.hrvlm import MAX_TREES
    from .profiles import get_profile

    spec = get_spec(get_profile(profile).train_dataset)
    return len(forest_for_dataset(spec.hierarchy, depth=depth, max_trees=MAX_TREES))


def train_variant(method: str, profile: str, settings: dict | None = None, loop: dict | None = None,
                  seed: int = 0) -> Path:
    """The finished run of ``method`` under ``profile`` with ``settings`` and loop overrides ``loop``
    (trained now unless a run of this exact configuration is cached)."""
    from .train import config_from_profile, train

    config = config_from_profile(method, profile, settings or {}, seed=seed, **(loop or {}))
    return train(config, progress=False)


def metric_attack(metric: dict, profile: str, autoattack_steps: int | None = None):
    """The attack of a paper table's metric (``{"name", "steps"?, "eps_multiple"}``) in ``profile``'s ε unit."""
    from .attacks import build_attack
    from .profiles import get_profile

    spec = metric["attack"]
    settings = {"steps": spec["steps"]} if "steps" in spec else {}
    if spec["name"].startswith("autoattack") and autoattack_steps is not None:
        settings["steps"] = autoattack_steps
    return build_attack(spec["name"], get_profile(profile).eps(spec["eps_multiple"]), **settings)


def evaluate_run(run: Path | str, profile: str, attacks, n: int | None, store, seed: int = 0) -> list[dict]:
    """Records of run ``run`` on every evaluation set of ``profile`` (level 0, clean and each attack)."""
    from .evaluate import evaluate
    from .models import load_clip
    from .profiles import get_profile
    from .runs import read_record

    prof = get_profile(profile)
    record = read_record(run)
    model, _, tokenizer = load_clip(record["model"], str(record["path"]))
    return [r for dataset in prof.eval_datasets for r in evaluate(
        model, tokenizer, dataset, attacks, n=n, store=store, method=record["method"]["name"], seed=seed,
        dataset_options=prof.dataset_options, progress=False)]


def records_of(records: list[dict], labels: dict[str, str]) -> pd.DataFrame:
    """A records frame whose ``method`` is the label of the run that produced each record
    (``labels``: checkpoint digest → label), so variants of one method become rows of their own."""
    from .records import records_to_frame

    frame = records_to_frame(records)
    return frame.assign(method=frame["checkpoint"].map(labels))


def epoch_minutes(record: dict) -> float:
    """Training time per epoch (minutes) of a run record: the mean of its whole epochs, or the estimate
    extrapolated from its steps when it ran less than one epoch."""
    whole = record.get("epoch_times_s") or []
    seconds = sum(whole) / len(whole) if whole else record.get("epoch_time_s_estimate")
    return math.nan if seconds is None else seconds / 60.0
