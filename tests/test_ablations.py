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


class _PoincareHead(_Head):
    """Fixed class points, and images that are their own points (``encode`` is the identity)."""

    curvature = 1.0

    def encode(self, images):
        return images


def test_image_order_counts_class_midpoints_nearer_the_origin_than_their_points():
    tree = _tree()  # a, b under p; c under q; p, q under r
    images = torch.tensor([[0.1, 0.0], [0.9, 0.0],  # two images of a
                           [0.3, 0.6], [-0.3, 0.6],  # two of b
                           [-0.5, 0.0]])  # c's only image
    labels = torch.tensor([0, 0, 1, 1, 2])
    table = trained_geometry.image_order(_PoincareHead([[[0, 0]] * 3, [[0, 0]] * 2, [[0, 0]]]), tree, images, labels, 1.0)
    # level 0, each image against its level-1 class's midpoint: p's four images, of which only the one at
    # 0.1 is nearer the origin than p; q's one image is q's point itself, not a pair
    assert table.loc[0, "parent–child pairs"] == 4 and table.loc[0, "parent nearer origin"] == 0.75
    # level 1: p and q, on opposite sides, against the root's midpoint, which lies nearer the origin than both
    assert table.loc[1, "parent–child pairs"] == 2 and table.loc[1, "parent nearer origin"] == 1.0
    assert trained_geometry.ordered_share(table) == pytest.approx(5 / 6)


def test_depth_orders_pools_text_and_image_pairs_per_head():
    tree = _tree()
    leaves, parents = [[0.8, 0.0], [0.0, 0.8], [-0.1, 0.0]], [[0.3, 0.3], [-0.5, 0.0]]
    head = _PoincareHead([leaves, parents, [[0.0, 0.0]]])
    images, labels = torch.tensor([[0.1, 0.0], [0.9, 0.0], [-0.5, 0.0]]), torch.tensor([0, 0, 2])
    table = trained_geometry.depth_orders({"toy": head}, tree, images, labels)
    # text: 2 of 3 leaf pairs and both parent pairs (norm_order's test); images: p's two images about their
    # midpoint (one nearer the origin than it), then p and q about the root's midpoint between them (both)
    assert table.loc["toy", "text pairs"] == 5 and table.loc["toy", "text pairs in order"] == pytest.approx(4 / 5)
    assert table.loc["toy", "image pairs"] == 4 and table.loc["toy", "image pairs in order"] == 0.75
    assert table.loc["toy", "mean text norm, leaves"] == pytest.approx((0.8 + 0.8 + 0.1) / 3)


def test_sweep_reading_applies_the_stated_criterion():
    orders = pd.DataFrame({"text pairs in order": [0.12, 0.16, 0.4, 0.6], "image pairs in order": [0.8, 0.85, 0.9, 0.99]},
                          index=["before", "one", "ten", "hundred"])
    text = trained_geometry.sweep_reading(orders, {"hundred": 100, "one": 1, "ten": 10}, "before", "one")
    assert "12 % before training, 16 % at λ₂ = 1, 40 % at λ₂ = 10, 60 % at λ₂ = 100" in text
    assert "smallest λ₂ that puts most text pairs in order is 100" in text and "85–99 % after" in text
    none = trained_geometry.sweep_reading(orders.drop("hundred"), {"one": 1, "ten": 10}, "before", "one")
    assert "no λ₂ up to 10 puts most text pairs in order, so λ₂ stays at our default" in none
    ours = trained_geometry.sweep_reading(orders, {"hundred": 100, "one": 1, "ten": 10}, "before", "hundred")
    assert "our default λ₂ = 100 puts most text pairs in order already" in ours


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

