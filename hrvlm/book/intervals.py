"""Every number of a result chapter with its uncertainty: per-image outcomes from the records' bitmaps, and
the seed × image intervals of :mod:`hrvlm.results.evidence` for the chapters' tables and error bars.

A chapter's results are ``{variant: records}`` with every seed's records (:func:`hrvlm.book.experiments.evaluate_runs`);
the records of one variant, grouped by ``seed`` and paired by image (the fixed subsets are the same for every
seed), become :class:`~hrvlm.results.evidence.Part` objects (:func:`parts`), one per dataset.  An estimate is the
mean over seeds and images (for an average, over the datasets too) with a 95 % interval from a bootstrap that
draws seeds and, within a drawn seed, images: how another training seed and other images would move the number.
With one seed the interval covers the images only.  The closing chapter's paired tests use the same parts
(:mod:`hrvlm.book.claims`).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from hrvlm.results import evidence

# metric -> what it measures, per image. "transfer": of the images whose leaf prediction is right clean, the
# share the superclass adversary makes wrong (hrvlm.attacks.transfer_summary's success rate).
IMAGE_METRICS = {"clean": "clean accuracy", "robust": "robust accuracy", "leaf_robust": "leaf accuracy under attack",
                 "transfer": "transfer success rate"}
_BITS = {"clean": "clean_correct", "robust": "robust_correct", "leaf_robust": "leaf_robust_correct"}
_TRANSFERRED = ("leaf_robust", "transfer")  # the leaf head on a superclass adversary: levels >= 1 only


def per_image(record: dict, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Numerator and denominator of ``metric`` (:data:`IMAGE_METRICS`) per image of one record."""
    from hrvlm.evaluation.records import decode_bits

    if metric not in IMAGE_METRICS:
        raise ValueError(f"unknown per-image metric {metric!r}; use one of {list(IMAGE_METRICS)}")

    def bits(field):
        if record.get(field) is None:
            raise ValueError(f"record {record.get('key')} has no {field} bitmap: it cannot give per-image {metric}")
        return decode_bits(record[field], record["n"]).astype(np.float64)

    if metric == "transfer":
        right = bits("leaf_clean_correct")
        return right * (1 - bits("leaf_robust_correct")), right
    correct = bits(_BITS[metric])
    return correct, np.ones_like(correct)


def by_seed(records: Sequence[dict]) -> dict:
    """``{seed: records}``: one variant's records grouped by their ``seed``."""
    grouped: dict = {}
    for record in records:
        grouped.setdefault(record["seed"], []).append(record)
    return grouped


def _at(record: dict, level) -> bool:
    return record["level"] >= 1 if level == "superclass" else record["level"] == level


def parts(seeded: dict, metric: str, level, over: str, datasets: Sequence[str]) -> tuple[list, tuple]:
    """One variant's :class:`~hrvlm.results.evidence.Part` per dataset (``over``: one dataset, or every one of
    ``datasets`` for ``"average"``) from ``seeded`` = ``{seed: records}`` (:func:`by_seed`), and the image
    subsets' ids (to check that two variants are paired).  ``level``: an attacked level (0 = the leaves), or
    ``"superclass"``: every level >= 1 of a record set, averaged per image."""
    chosen = [over] if over != "average" else list(datasets)
    found, subsets = [], []
    for dataset in chosen:
        nums, dens = [], []
        for seed in sorted(seeded):
            records = [r for r in seeded[seed] if r["dataset"] == dataset and _at(r, level)]
            if not records:
                raise ValueError(f"no records of {dataset} at level {level} for seed {seed}")
            if len({r["level"] for r in records}) != len(records):  # e.g. several attacks' records
                raise ValueError(f"several records of {dataset} per level for seed {seed}: pass one attack's records")
            pairs = [per_image(r, metric) for r in records]
            nums.append(np.mean([p[0] for p in pairs], axis=0))
            dens.append(np.mean([p[1] for p in pairs], axis=0))
            subsets.append((dataset, records[0]["subset_ids_hash"]))
        found.append(evidence.Part.of(np.stack(nums), np.stack(dens)))
    if len(set(subsets)) != len(chosen):  # one subset per dataset, whatever the seed
        raise ValueError("the seeds' records of one dataset use different image subsets: they cannot be paired")
    return found, tuple(sorted(set(subsets)))


def _estimate(records: Sequence[dict], metric: str, level, over: str, datasets: Sequence[str],
              replicates: int) -> evidence.Estimate:
    return evidence.estimate(parts(by_seed(records), metric, level, over, datasets)[0], replicates=replicates)


def average_estimates(results: dict, datasets: Sequence[str], metrics: Sequence[str] = ("clean", "robust"),
                      replicates: int = evidence.REPLICATES) -> pd.DataFrame:
    """Variant × metric (:data:`IMAGE_METRICS`' words): the average over ``datasets`` at the leaves as an
    :class:`~hrvlm.results.evidence.Estimate` (value and 95 % interval, fractions), from a chapter's
    ``{variant: records}`` of one attack."""
    return pd.DataFrame({variant.label: {IMAGE_METRICS[m]: _estimate(records, m, 0, "average", datasets, replicates)
                                         for m in metrics}
                         for variant, records in results.items() if records}).T


def dataset_estimates(results: dict, datasets: Sequence[str], metric: str = "robust",
                      replicates: int = evidence.REPLICATES) -> pd.DataFrame:
    """Variant × (each of ``datasets``, then the average over them): ``metric`` at the leaves as an
    :class:`~hrvlm.results.evidence.Estimate`, from a chapter's ``{variant: records}`` of one attack: the
    per-dataset table's cells with their uncertainty."""
    from hrvlm.results.tables import AVERAGE

    return pd.DataFrame({variant.label: {**{d: _estimate(records, metric, 0, d, datasets, replicates) for d in datasets},
                                         AVERAGE: _estimate(records, metric, 0, "average", datasets, replicates)}
                         for variant, records in results.items() if records}).T


def level_estimates(results: dict, metric: str, replicates: int = evidence.REPLICATES) -> pd.DataFrame:
    """Variant × (dataset, attacked level): ``metric`` at each level the records attacked, as an
    :class:`~hrvlm.results.evidence.Estimate` (the superclass chapter's tables with their uncertainty; the leaf
    head's numbers on a superclass adversary, ``leaf_robust`` and ``transfer``, have no level 0)."""
    table = {}
    for variant, records in results.items():
        cells = {}
        for dataset, level in sorted({(r["dataset"], r["level"]) for r in records}):
            if metric in _TRANSFERRED and level == 0:
                continue  # the leaf adversary is not transferred to the leaves: its numbers are clean/robust
            cells[(dataset, level)] = _estimate(records, metric, level, dataset, [dataset], replicates)
        table[variant.label] = cells
    frame = pd.DataFrame(table).T
    if not frame.empty:
        frame.columns = pd.MultiIndex.from_tuples(frame.columns, names=["dataset", "level"])
    return frame


def attack_estimates(results: dict, datasets: Sequence[str], profile: str,
                     replicates: int = evidence.REPLICATES) -> pd.DataFrame:
    """Variant × (``clean``, then each attack at each ε, named as :func:`hrvlm.book.experiments.accuracy_table`
    names them): the average over ``datasets`` at the leaves as an :class:`~hrvlm.results.evidence.Estimate`,
    from a chapter's ``{variant: records}`` of any number of attacks (clean accuracy from the first attack's)."""
    from hrvlm.book.experiments import metric_name

    table = {}
    for variant, records in results.items():
        leaves = [r for r in records if r["level"] == 0]
        if not leaves:
            continue
        attacks: dict = {}
        for record in leaves:
            attacks.setdefault(metric_name(record, profile), []).append(record)
        first = next(iter(attacks.values()))
        table[variant.label] = {"clean": _estimate(first, "clean", 0, "average", datasets, replicates),
                                **{name: _estimate(chosen, "robust", 0, "average", datasets, replicates)
                                   for name, chosen in attacks.items()}}
    return pd.DataFrame(table).T


def as_points(estimates: pd.DataFrame) -> pd.DataFrame:
    """A table of :class:`~hrvlm.results.evidence.Estimate` objects as text, ``"41.2 [38.0, 44.1]"`` (%)."""
    return estimates.map(lambda e: e.points() if isinstance(e, evidence.Estimate) else "–")
