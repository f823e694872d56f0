"""The papers' claims as data, and their verdicts computed from the records (the book's closing chapter).

``hrvlm/resources/claims.json`` (format ``hrvlm-claims/1``) lists every claim of the HRVLM and QT-AFT
papers the book replays.  Each claim names its source (paper, table or section), a *protocol* (the
chapter's evaluation that produces its records: a group of variants, the evaluation sets, the levels and
the attack) and the paired comparison it implies: variant ``a`` against variant ``b`` on a ``metric``
(:data:`METRICS`) at ``level`` 0 or ``"superclass"`` (every attacked level ≥ 1, pooled per image), over
the protocol's ``"average"`` or one dataset, in the ``direction`` the paper states.  :func:`load_claims`
checks the file (an unknown paper table, protocol, variant or metric is a one-line ``ValueError``
naming it).

:func:`evaluate_claims` trains or finds each protocol's runs and evaluates or reads their records
exactly as the chapters do (:mod:`hrvlm.book.experiments`: the same configurations are the same cached runs
and record keys), builds per-image outcomes from the records' correctness bitmaps (:func:`outcomes`)
and tests each claim with :func:`hrvlm.results.evidence.paired` (seed × image bootstrap, 95 %):
*agrees*, *disagrees* or *inconclusive*.  :func:`summary_table` is the one table of all of them.
Nothing here is tuned toward a verdict: the protocol is the paper's (PGD-20 at 1 unit for HRVLM's tables,
AutoAttack at 4 units for QT-AFT's) and the verdict is whatever the interval says.
"""
from __future__ import annotations

import json
import math
import os
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from hrvlm.book import intervals
from hrvlm.core.resources import RESOURCES
from hrvlm.results import evidence

CLAIMS_FILE = RESOURCES / "claims.json"
FORMAT = "hrvlm-claims/1"
# a claim's metric -> what it measures: per image (hrvlm.book.intervals), or one number per run
METRICS = {**{m: intervals.IMAGE_METRICS[m] for m in ("clean", "robust", "transfer")},
           "minutes_per_epoch": "training minutes per epoch"}
PER_RUN = ("minutes_per_epoch",)  # one number per run: its interval rests on seeds alone
MIN_RUN_SEEDS = 3                  # fewer seeds cannot bound a per-run number
GROUPS = ("main", "trees")         # and "ablation:<name>" for each hrvlm.book.ablations.ABLATIONS entry
SET_CHOICES = ("eval", "focus", "ablation")  # experiments.chapter_setting's sets, focus sets, ablations.datasets
CLAIM_KEYS = ("id", "statement", "source", "protocol", "a", "b", "metric", "level", "over", "direction")
PROTOCOL_KEYS = ("chapter", "variants", "datasets", "levels", "attack", "what")


@dataclass(frozen=True)
class Claims:
    """A checked claims file: its ``papers`` (key → citation), ``protocols`` and ``claims``, the claims
    it does ``not_replay`` (with why) and the file it came from."""

    papers: dict
    protocols: dict
    claims: tuple
    not_replayed: tuple
    path: Path


def _fail(path, where: str, message: str):
    raise ValueError(f"claims file {path}: {where}: {message}")


def load_claims(path: str | os.PathLike | None = None) -> Claims:
    """The claims file at ``path`` (default :data:`CLAIMS_FILE`), checked: format, protocols (group, sets,
    levels, attack name), each claim's keys, paper, paper table (:func:`hrvlm.results.tables.paper_tables`),
    protocol, metric, level and direction.  Variants are checked against a profile by :func:`check_claims`."""
    from hrvlm.attacks import ATTACKS
    from hrvlm.book.ablations import ABLATIONS
    from hrvlm.results.tables import paper_tables

    path = Path(path) if path is not None else CLAIMS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"claims file {path} does not exist")
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"claims file {path} is not JSON text ({str(err).splitlines()[0]})") from None
    if not isinstance(spec, dict) or spec.get("format") != FORMAT:
        _fail(path, "format", f"expected a JSON object with \"format\": \"{FORMAT}\"")
    papers, protocols = spec.get("papers") or {}, spec.get("protocols") or {}
    groups = list(GROUPS) + [f"ablation:{name}" for name in ABLATIONS]
    for name, protocol in protocols.items():
        missing = [k for k in PROTOCOL_KEYS if k not in protocol]
        if missing:
            _fail(path, f"protocol {name!r}", f"lacks {missing}")
        if protocol["variants"] not in groups:
            _fail(path, f"protocol {name!r}", f"unknown group of variants {protocol['variants']!r}; known: {groups}")
        if protocol["datasets"] not in SET_CHOICES:
            _fail(path, f"protocol {name!r}", f"datasets must be one of {list(SET_CHOICES)}")
        levels = protocol["levels"]
        if levels != "attackable" and not (isinstance(levels, list) and levels and
                                           all(isinstance(v, int) and v >= 0 for v in levels)):
            _fail(path, f"protocol {name!r}", "levels must be \"attackable\" or a list of levels >= 0")
        if protocol["attack"].get("name") not in ("pgd", "autoattack"):
            known = sorted(set(ATTACKS) & {"pgd", "autoattack"})
            _fail(path, f"protocol {name!r}", f"unknown attack {protocol['attack'].get('name')!r}; use one of {known}")
    tables, seen = paper_tables(), set()
    for claim in spec.get("claims") or []:
        where = f"claim {claim.get('id')!r}"
        missing = [k for k in CLAIM_KEYS if k not in claim]
        if missing:
            _fail(path, where, f"lacks {missing}")
        if claim["id"] in seen:
            _fail(path, where, "repeats an earlier claim's id")
        seen.add(claim["id"])
        source = claim["source"]
        if source.get("paper") not in papers:
            _fail(path, where, f"unknown paper {source.get('paper')!r}; known: {sorted(papers)}")
        if source.get("table") is not None and source["table"] not in tables:
            _fail(path, where, f"unknown paper table {source['table']!r}; known: {tables}")
        if claim["protocol"] not in protocols:
            _fail(path, where, f"unknown protocol {claim['protocol']!r}; known: {sorted(protocols)}")
        if claim["metric"] not in METRICS:
            _fail(path, where, f"unknown metric {claim['metric']!r}; known: {sorted(METRICS)}")
        if claim["direction"] not in evidence.DIRECTIONS:
            _fail(path, where, f"unknown direction {claim['direction']!r}; known: {list(evidence.DIRECTIONS)}")
        if claim["level"] not in (0, "superclass"):
            _fail(path, where, f"level must be 0 or \"superclass\", got {claim['level']!r}")
        if claim["metric"] == "transfer" and claim["level"] != "superclass":
            _fail(path, where, "the transfer metric needs level \"superclass\" (leaf adversaries have no transfer)")
    return Claims(papers, protocols, tuple(spec.get("claims") or ()), tuple(spec.get("not_replayed") or ()), path)


# ---------------------------------------------------------------- protocols → variants and records
def group_variants(group: str, profile: str) -> list:
    """The variants of a protocol's group under ``profile``, as the chapters train them: ``main``
    (:func:`hrvlm.book.experiments.main_variants`), ``trees`` (:func:`hrvlm.book.ablations.tree_variants`),
    ``ablation:NAME`` (:func:`hrvlm.book.ablations.variants`; captions: :func:`hrvlm.book.ablations.caption_variants`)."""
    from hrvlm.book import ablations
    from hrvlm.book.experiments import main_variants

    if group == "main":
        return main_variants(profile)
    if group == "trees":
        return ablations.tree_variants(profile)
    name = group.split(":", 1)[1]
    return ablations.caption_variants(profile) if name == "captions" else ablations.variants(name, profile)


def resolve(ref: str, variants: Sequence):
    """The variant a claim's ``a`` or ``b`` names: by row label, else by the paper's method id; ``None``."""
    return next((v for v in variants if v.label == ref), None) or next((v for v in variants if v.paper == ref), None)


def known_names() -> set[str]:
    """Every variant name a claim may use on some profile: the paper tables' method ids and the ablation
    rows' labels (the main rows' labels are checked against the profile itself)."""
    from hrvlm.book.ablations import ABLATIONS
    from hrvlm.results.tables import paper_table, paper_tables

    names = {row["method"] for table in paper_tables() for row in paper_table(table).rows}
    return names | {label for _, _, rows in ABLATIONS.values() for label, _, _ in rows}


def check_claims(claims: Claims, profile: str) -> dict:
    """``{claim id: reason}`` for claims the profile cannot replay (a variant its group lacks there, e.g.
    a caption quality only the mini world renders, or 5 trees where the forest has fewer); a one-line
    ``ValueError`` for a variant name that is neither a row of the group nor in :func:`known_names`."""
    absent, known = {}, known_names()
    for claim in claims.claims:
        group = claims.protocols[claim["protocol"]]["variants"]
        variants = group_variants(group, profile)
        for side in ("a", "b"):
            if resolve(claim[side], variants) is not None:
                continue
            if claim[side] not in known:
                _fail(claims.path, f"claim {claim['id']!r}", f"unknown variant {claim[side]!r} in group {group!r}; "
                      f"rows: {[v.label for v in variants]} (or their paper ids)")
            absent[claim["id"]] = f"the {profile!r} profile has no variant {claim[side]!r} in group {group!r}"
    return absent


def resolved_protocol(protocol: dict, profile: str) -> dict:
    """``protocol`` with PGD's steps filled in where it leaves them out: the profile's ``book.pgd_steps``,
    as the protocol's chapter runs it (the paper's 20 but in the rehearsal), so its records are the chapter's."""
    from hrvlm.book.experiments import book_settings

    attack = protocol["attack"]
    if attack["name"] != "pgd" or "steps" in attack:
        return protocol
    return {**protocol, "attack": {**attack, "steps": book_settings(profile)["pgd_steps"]}}


def protocol_setting(protocol: dict, profile: str):
    """``(datasets, n, attack, levels(dataset))`` of a protocol: the chapter's sets and sizes
    (:func:`hrvlm.book.experiments.chapter_setting`; the ablations' sets :func:`hrvlm.book.ablations.datasets`)
    and its attack (:func:`hrvlm.book.ablations.attacks`)."""
    from hrvlm.book.ablations import attacks, datasets, sizes
    from hrvlm.book.experiments import attackable_levels, chapter_setting

    sets = datasets(profile) if protocol["datasets"] == "ablation" else None
    setting = chapter_setting(profile, focus=protocol["datasets"] == "focus", datasets=sets)
    spec = resolved_protocol(protocol, profile)["attack"]
    attack = attacks([spec["name"]], profile, spec.get("eps", 1), pgd_steps=spec.get("steps"),
                     autoattack_steps=sizes(profile)["autoattack_steps"])[0]
    levels = protocol["levels"]
    return setting.datasets, setting.n, attack, (attackable_levels if levels == "attackable" else lambda _: levels)


def gather(protocol: dict, variants: Sequence, profile: str, seeds: Sequence[int]) -> dict:
    """``{variant: {seed: (run folder, records)}}``: each variant trained (or its finished run found) and
    evaluated (or its records read) as the protocol's chapter does."""
    from hrvlm.book.experiments import evaluate_runs, train_runs

    datasets, n, attack, levels = protocol_setting(protocol, profile)
    runs = train_runs(variants, profile, seeds)
    by_set = [evaluate_runs(runs, profile, [attack], [d], levels=levels(d), n=n, progress=False) for d in datasets]
    return {variant: {seed: (run, [r for records in by_set for r in records[variant] if r["seed"] == seed])
                      for seed, run in by_seed.items()} for variant, by_seed in runs.items()}


def outcomes(runs: dict, metric: str, level, over: str, datasets: Sequence[str]) -> tuple[list, tuple]:
    """One variant's :class:`hrvlm.results.evidence.Part` per dataset (``over``: one dataset, or every one of
    ``datasets`` for ``"average"``) from ``runs`` = ``{seed: (run, records)}``, and the image subsets' ids
    (to check that two variants are paired).  Level 0, or ``"superclass"``: every level ≥ 1 of a record set,
    averaged per image.  ``minutes_per_epoch`` is one value per run (one "image" per seed)."""
    from hrvlm.book.ablations import epoch_minutes
    from hrvlm.models.runs import read_record

    if metric in PER_RUN:
        values = np.array([[epoch_minutes(read_record(runs[s][0]))] for s in sorted(runs)])
        return [evidence.Part.of(values)], ()
    return intervals.parts({seed: records for seed, (_, records) in runs.items()}, metric, level, over, datasets)


# ---------------------------------------------------------------- verdicts
@dataclass(frozen=True)
class ClaimResult:
    """A claim with its protocol, the variants' labels, the paired comparison (``None`` when it did not
    run) and a ``note`` (why it did not run, or what limits it)."""

    claim: dict
    protocol: dict
    labels: tuple = ("", "")
    outcome: evidence.Paired | None = None
    note: str = ""

    @property
    def verdict(self) -> str:
        return self.outcome.verdict if self.outcome is not None else "not run"


def compare(claim: dict, protocol: dict, gathered: dict, variants: Sequence, profile: str,
            replicates: int = evidence.REPLICATES) -> ClaimResult:
    """The paired test of one claim from its protocol's ``gathered`` runs and records."""
    protocol = resolved_protocol(protocol, profile)  # the result names the attack as it ran
    a, b = (resolve(claim[side], variants) for side in ("a", "b"))
    datasets = protocol_setting(protocol, profile)[0]
    (parts_a, ids_a), (parts_b, ids_b) = (outcomes(gathered[v], claim["metric"], claim["level"], claim["over"], datasets)
                                          for v in (a, b))
    if ids_a != ids_b:
        raise ValueError(f"claim {claim['id']}: {a.label} and {b.label} were evaluated on different images")
    # the claim's id seeds the draws: the same records give the same interval in every build
    outcome = evidence.paired(parts_a, parts_b, claim["direction"], replicates=replicates,
                              seed=zlib.crc32(claim["id"].encode()))
    note = ""
    if claim["metric"] in PER_RUN and outcome.effect.seeds < MIN_RUN_SEEDS:
        unknown = replace(outcome.effect, low=math.nan, high=math.nan)
        outcome = replace(outcome, effect=unknown, verdict="inconclusive")
        note = f"one value per run: an interval needs {MIN_RUN_SEEDS} seeds or more"
    return ClaimResult(claim, protocol, (a.label, b.label), outcome, note)


def evaluate_claims(profile: str, seeds: Sequence[int] | None = None, path: str | os.PathLike | None = None,
                    replicates: int = evidence.REPLICATES) -> list[ClaimResult]:
    """Every claim of the file at ``path`` tested on the profile's records of ``seeds`` (default: the
    profile's ``book.seeds``, those the chapters ran): runs and records are the chapters' (cached), gathered
    once per protocol; nothing runs where the profile cannot (:func:`hrvlm.book.experiments.unavailable`)."""
    from hrvlm.book.experiments import book_seeds, unavailable

    claims = load_claims(path)
    seeds = book_seeds(profile, seeds)
    absent = check_claims(claims, profile)  # every name checked before anything trains
    why = unavailable(profile)
    results, cache = [], {}
    for claim in claims.claims:
        name = claim["protocol"]
        protocol = resolved_protocol(claims.protocols[name], profile)
        if why or claim["id"] in absent:
            results.append(ClaimResult(claim, protocol, note=why or absent[claim["id"]]))
            continue
        variants = group_variants(protocol["variants"], profile)
        if name not in cache:  # one protocol's runs and records, for all of its claims
            used = {resolve(c[s], variants) for c in claims.claims if c["protocol"] == name and c["id"] not in absent
                    for s in ("a", "b")}
            cache[name] = gather(protocol, [v for v in variants if v in used], profile, seeds)
        results.append(compare(claim, protocol, cache[name], variants, profile, replicates))
    return results


def _where(result: ClaimResult) -> str:
    claim = result.claim
    level = "leaves" if claim["level"] == 0 else "superclass levels"
    over = "average over the sets" if claim["over"] == "average" else claim["over"]
    attack = result.protocol["attack"]
    name = {"pgd": f"PGD-{attack.get('steps')}", "autoattack": "AutoAttack"}[attack["name"]]
    if claim["metric"] in PER_RUN:
        return METRICS[claim["metric"]]
    return f"{METRICS[claim['metric']]}, {name} @ {attack.get('eps', 1):g}×, {level}, {over}"


def summary_table(results: Sequence[ClaimResult], links: bool = True) -> pd.DataFrame:
    """One row per claim: the claim, its source, its chapter (an HTML link to ``<chapter>.html`` with
    ``links``), the comparison, each side's value and A − B with 95 % intervals (percent and points; the
    minutes of a per-run metric), the verdict and a note."""
    rows = []
    for r in results:
        claim, chapter = r.claim, r.protocol["chapter"]
        number = chapter.split("_", 1)[0]
        side = "<" if claim["direction"] == "less" else ">"
        a, b = r.labels if r.outcome is not None else (claim["a"], claim["b"])
        if r.outcome is None:
            values = ["–"] * 3
        elif claim["metric"] in PER_RUN:
            values = [_minutes(e) for e in (r.outcome.a, r.outcome.b, r.outcome.effect)]
        else:
            values = [e.points() for e in (r.outcome.a, r.outcome.b, r.outcome.effect)]
        source = claim["source"]
        rows.append({"claim": claim["statement"],
                     "source": f"{source['paper']}: {source['where']}",
                     "chapter": f'<a href="{chapter}.html">{number}</a>' if links else number,
                     "comparison": f"{a} {side} {b}", "measure": _where(r),
                     "A": values[0], "B": values[1], "A − B": values[2], "verdict": r.verdict, "note": r.note})
    return pd.DataFrame(rows, index=pd.Index([r.claim["id"] for r in results], name="id"))


def _minutes(e: evidence.Estimate) -> str:
    if math.isnan(e.value):
        return "–"
    interval = "" if math.isnan(e.low) else f" [{e.low:.2f}, {e.high:.2f}]"
    return f"{e.value:.2f} min{interval}"


def summary_html(results: Sequence[ClaimResult]) -> str:
    """:func:`summary_table` as HTML, chapter links live."""
    return summary_table(results).to_html(escape=False)


def verdict_counts(results: Sequence[ClaimResult]) -> str:
    """One sentence: how many claims agree, disagree, are inconclusive or did not run, and on how many
    seeds and images the tests rest."""
    counts = {v: sum(r.verdict == v for r in results) for v in (*evidence.VERDICTS, "not run")}
    ran = [r.outcome for r in results if r.outcome is not None]
    seeds = sorted({o.effect.seeds for o in ran})
    plural = {"agrees": "agree", "disagrees": "disagree"}  # "9 agree", "1 agrees"
    text = ", ".join(f"{n} {v if n == 1 else plural.get(v, v)}" for v, n in counts.items() if n)
    basis = (f" Tests rest on {'/'.join(map(str, seeds))} seed(s) per variant and paired per image; each interval is a "
             f"95 % seed × image bootstrap ({ran[0].effect.replicates} replicates, hrvlm.results.evidence).") if ran else ""
    return f"Of {len(results)} claims: {text}.{basis}"


__all__ = ["CLAIMS_FILE", "ClaimResult", "Claims", "METRICS", "check_claims", "compare", "evaluate_claims", "gather",
           "group_variants", "known_names", "load_claims", "outcomes", "protocol_setting", "resolve", "summary_html", "summary_table",
           "verdict_counts"]
