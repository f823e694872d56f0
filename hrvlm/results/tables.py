"""The papers' reported numbers beside ours: paper tables as data, records → comparison tables.

Reported numbers live in ``hrvlm/resources/paper/<name>.json`` (format ``hrvlm-paper-table/1``), each
file with a ``source`` note saying where its numbers come from; a number the sources do not give is
``null`` (unknown), never guessed.  Our numbers come from the records store
(:func:`hrvlm.evaluation.records.load_table`).  :func:`compare` puts both in one table with *reported | ours |
difference* per column and metric, the difference (ours − reported, percentage points) only where both
exist.

**The rule for the mini world and fabricated data.**  Numbers from the ``mini`` and ``smoke`` profiles
are mini-world replicas, and numbers computed on fabricated datasets (the ``rehearsal`` profile, or any
record with ``"fabricated": true``, :mod:`hrvlm.data.fabricate`) are test output: they go into columns
labelled so (``"mini-heldout (mini world)"``, ``"cifar10 (fabricated)"``, ``"average (fabricated)"``,
:func:`replica`), never into a column labelled with one of the paper's datasets or the paper's
average, so no difference is ever computed between such a number and a paper number.  Which label
applies is read from the profile's data (its datasets, its ``fabricated_root``) and the records, not
from its name.  :func:`compare` enforces it (a ``ValueError`` for records of the wrong world) and its
caption says which profile produced "ours" and which template sets the evaluations used.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pandas as pd

from hrvlm.core.resources import RESOURCES

PAPER_DIR = RESOURCES / "paper"
FORMAT = "hrvlm-paper-table/1"
AVERAGE = "average"
MINI_WORLD, FABRICATED = "mini world", "fabricated"
KINDS = ("reported", "ours", "difference")


@dataclass(frozen=True)
class PaperTable:
    """One table of numbers a paper reports, with where they come from."""

    name: str
    paper: str
    caption: str
    source: str
    setting: dict
    columns: tuple[str, ...]        # dataset names (hrvlm's), then "average"
    metrics: dict                   # metric id -> {"label", "attack": None | {"name", "steps"?, "eps_multiple"}}
    rows: tuple[dict, ...]          # {"row": label, "method": method id, "values": {column: {metric: float|None}}}
    notes: tuple[str, ...] = ()

    def reported(self) -> pd.DataFrame:
        """Rows × (column, metric) of the reported numbers; unknown numbers are NaN."""
        data = {(column, metric): [_number(row["values"][column][metric]) for row in self.rows]
                for column in self.columns for metric in self.metrics}
        frame = pd.DataFrame(data, index=pd.Index([row["row"] for row in self.rows], name="row"))
        frame.columns.names = ["column", "metric"]
        return frame

    def known(self) -> pd.DataFrame:
        """Only the (column, metric) pairs with at least one reported number."""
        frame = self.reported()
        return frame.loc[:, frame.notna().any()]


def _number(value) -> float:
    return math.nan if value is None else float(value)


def paper_tables() -> list[str]:
    """Names of the stored paper tables."""
    return sorted(p.stem for p in PAPER_DIR.glob("*.json"))


def paper_table(name: str) -> PaperTable:
    """The stored paper table ``name`` (see :func:`paper_tables`), checked for shape and provenance."""
    path = PAPER_DIR / f"{name}.json"
    if not path.is_file():
        raise KeyError(f"no paper table {name!r}; known: {paper_tables()}")
    spec = json.loads(path.read_text())
    if spec.get("format") != FORMAT:
        raise ValueError(f"{path}: format must be {FORMAT!r}")
    if not str(spec.get("source", "")).strip():
        raise ValueError(f"{path}: every paper table needs a 'source' note")
    for row in spec["rows"]:
        for column in spec["columns"]:
            cell = row["values"].get(column)
            if cell is None or set(cell) != set(spec["metrics"]):
                raise ValueError(f"{path}: row {row['row']!r}, column {column!r} must give every metric "
                                 f"{sorted(spec['metrics'])} (null when unknown)")
            bad = {m: v for m, v in cell.items() if v is not None and not isinstance(v, (int, float))}
            if bad:
                raise ValueError(f"{path}: row {row['row']!r}, column {column!r}: not numbers {bad}")
    return PaperTable(name=spec["name"], paper=spec["paper"], caption=spec["caption"], source=spec["source"],
                      setting=spec["setting"], columns=tuple(spec["columns"]), metrics=spec["metrics"],
                      rows=tuple(spec["rows"]), notes=tuple(spec.get("notes", ())))


# ---------------------------------------------------------------- our numbers from records
def is_mini_world(dataset: str) -> bool:
    """Whether ``dataset`` is a mini-world dataset (its numbers are replicas, never the paper's)."""
    from hrvlm.data import get_spec

    try:
        return get_spec(dataset).world == "mini"
    except KeyError:
        return dataset.startswith("mini-")


def replica(profile: str, records: pd.DataFrame | None = None) -> str | None:
    """What "ours" are when they are not results on the paper's data, from the profile's data alone:
    :data:`MINI_WORLD` (its fine-tuning set is generated), :data:`FABRICATED` (it reads a fabricated
    root, or a record of ``records`` says it was computed on one), else ``None`` (real results)."""
    from hrvlm.profiles import get_profile

    prof = get_profile(profile)
    if is_mini_world(prof.train_dataset):
        return MINI_WORLD
    flags = records["fabricated"] if records is not None and "fabricated" in records else pd.Series(dtype=object)
    if prof.fabricated_root or flags.fillna(False).astype(bool).any():
        return FABRICATED
    return None


def _rows_for(frame: pd.DataFrame, metric: dict, eps_unit: float) -> pd.DataFrame:
    attack = metric.get("attack")
    if attack is None:
        return frame.assign(value=frame["clean_acc"])
    mask = frame.get("attack_name", pd.Series("none", index=frame.index)) == attack["name"]
    if "steps" in attack and "attack_steps" in frame:
        mask &= frame["attack_steps"] == attack["steps"]
    if "eps_multiple" in attack and "attack_eps" in frame:
        eps = attack["eps_multiple"] * eps_unit
        mask &= (frame["attack_eps"] - eps).abs() <= 1e-9 + 1e-6 * eps
    return frame[mask].assign(value=frame.loc[mask, "robust_acc"])


def dataset_table(cells: pd.DataFrame, row: str, datasets) -> pd.DataFrame:
    """Long ``cells`` (columns ``row``, ``dataset``, ``metric``, ``value`` and optionally ``seed``) → ``row`` ×
    (dataset, metric), the mean over seeds, plus the :data:`AVERAGE` over ``datasets`` (a profile's evaluation
    sets) per metric, present only when every one of them is.  The one tabulation of our numbers: the paper
    comparison and the book's per-dataset tables.  Several different values for one cell of one seed are an
    error (records of several checkpoints, subsets or template sets)."""
    seeds = ["seed"] if "seed" in cells else []
    spread = cells.groupby([row, *seeds, "dataset", "metric"], observed=True)["value"].agg(["min", "max"])
    disagree = spread.index[(spread["max"] - spread["min"]).abs() > 1e-9]
    if len(disagree):
        name, *_, dataset, metric = disagree[0]
        raise ValueError(f"records disagree on {metric} for {name} on {dataset} (several checkpoints, subsets or "
                         f"template sets?): filter the records first")
    values = spread["min"].groupby([row, "dataset", "metric"], observed=True).mean() if seeds else spread["min"]
    table = values.unstack(["dataset", "metric"])
    table.index = table.index.astype(object).rename(None)  # plain labels, as a row of a chapter shows them
    for metric in table.columns.get_level_values("metric").unique():
        table[(AVERAGE, metric)] = table.reindex(columns=[(d, metric) for d in datasets]).mean(axis=1, skipna=False)
    return table


def ours_from_records(records: pd.DataFrame, table: PaperTable, profile: str) -> pd.DataFrame:
    """Our accuracies (%) from a records frame: method × (dataset, metric), level-0 (leaf) records only.

    Each paper metric selects records by its attack (name, steps, ε as a multiple of the profile's ε
    unit; clean accuracy from any record), the mean over the records' seeds.  Several records of one seed
    disagreeing on one number (e.g. two checkpoints or subset sizes) are an error: filter the frame first.  The ``average`` column is the
    mean over the profile's evaluation sets, present only when every one of them is (:func:`dataset_table`).
    """
    from hrvlm.profiles import get_profile

    prof = get_profile(profile)
    if records.empty:
        return pd.DataFrame()
    frame = records[records["level"] == 0] if "level" in records else records
    cells = []
    for metric_id, metric in table.metrics.items():
        if metric.get("attack") is None and metric_id != "clean":
            continue  # e.g. time per epoch: not in evaluation records
        selected = _rows_for(frame, metric, prof.eps_unit).dropna(subset=["value"])
        cells.append(pd.DataFrame({"method": selected["method"], "dataset": selected["dataset"],
                                   "seed": selected["seed"] if "seed" in selected else 0,
                                   "metric": metric_id, "value": 100.0 * selected["value"].astype(float)}))
    cells = pd.concat(cells, ignore_index=True) if cells else pd.DataFrame()
    if cells.empty:
        return pd.DataFrame()
    ours = dataset_table(cells, "method", prof.eval_datasets)
    ours.index.name, ours.columns.names = "method", ["column", "metric"]
    return ours.sort_index(axis=1)


# ---------------------------------------------------------------- the comparison
@dataclass(frozen=True)
class Comparison:
    """A reproduced table: ``frame`` (rows × (column, metric, kind)) and the ``caption`` that goes with it."""

    frame: pd.DataFrame
    caption: str
    profile: str
    templates: tuple[str, ...]

    def _repr_html_(self) -> str:
        table = self.frame.to_html(float_format=lambda v: f"{v:.2f}", na_rep="–")
        return f"<p><strong>{self.caption}</strong></p>\n{table}"


def ours_column(dataset: str, label: str | None) -> str:
    """The column our number for ``dataset`` stands in: mini-world and fabricated numbers are labelled
    (``label``: :func:`replica`)."""
    return f"{dataset} ({label})" if label else dataset


def compare(table: PaperTable | str, records: pd.DataFrame | None, profile: str,
            methods: dict[str, str] | None = None) -> Comparison:
    """The paper's ``table`` beside our numbers from ``records`` (a :func:`hrvlm.evaluation.records.load_table` frame).

    ``profile`` is the profile that produced the records; ``methods`` maps a record's ``method`` to a
    paper row's method id where they differ.  Columns: ``(column, metric, kind)`` with ``kind`` in
    *reported | ours | difference*; the paper's columns first (ours and difference filled only for real
    results, for the same dataset), then, for mini-world or fabricated numbers (:func:`replica`), their
    labelled columns with ours only.
    Rows: the paper's rows, then our methods the paper does not have.
    """
    from hrvlm.profiles import get_profile, profile_names

    table = paper_table(table) if isinstance(table, str) else table
    get_profile(profile)  # an unknown profile is an error here, not a mislabelled table
    records = records if records is not None else pd.DataFrame()
    if not records.empty:
        if "method" in records and methods:
            records = records.assign(method=records["method"].map(lambda m: methods.get(m, m)))
    label = replica(profile, records)
    if not records.empty:
        worlds = {d: is_mini_world(d) for d in records["dataset"].unique()}
        wrong = [d for d, mini in worlds.items() if mini != (label == MINI_WORLD)]
        if wrong:
            mini = tuple(p for p in profile_names() if replica(p) == MINI_WORLD)
            raise ValueError(f"records of {wrong} cannot be the {profile!r} profile's numbers: mini-world datasets "
                             f"belong to mini-world profiles {mini}, real datasets to the others")
    ours = ours_from_records(records, table, profile)

    reported = table.reported()
    method_of = {row["row"]: row["method"] for row in table.rows}
    extra = [m for m in (ours.index if not ours.empty else []) if m not in method_of.values()]
    index = list(reported.index) + extra
    columns, data = [], {}
    labels = {m: spec["label"] for m, spec in table.metrics.items()}
    for column in table.columns:
        for metric in table.metrics:
            rep = reported[(column, metric)].reindex(index)
            mine = pd.Series(math.nan, index=index)
            if label is None and not ours.empty and (column, metric) in ours:
                mine = pd.Series([ours[(column, metric)].get(method_of.get(r, r), math.nan) for r in index], index=index)
            for kind, values in zip(KINDS, (rep, mine, mine - rep)):
                columns.append((column, labels[metric], kind))
                data[columns[-1]] = values
    if label is not None and not ours.empty:
        for column, metric in ours.columns:
            columns.append((ours_column(column, label), labels[metric], "ours"))
            data[columns[-1]] = pd.Series([ours[(column, metric)].get(method_of.get(r, r), math.nan) for r in index],
                                          index=index)
    frame = pd.DataFrame(data, index=pd.Index(index, name="method"))
    frame.columns = pd.MultiIndex.from_tuples(columns, names=["column", "metric", "kind"])
    frame = frame.loc[:, frame.notna().any() | (frame.columns.get_level_values("kind") == "reported")]

    templates = tuple(sorted(records["templates"].dropna().unique())) if "templates" in records else ()
    if label == MINI_WORLD:
        whose = (f"ours: the `{profile}` profile's mini-world replica (under mini-world columns only, "
                 f"never compared number for number with the paper)")
    elif label == FABRICATED:
        whose = (f"ours: the `{profile}` profile on fabricated test data (hrvlm data fabricate; under "
                 f"'(fabricated)' columns only: these numbers are no results and never compared with the paper)")
    else:
        whose = f"ours: the `{profile}` profile"
    caption = (f"{table.caption} Reported: {table.paper}; source: {table.source} "
               f"{whose}; template sets: {', '.join(templates) if templates else 'none evaluated yet'}. "
               f"Difference = ours − reported (percentage points); – = unknown or not run.")
    return Comparison(frame=frame, caption=caption, profile=profile, templates=templates)
