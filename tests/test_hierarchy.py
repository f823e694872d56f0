"""hrvlm.hierarchy.trees against the real WordNet 3.0: trees, forests, tree files, HNSA negatives, JSON."""
import json

import numpy as np
import pytest

from hrvlm.data.registry import classname_file
from hrvlm.hierarchy import draw, trees as H
from hrvlm.hierarchy.wordnet import get_wordnet

SHAPES = ["circle.n.01", "ellipse.n.01", "semicircle.n.01", "crescent.n.01", "triangle.n.01", "square.n.01",
          "rectangle.n.01", "rhombus.n.01", "trapezoid.n.01", "parallelogram.n.01", "pentagon.n.03", "hexagon.n.01",
          "octagon.n.01", "star.n.05", "heart.n.07", "spiral.n.01"]
COLOURS = ["red.n.01", "green.n.01", "blue.n.01", "yellow.n.01", "orange.n.02", "purple.n.01", "brown.n.01",
           "pink.n.01", "black.n.01", "gray.n.01"]


@pytest.fixture(scope="module")
def wn():
    return get_wordnet()


@pytest.fixture(scope="module")
def cifar10(wn):
    return H.forest_for_dataset("cifar10")


def chain_ids(tree, leaf):
    return [tree.nodes[l][tree.ancestor[l, leaf]] for l in range(tree.depth + 1)]


def test_cifar10_automobile_and_cat_ancestors(cifar10):
    tree = cifar10[0]
    auto = chain_ids(tree, tree.leaves.index("automobile"))
    assert auto[1:3] == ["motor_vehicle.n.01", "self-propelled_vehicle.n.01"]
    assert H.dataset_leaves("cifar10")[2][1] == "car.n.01"
    cat = chain_ids(tree, tree.leaves.index("cat"))
    assert cat[1:3] == ["feline.n.01", "carnivore.n.01"]
    assert tree.names[1][tree.ancestor[1, tree.leaves.index("automobile")]] == "motor vehicle"


def test_square_gives_two_distinct_trees(wn):
    forest = H.build_forest(SHAPES, depth=5, max_trees=5)
    assert len(forest) == 2
    sq = SHAPES.index("square.n.01")
    parents = {t.nodes[1][t.ancestor[1, sq]] for t in forest}
    assert parents == {"rectangle.n.01", "regular_polygon.n.01"}
    assert forest[0].partitions() != forest[1].partitions()


@pytest.mark.parametrize("leaves", [SHAPES, COLOURS])
def test_every_level_partitions_the_leaves_and_parents_are_unique(wn, leaves):
    for tree in H.build_forest(leaves, depth=5):
        assert tree.ancestor.shape == (6, len(leaves))
        assert np.array_equal(tree.ancestor[0], np.arange(len(leaves)))
        for level in range(tree.depth + 1):
            # one ancestor per leaf per level, and every node covers at least one leaf
            assert sorted(set(tree.ancestor[level])) == list(range(len(tree.nodes[level])))
            if level < tree.depth:
                p = tree.parents(level)
                assert np.array_equal(p[tree.ancestor[level]], tree.ancestor[level + 1])


def test_all_real_datasets_build_with_counts(wn):
    counts = {"imagenet": 1000, "tinyimagenet": 200, "cifar10": 10, "cifar100": 100, "stl10": 10, "caltech101": 101,
              "caltech256": 257, "oxford_pets": 37, "flowers102": 102, "fgvc_aircraft": 100, "stanford_cars": 196,
              "sun397": 397, "food101": 101, "eurosat": 10, "dtd": 47, "pcam": 2}
    assert set(counts) == set(H.REAL_DATASETS)
    for name, n in counts.items():
        forest = H.forest_for_dataset(name)
        assert len(forest.leaves) == n and 1 <= len(forest) <= 5, name
        assert all(t.depth == 5 for t in forest)
        assert len({t.partitions() for t in forest}) == len(forest), f"{name}: duplicate trees"


def test_tinyimagenet_wnids_are_imagenet_classes():
    tiny, full = classname_file("tinyimagenet"), H.classname_file("imagenet")
    assert len(set(tiny["wnids"])) == 200 and set(tiny["wnids"]) <= set(full["wnids"])
    assert tiny["wnids"] == sorted(tiny["wnids"])


def test_hnsa_negatives_never_parent_child_or_self(cifar10, wn):
    for tree in list(cifar10) + list(H.forest_for_dataset("cifar100")):
        for level in range(tree.depth + 1):
            neg = H.hnsa_negatives(tree, level)
            n = len(tree.nodes[level])
            assert neg.lower.shape == (n, len(tree.nodes[level - 1]) if level else 0)
            assert neg.upper.shape == (n, len(tree.nodes[level + 1]) if level < tree.depth else 0)
            for c in range(n):
                lower, upper = neg.of(c)
                if level < tree.depth:
                    assert tree.parents(level)[c] not in upper
                    assert tree.nodes[level][c] not in {tree.nodes[level + 1][k] for k in upper}
                if level > 0:
                    assert not np.any(tree.parents(level - 1)[lower] == c)
    # a concrete case: at level 1 of CIFAR-100's superclass tree, 'fish' has the 95 non-fish leaves as negatives
    tree = H.forest_for_dataset("cifar100")[-1]
    fish = tree.nodes[1].index("fish")
    assert H.hnsa_negatives(tree, 1).lower[fish].sum() == 95


def test_level_labels_on_arrays_and_tensors(cifar10):
    import torch

    tree = cifar10[-1]  # animals / vehicles
    y = np.array([0, 1, 3])  # airplane, automobile, cat
    labels = tree.level_labels(y, 1)
    assert [tree.names[1][i] for i in labels] == ["vehicle", "vehicle", "animal"]
    assert torch.equal(tree.level_labels(torch.tensor(y), 1), torch.as_tensor(labels))
    with pytest.raises(IndexError, match="levels 0..5"):
        tree.level_labels(y, 6)


def test_prompts_use_readable_lemmas(cifar10):
    tree = cifar10[0]
    prompts = tree.prompts(1, "a photo of a {c}.")
    assert "a photo of a motor vehicle." in prompts and len(prompts) == len(tree.nodes[1])
    assert tree.prompts(0)[tree.leaves.index("automobile")] == "a photo of a automobile."


def test_json_round_trip_is_exact(cifar10, tmp_path):
    text = json.dumps(cifar10.to_json())
    again = H.Forest.from_json(json.loads(text))
    assert again == cifar10 and json.dumps(again.to_json()) == text
    assert H.Tree.from_json(cifar10[0].to_json()) == cifar10[0]


def _write(tmp_path, parents, leaves=("a", "b", "c"), raw=None):
    path = tmp_path / "tree.json"
    if raw is None:
        raw = json.dumps({"format": "hrvlm-tree/1", "name": "t", "provenance": {"source": "test"},
                          "leaves": list(leaves), "parents": parents})
    path.write_text(raw)
    return path


def test_tree_file_loads_and_levels(tmp_path):
    path = _write(tmp_path, {"a": "x", "b": "x", "c": "y", "x": "root", "y": "root"})
    tree = H.load_tree_file(path, depth=3, leaves=["c", "b", "a"])
    assert tree.leaves == ["c", "b", "a"]
    assert [chain_ids(tree, i) for i in range(3)] == [["c", "y", "root", "root"], ["b", "x", "root", "root"],
                                                       ["a", "x", "root", "root"]]


def test_malformed_tree_files_name_the_problem(tmp_path):
    with pytest.raises(H.HierarchyError, match="cycle: x → y → x"):
        H.load_tree_file(_write(tmp_path, {"a": "x", "b": "x", "c": "x", "x": "y", "y": "x"}))
    with pytest.raises(H.HierarchyError, match="missing leaf 'd'"):
        H.load_tree_file(_write(tmp_path, {"a": "x", "b": "x", "c": "x"}), leaves=["a", "b", "c", "d"])
    with pytest.raises(H.HierarchyError, match="leaf 'c' has no parent"):
        H.load_tree_file(_write(tmp_path, {"a": "x", "b": "x"}))
    raw = ('{"format": "hrvlm-tree/1", "name": "t", "leaves": ["a", "b"], '
           '"parents": {"a": "x", "b": "x", "a": "y"}}')
    with pytest.raises(H.HierarchyError, match="two parents in one tree"):
        H.load_tree_file(_write(tmp_path, None, raw=raw))
    with pytest.raises(H.HierarchyError, match="exactly one parent"):
        H.load_tree_file(_write(tmp_path, {"a": ["x", "y"], "b": "x", "c": "x"}))
    with pytest.raises(H.HierarchyError, match="leaf 'a' has a child"):
        H.load_tree_file(_write(tmp_path, {"a": "x", "b": "a", "c": "x"}))
    with pytest.raises(H.HierarchyError, match="not a class of the dataset"):
        H.load_tree_file(_write(tmp_path, {"a": "x", "b": "x", "c": "x"}), leaves=["a", "b"])


def test_levelled_tree_with_two_parents_is_rejected():
    with pytest.raises(H.HierarchyError, match="has two parents at level 2"):
        H.Tree("bad", 2, [["a", "b"], ["x"], ["r", "s"]], [["a", "b"], ["x"], ["r", "s"]],
               np.array([[0, 1], [0, 0], [0, 1]]))


def test_uncovered_leaves_stand_for_themselves(wn):
    forest = H.build_forest(["cat.n.01", None, "dog.n.01"], depth=3, leaf_ids=["cat", "thing", "dog"],
                            leaf_names=["cat", "thing", "dog"])
    tree = forest[0]
    assert chain_ids(tree, 1) == ["thing"] * 4
    assert tree.nodes[3][tree.ancestor[3, 0]] != "thing"


def test_short_chains_repeat_the_root(wn):
    # the colours' common root is color.n.01, two steps above red: levels 2..5 repeat it
    tree = H.build_forest(COLOURS)[0]
    red = chain_ids(tree, COLOURS.index("red.n.01"))
    assert red[1:] == ["chromatic_color.n.01"] + ["color.n.01"] * 4


def test_synset_tables_cover_every_class_and_resolve(wn):
    for name in H.REAL_DATASETS:
        table = H.synset_table(name)
        if table is None:
            assert "wnids" in classname_file(name)
            continue
        classes = classname_file(name)["classnames"]
        assert set(table["synsets"]) == set(classes), name
        for c, s in table["synsets"].items():
            if s is None:
                assert table["reasons"].get(c), f"{name}: {c!r} is unmapped without a reason"
            else:
                assert wn.synset(s).name() == s, f"{name}: {s} is not canonical"


def test_coverage_table(wn):
    table = H.coverage_table(["cifar10", "dtd"])
    assert table.loc["cifar10", "coverage"] == 1.0 and table.loc["dtd", "coverage"] == 0.0
    assert table.loc["dtd", "file_trees"] == 1


def test_draw_forest_small(wn):
    import matplotlib

    matplotlib.use("Agg")
    fig = draw.draw_forest(H.build_forest(SHAPES))
    assert len(fig.axes) == 2
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert {"circle", "polygon"} <= texts


def test_forests_are_identical_under_every_hash_seed():
    """NLTK keeps hypernym pointers in sets; seed 6 flipped square's two parents (issue 9)."""
    import os
    import subprocess
    import sys

    code = ("from hrvlm.hierarchy.trees import forest_for_dataset as f; from hrvlm.core.storage import config_hash;"
            "print(*(config_hash(f(d).to_json()) for d in ('mini-finetune', 'cifar100', 'imagenet')))")
    outputs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONHASHSEED": str(seed)}).stdout for seed in (0, 1, 6, 42)}
    assert len(outputs) == 1, outputs


def test_content_hash_follows_the_content(wn):
    forest = H.build_forest(SHAPES, depth=5, max_trees=5)
    a, b = forest[0], forest[1]
    assert a.content_hash() != b.content_hash() and len(a.content_hash()) == 16
    assert H.Tree.from_json(a.to_json()).content_hash() == a.content_hash()


def test_depth_rules_and_restricted_multi_dataset_specs():
    spec = {"format": H.TREE_FORMAT, "name": "t", "datasets": ["x"], "leaves": ["a", "b", "c", "d"],
            "parents": {"a": "p", "b": "p", "c": "q", "d": "q", "p": "r", "q": "r"}}
    small = H.restrict_spec(spec, ["a", "c"])
    assert small["leaves"] == ["a", "c"] and small["parents"] == {"a": "p", "c": "q", "p": "r", "q": "r"}
    tree = H.tree_from_spec(spec, depth=2)
    problems = H.depth_rules(tree, min_levels=1, min_classes=2)
    assert problems == []
    assert "need 2" in H.depth_rules(tree, min_levels=2, min_classes=2)[0]
    padded = H.tree_from_spec(spec, depth=3)  # the root repeats at levels 2 and 3
    assert any("'r' is at levels 2 and 3" in p for p in H.depth_rules(padded, min_levels=1, min_classes=2))
