"""Ablation variants (chapters 07/08), the trained-embedding measurements (chapter 03) and provenance tables."""
import numpy as np
import pandas as pd
import pytest
import torch

from hrvlm.book import ablations, experiments, provenance, trained_geometry
from hrvlm.hierarchy.trees import tree_from_chains
from hrvlm.methods import build_method
from hrvlm.profiles import get_profile, profile_names


def main_hrvlm(profile):
    return next(v for v in experiments.main_variants(profile) if v.paper == "hrvlm-1tree")


@pytest.mark.parametrize("profile", profile_names())
def test_every_ablation_variant_is_a_valid_setting_and_one_table_shares_one_loop(profile):
    for name, (method, _, rows) in ablations.ABLATIONS.items():
        variants = ablations.variants(name, profile)
        assert len(variants) == len(rows) and len({v.loop for v in variants}) == 1
        assert len({v.settings for v in variants}) == len(variants), name  # each row is a different run
        for variant in variants:
            build_method(method, dict(variant.settings))  # a bad setting raises here
    sizes = ablations.sizes(profile)
    assert sizes["eval_n"] > 0 and set(sizes["ablation_attacks"]) <= {"pgd", "autoattack"}


@pytest.mark.parametrize("profile", profile_names())
def test_the_ablation_references_are_one_run_and_the_main_tables_under_the_books_loop(profile):
    own_loop = not ablations.sizes(profile)["ablation_loop"]  # mini trains its ablations shorter
    runs = {experiments.train_config(v, profile).name(): v for v in experiments.main_variants(profile)}
    main = experiments.train_config(main_hrvlm(profile), profile).name()
    references = set()
    for name in ("components", "perturbation", "hnsa"):
        reference = [v for v in ablations.variants(name, profile) if v.paper == "hrvlm-1tree"]
        assert len(reference) == 1, name
        references.add(experiments.train_config(reference[0], profile).name())
    assert len(references) == 1 and (main in references) == own_loop
    trees = ablations.tree_variants(profile)  # 1 and N trees: the main table's two HRVLM rows
    assert all((experiments.train_config(v, profile).name() in runs) == own_loop for v in (trees[0], trees[-1]))
    qtaft = next(v for v in experiments.main_variants(profile) if v.method == "qtaft")
    names = [experiments.train_config(v, profile).name() for v in ablations.variants("captions", profile)
             if profile != "full" or dict(v.settings).get("captions") != "detailed"]
    assert names.count(experiments.train_config(qtaft, profile).name()) == int(own_loop)  # the profile's quality


def test_tree_variants_count_the_fine_tuning_forest():
    variants = ablations.tree_variants("mini")
    assert [dict(v.settings)["trees"] for v in variants] == list(range(1, experiments.forest_size("mini") + 1))


def test_ablation_attacks_take_the_profiles_unit_and_refuse_unknown_names():
    pgd, aa = ablations.attacks(["pgd", "autoattack"], "mini", eps=4, pgd_steps=20, autoattack_steps=7)
    unit = get_profile("mini").eps_unit
    assert pgd.config()["eps"] == pytest.approx(4 * unit) and pgd.config()["steps"] == 20
    assert aa.config()["steps"] == 7
    with pytest.raises(ValueError, match="unknown ablation attack"):
        ablations.attacks(["fgsm"], "mini")


def test_epoch_minutes_prefers_whole_epochs_over_the_estimate():
    assert ablations.epoch_minutes({"epoch_times_s": [60.0, 120.0], "epoch_time_s_estimate": 1.0}) == 1.5
    assert ablations.epoch_minutes({"epoch_times_s": [], "epoch_time_s_estimate": 30.0}) == 0.5
    assert np.isnan(ablations.epoch_minutes({"epoch_times_s": [], "epoch_time_s_estimate": None}))


class _Head:
    """Fixed class points per level (leaves first)."""

    def __init__(self, points):
        self.points = [torch.as_tensor(p, dtype=torch.float32) for p in points]
        self.depth = len(points) - 1

    def prototypes(self, level):
        return self.points[level]


def _tree():
    # leaves a, b under p; c under q; p and q under the root r
    return tree_from_chains("toy", ["a", "b", "c"], ["a", "b", "c"], [["p", "r"], ["p", "r"], ["q", "r"]], str, depth=2)


def test_norm_order_counts_parents_nearer_the_origin():
    tree = _tree()
    leaves = [[0.8, 0.0], [0.0, 0.8], [-0.1, 0.0]]  # c is nearer the origin than its parent q
    parents = [[0.3, 0.3], [-0.5, 0.0]]
    head = _Head([leaves, parents, [[0.0, 0.0]]])
    table = trained_geometry.norm_order(head, tree, curvature=1.0)
    assert table.loc[0, "parent nearer origin"] == pytest.approx(2 / 3)
    assert table.loc[1, "parent nearer origin"] == 1.0 and table.loc[1, "parent–child pairs"] == 2


def test_disk_layout_keeps_every_points_norm_and_the_tree():
    tree = _tree()
    rng = np.random.default_rng(0)
    head = _Head([rng.normal(size=(3, 8)) * 0.1, rng.normal(size=(2, 8)) * 0.05, rng.normal(size=(1, 8)) * 0.01])
    children, positions, depths = trained_geometry.disk_layout(head, tree)
    for (level, i), xy in positions.items():
        assert np.linalg.norm(xy) == pytest.approx(float(head.points[level][i].norm()), rel=1e-5)
    assert sorted(children[(2, 0)]) == [(1, 0), (1, 1)] and depths[(0, 2)] == 2 and depths[(2, 0)] == 0


def test_provenance_names_the_run_behind_each_record_and_keeps_profiles_apart():
    frame = pd.DataFrame({
        "weights_digest": ["sha256:aaaa", "sha256:bbbb", "sha256:aaaa"], "method": ["hrvlm", "clip", "hrvlm"],
        "dataset": ["mini-heldout", "mini-heldout", "mini-heldout"], "dataset_options_size": ["mini", "mini", "smoke"],
        "split": "test", "n": 10, "level": 0, "seed": 0, "clean_acc": [0.5, 0.4, 0.3], "attack_name": "none"})
    mini = provenance.profile_records(frame, "mini")
    assert len(mini) == 2 and provenance.profile_records(frame, "full").empty
    runs = [{"path": "/x/runs/hrvlm-mini-s0-123", "weights_digest": "sha256:aaaa"}]
    table = provenance.record_table(mini, runs)
    assert set(table["weights"]) == {"hrvlm-mini-s0-123", "not a run (bbbb)"}

