"""Where every number of the book comes from: the runs and records of a profile as provenance tables.

Chapter 09 shows these; each is read from what the library wrote, never re-entered by hand:

* :func:`run_table`: every finished fine-tuning run of a profile (:mod:`hrvlm.models.runs`): its
  configuration hash, method settings, seed, steps, the digests of its starting and final weights,
  the head it is evaluated with, the code and device it ran on;
* :func:`record_table`: every evaluated chunk of a profile in a records store (:mod:`hrvlm.evaluation.records`):
  which weights (and which run produced them), head, dataset, subset, tree, template set, attack
  configuration, seed, code version and device;
* :func:`tree_table`: the class trees those records used, each with the hash of its content;
* :func:`environment_report`: where a chapter itself ran (versions, commit, device, WordNet).

A profile's records are those of its world: mini-world datasets with the profile's ``profile``
dataset option for ``mini``/``smoke``, real datasets for ``full``.
"""
from __future__ import annotations

import json
import platform

import pandas as pd
import torch

import hrvlm
from hrvlm.core.environment import device_name, git_commit, library_versions
from hrvlm.hierarchy import wordnet

DIGEST = 12  # characters of a sha256 shown (the full value is in the run record / records store)


def environment_report() -> dict:
    """Everything a reader needs to know about where a chapter ran."""
    source, path = wordnet.locate()
    return {
        "hrvlm": hrvlm.__version__,
        "commit": git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device_name(),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "wordnet": f"{source}: {path}" if path else source,
        **library_versions(),
    }


def _short(value) -> str | None:
    """The first characters of a digest, without its ``sha256:`` prefix."""
    return value.split(":")[-1][:DIGEST] if isinstance(value, str) else None


def profile_runs(profile: str) -> list[dict]:
    """Records of every finished run of ``profile`` (weights not re-hashed: :func:`hrvlm.models.runs.read_record`
    with ``verify=False``; ``hrvlm train`` and evaluation verify them on load).  A run whose record does
    not verify (edited, or written before records carried a checksum) is left out, with a warning."""
    import warnings

    from hrvlm.models.runs import BadRun, list_runs, read_record, runs_root

    if not runs_root().is_dir():
        return []
    found = []
    for name in list_runs():
        try:
            found.append(read_record(name, verify=False))
        except BadRun as err:
            warnings.warn(f"{err}; not listed", stacklevel=2)
    return [r for r in found if r.get("profile") == profile]


def run_table(runs: list[dict]) -> pd.DataFrame:
    """One row per run: name, method and the settings that differ from the method's defaults, seed, steps,
    batch size, starting weights (tag and digest), final weights digest, head kind, code commit, device."""
    from hrvlm.methods import build_method

    rows = []
    for record in runs:
        method = dict(record["method"])
        name = method.pop("name")
        defaults = build_method(name).settings
        changed = {k: v for k, v in method.items() if defaults.get(k) != v}
        config = record["config"]
        rows.append({
            "run": record["path"].rsplit("/", 1)[-1], "method": name,
            "settings (≠ defaults)": json.dumps(changed, sort_keys=True) if changed else "defaults",
            "seed": record["seed"], "steps": record["steps"], "batch": config["batch_size"],
            "train ε (units)": config["eps"], "start weights": f"{record['pretrained']} ({_short(record.get('pretrained_digest'))})",
            "weights digest": _short(record.get("weights_digest")), "head": record["head"]["kind"],
            "git": _short((record["environment"]["code"] or {}).get("git")),
            "device": record["environment"]["device"], "train s": record["train_time_s"]})
    return pd.DataFrame(rows).set_index("run") if rows else pd.DataFrame()


def profile_records(frame: pd.DataFrame, profile: str) -> pd.DataFrame:
    """The rows of a records frame (:func:`hrvlm.evaluation.records.load_table`) that belong to ``profile``'s world:
    its mini world, or real datasets read from a fabricated root or not, as the profile's are."""
    from hrvlm.profiles import get_profile
    from hrvlm.results.tables import MINI_WORLD, is_mini_world, replica

    if frame.empty:
        return frame
    mini = frame["dataset"].map(is_mini_world)
    if replica(profile) == MINI_WORLD:
        size = frame.get("dataset_options_size", pd.Series(None, index=frame.index))
        return frame[mini & (size == get_profile(profile).base_options.get("size"))]
    fabricated = frame.get("fabricated", pd.Series(False, index=frame.index)).fillna(False).astype(bool)
    return frame[~mini & (fabricated == bool(get_profile(profile).fabricated_root))]


def record_table(frame: pd.DataFrame, runs: list[dict]) -> pd.DataFrame:
    """One row per record: the run whose weights were evaluated (by weights digest; ``pretrained`` when no
    run has them), head, dataset, split, n, subset hash, level, tree, templates (with hash), attack
    (name, ε in pixel units, steps), seed, accuracies, code commit and device."""
    if frame.empty:
        return pd.DataFrame()
    by_digest = {r.get("weights_digest"): r["path"].rsplit("/", 1)[-1] for r in runs}

    def column(name):
        return frame[name] if name in frame else pd.Series(None, index=frame.index)

    table = pd.DataFrame({
        "weights": frame["weights_digest"].map(lambda d: by_digest.get(d, f"not a run ({_short(d)})")),
        "method": frame["method"], "head": column("head_kind"), "dataset": frame["dataset"], "split": frame["split"],
        "n": frame["n"], "subset": column("subset_ids_hash"), "level": frame["level"], "tree": column("tree"),
        "templates": [f"{t} ({h})" if isinstance(t, str) else None
                      for t, h in zip(column("templates"), column("templates_hash"))],
        "attack": column("attack_name"), "ε": column("attack_eps"), "steps": column("attack_steps"),
        "seed": frame["seed"], "clean": 100 * frame["clean_acc"], "robust": 100 * column("robust_acc"),
        "git": column("code_git").map(_short), "device": column("device")})
    return table.sort_values(["weights", "dataset", "level", "attack"], na_position="first").reset_index(drop=True)


def tree_table(datasets, depth: int = 5) -> pd.DataFrame:
    """Every tree of each dataset's forest (depth ``depth``): classes per level and the hash of the tree's
    content (its JSON: nodes, names and parents), which changes whenever the tree does; records name
    their tree in ``tree`` (level > 0) and HRVLM runs use the fine-tuning set's first ``trees``."""
    from hrvlm.data import get_spec
    from hrvlm.hierarchy.trees import forest_for_dataset
    from hrvlm.core.storage import config_hash

    rows = []
    for dataset in dict.fromkeys(datasets):
        hierarchy = get_spec(dataset).hierarchy
        for tree in ([] if hierarchy is None else forest_for_dataset(hierarchy, depth=depth)):
            rows.append({"dataset": dataset, "tree": tree.name,
                         "classes per level": "/".join(str(tree.num_classes(level)) for level in range(tree.depth + 1)),
                         "content hash": config_hash(tree.to_json(), length=16)})
    return pd.DataFrame(rows)
