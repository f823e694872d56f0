"""The training protocols side by side: each authors' recipe beside ours, every difference with its reason.

The data is ``hrvlm/resources/protocols.json``: per method the authors' recipe (``authors``), our
method-level choices (``ours``: training attack, logit scale, reductions, templates) and the reason of
each difference (``reasons``), plus the reasons of the one training loop's choices (``loop_reasons``).
The loop's values in the ``ours`` column (optimiser, lr, batch, steps) are read from the profile
(:mod:`hrvlm.profiles`) when the table is rendered, so the table cannot drift from what runs.
"""
from __future__ import annotations

import functools
import json

import pandas as pd

from hrvlm.core.resources import RESOURCES

PROTOCOL_FILE = RESOURCES / "protocols.json"
ITEMS = ("optimiser", "lr", "batch", "epochs", "attack", "logit_scale", "reductions", "templates")
LOOP_ITEMS = {"optimiser": "optimiser", "lr": "lr", "batch": "batch", "epochs": "steps"}


@functools.lru_cache(maxsize=1)
def protocols() -> dict:
    """The protocol data (checked: every method has every item in ``authors`` and the method items in ``ours``)."""
    data = json.loads(PROTOCOL_FILE.read_text())
    for name, entry in data["methods"].items():
        missing = [k for k in ITEMS if k not in entry["authors"]]
        missing += [k for k in ITEMS if k not in LOOP_ITEMS and k not in entry["ours"]]
        if missing:
            raise ValueError(f"{PROTOCOL_FILE.name}: method {name!r} lacks {missing}")
    return data


def loop_values(profile: str = "full") -> dict[str, str]:
    """Our loop's recipe under ``profile`` as the table's cells (optimiser, lr, batch, steps)."""
    from hrvlm.profiles import get_profile

    train = get_profile(profile).train or {}
    optimiser = train.get("optimizer", "adamw")
    return {
        "optimiser": f"{'AdamW' if optimiser == 'adamw' else optimiser.upper()}, wd {train.get('weight_decay', 0):g} "
                     f"(weights only), grad-norm clip {train.get('grad_clip')}",
        "lr": f"{train.get('lr'):g}",
        "batch": str(train.get("batch_size")),
        "epochs": f"{train.get('steps'):,} steps, {train.get('warmup', 0):,} warm-up, cosine",
    }


def protocol_table(profile: str = "full") -> pd.DataFrame:
    """One row per (method, item): ``authors``, ``ours`` (under ``profile``) and ``reason`` — the
    method's own reason, else the loop's for a loop item, empty where the two agree."""
    data, loop = protocols(), loop_values(profile)
    rows = []
    for name, entry in data["methods"].items():
        for item in ITEMS:
            ours = loop[item] if item in LOOP_ITEMS else entry["ours"][item]
            reason = entry.get("reasons", {}).get(item) or (
                data["loop_reasons"].get(LOOP_ITEMS[item], "") if item in LOOP_ITEMS else "")
            rows.append({"method": name, "item": item, "authors": entry["authors"][item], "ours": ours,
                         "reason": reason})
    return pd.DataFrame(rows).set_index(["method", "item"])


def loop_differences() -> pd.DataFrame:
    """The training loop's choices that no (or not every) author made, with their reasons."""
    return pd.DataFrame([{"choice": k, "reason": v} for k, v in protocols()["loop_reasons"].items()]).set_index("choice")
