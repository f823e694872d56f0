"""The figures `hrvlm bench mini` prints come from library functions: checked on a random-init tiny CLIP."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from hrvlm.benchmarks import mini
from hrvlm.results.metrics import binomial_se, majority_baseline
from hrvlm.models.clip import load_clip

N = 24


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HRVLM_CACHE", str(root))
        torch.manual_seed(0)
        clip, _, tokenizer = load_clip("hrvlm-tiny-cnn")
        yield clip, tokenizer, root


def test_choose_eps_takes_the_smallest_radius_under_the_target():
    table = {1: {"average": 0.44}, 2: {"average": 0.201}, 3: {"average": 0.09}, 4: {"average": 0.03}}
    assert mini.choose_eps(table) == 3 and mini.choose_eps(table, target=0.25) == 2
    assert mini.choose_eps(table, target=0.01) is None


def test_leaf_and_level_tables_report_what_was_evaluated(model, monkeypatch):
    clip, tokenizer, root = model
    monkeypatch.setenv("HRVLM_CACHE", str(root))
    (leaf,) = mini.leaf_table(clip, tokenizer, ["mini-heldout"], N, "smoke")
    labels = mini.eval_labels("mini-heldout", N, "smoke")
    assert leaf["n"] == N == len(labels) and leaf["classes"] == 13
    assert leaf["majority"] == majority_baseline(labels) and leaf["se"] == binomial_se(leaf["clean"], N)
    rows = mini.level_table(clip, tokenizer, "mini-finetune", 3 / 255, N, "smoke", steps=2)
    assert [r["level"] for r in rows] == sorted(r["level"] for r in rows) and rows[0]["level"] == 0
    assert all(r["classes"] >= 2 for r in rows) and rows[0]["transfer"] is None  # transfer: superclass attacks
    for r in rows:
        assert 0 <= r["robust"] <= r["clean"] <= 1 and (r["level"] == 0 or 0 <= r["transfer"] <= 1)


def test_calibration_averages_the_sets_and_reuses_a_store(model, monkeypatch, tmp_path):
    clip, tokenizer, root = model
    monkeypatch.setenv("HRVLM_CACHE", str(root))
    store = tmp_path / "records.jsonl"
    names = ["mini-heldout", "mini-colours"]
    first = mini.calibration(clip, tokenizer, names, (1, 8), N, {"size": "smoke"}, steps=2, store=store)
    for row in first.values():
        assert row["average"] == pytest.approx(np.mean([row[n] for n in names]))
    assert first[8]["average"] <= first[1]["average"]
    lines = store.read_text().count("\n")
    assert mini.calibration(clip, tokenizer, names, (1, 8), N, {"size": "smoke"}, steps=2, store=store) == first
    assert store.read_text().count("\n") == lines  # read back, nothing recomputed
