"""The mini world: renderer, vocabulary, captions and datasets."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from hrvlm.miniworld import captions
from hrvlm.miniworld.datasets import (MiniWorldDataset, dataset_names, definition, split_size,
                                      zeroshot_names)
from hrvlm.miniworld.render import (Factors, Style, colour_names, item_factors, render_item, shape_mask,
                                    shape_names, world)
from hrvlm.hierarchy.wordnet import synset

CLASSNAMES = __import__("hrvlm.data.registry", fromlist=["CLASSNAME_DIR"]).CLASSNAME_DIR


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HRVLM_CACHE", str(tmp_path / "cache"))


def _ancestors(name: str) -> set[str]:
    return {s.name() for path in synset(name).hypernym_paths() for s in path}


_ORDINAL = ["1st", "2nd", "3rd"] + [f"{k}th" for k in range(4, 21)] + ["21st", "22nd", "23rd", "24th", "25th", "26th"]
# name → (synset, a keyword of the intended sense's gloss): many names have several senses (sphere.n.01 is
# "a walk of life", one.n.02 "a single person or thing"), so each class is checked against its gloss.
SENSES = {
    **{f"letter {c}": (s, f"{_ORDINAL[k]} letter of the Roman alphabet") for k, (c, s) in enumerate(zip(
        "abcdefghijklmnopqrstuvwxyz", "a.n.06 b.n.06 c.n.11 d.n.03 e.n.05 f.n.04 g.n.09 h.n.04 i.n.03 j.n.02 "
        "k.n.06 l.n.04 m.n.06 n.n.05 o.n.02 p.n.02 q.n.01 r.n.03 s.n.05 t.n.04 u.n.03 v.n.04 w.n.04 x.n.02 "
        "y.n.02 z.n.02".split()))},
    "zero": ("zero.n.02", "added to another number yields the same number"),
    "one": ("one.n.01", "smallest whole number"), "two": ("two.n.01", "sum of one and one or"),
    "three": ("three.n.01", "sum of one and one and one"), "four": ("four.n.01", "sum of three and one"),
    "five": ("five.n.01", "sum of four and one"), "six": ("six.n.01", "sum of five and one"),
    "seven": ("seven.n.01", "sum of six and one"), "eight": ("eight.n.01", "sum of seven and one"),
    "nine": ("nine.n.01", "sum of eight and one"),
    "question mark": ("question_mark.n.01", "(?)"), "exclamation mark": ("exclamation_mark.n.01", "(!)"),
    "comma": ("comma.n.01", "punctuation mark (,)"), "semicolon": ("semicolon.n.01", "(`;')"),
    "parenthesis": ("parenthesis.n.01", "enclose textual material"), "slash": ("solidus.n.02", "(/)"),
    "ampersand": ("ampersand.n.01", "(&)"), "plus sign": ("plus_sign.n.01", "operation of addition"),
    "minus sign": ("minus_sign.n.01", "operation of subtraction"),
    "equal sign": ("equal_sign.n.01", "either side are equal"), "percent sign": ("percent_sign.n.01", "(`%')"),
    "asterisk": ("asterisk.n.01", "star-shaped character"), "dollar sign": ("dollar_mark.n.02", "mark ($)"),
    "check mark": ("check_mark.n.01", "noted or completed"), "arrow": ("arrow.n.01", "indicate a direction"),
    "caret": ("caret.n.01", "where something is to be inserted"), "tilde": ("tilde.n.01", "diacritical mark (~)"),
    "circle": ("circle.n.01", "two axes are of equal length"), "ellipse": ("ellipse.n.01", "closed plane curve"),
    "semicircle": ("semicircle.n.01", "half a circle"), "crescent": ("crescent.n.01", "shape of the moon"),
    "triangle": ("triangle.n.01", "three-sided polygon"), "square": ("square.n.01", "four equal sides"),
    "rectangle": ("rectangle.n.01", "four right angles"), "rhombus": ("rhombus.n.01", "four equal sides"),
    "trapezoid": ("trapezoid.n.01", "two parallel sides"),
    "parallelogram": ("parallelogram.n.01", "opposite sides are both parallel"),
    "pentagon": ("pentagon.n.03", "five-sided polygon"), "hexagon": ("hexagon.n.01", "six-sided polygon"),
    "octagon": ("octagon.n.01", "eight-sided polygon"), "star": ("star.n.05", "5 or more points"),
    "heart": ("heart.n.07", "curving inward at the top"), "spiral": ("spiral.n.01", "plane curve traced by a point"),
}


def test_every_class_is_the_intended_wordnet_sense():
    assert set(SENSES) == set(world()["shapes"]) and len(SENSES) >= 64
    for name, (synset_name, keyword) in SENSES.items():
        assert world()["shapes"][name]["synset"] == synset_name, name
        assert keyword in synset(synset_name).definition(), (name, synset(synset_name).definition())
        assert "glyph" in world()["shapes"][name] or "shape.n.02" in _ancestors(synset_name), name


def test_every_colour_is_a_wordnet_colour():
    for name, entry in world()["colours"].items():
        assert "color.n.01" in _ancestors(entry["synset"]), name
        assert name in synset(entry["synset"]).lemma_names(), name
    # white.n.01 is a person: the colour sense must be used
    assert world()["colours"]["white"]["synset"] == "white.n.02"


def test_square_has_two_hypernym_paths():
    paths = [[s.name() for s in p] for p in synset(world()["shapes"]["square"]["synset"]).hypernym_paths()]
    assert any("regular_polygon.n.01" in p for p in paths) and any("rectangle.n.01" in p for p in paths)


@pytest.mark.parametrize("name", dataset_names())
def test_classname_files_match_the_world(name):
    meta = json.loads((CLASSNAMES / f"{name}.json").read_text())
    key = "colours" if definition(name)["labels"] == "colour" else "shapes"
    assert meta["synsets"] == [world()[key][c]["synset"] for c in meta["classnames"]]
    assert len(set(meta["classnames"])) == len(meta["classnames"]) >= 2


def test_glyphs_use_the_shipped_font_and_render_identically_in_other_processes():
    import hashlib
    import subprocess
    import sys

    from hrvlm.core.resources import RESOURCES
    from hrvlm.miniworld.render import font_path, font_sha256

    # the package's own copy (matplotlib 3.11's DejaVu Sans Bold, licence beside it): no plotting library or
    # system font decides the world's pixels
    assert font_path().parent == RESOURCES / "fonts" and (font_path().parent / "LICENSE_DEJAVU").is_file()
    assert font_sha256() == "b184b89e3c1075f22f6b71575b6fc20d4972b3cfd3b23322ca6fd596dcaef167"
    items = [("mini-finetune", "test", 0), ("mini-finetune", "train", 123), ("mini-heldout", "test", 7),
             ("mini-outline", "test", 30), ("mini-clutter", "test", 40), ("mini-lowres", "test", 9),
             ("mini-colours", "test", 3), ("mini-pretrain", "train", 777)]
    code = ("import hashlib, sys; from hrvlm.miniworld.datasets import MiniWorldDataset as D;"
            f"print([hashlib.sha256(D(d, s, size='mini').render(i)[0].tobytes()).hexdigest() for d, s, i in {items!r}])")
    here = str([hashlib.sha256(MiniWorldDataset(d, s, size="mini").render(i)[0].tobytes()).hexdigest()
                for d, s, i in items])
    for seed in ("0", "3"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={**__import__("os").environ, "PYTHONHASHSEED": seed}).stdout.strip()
        assert out == here


def test_rendering_is_deterministic_and_seed_dependent():
    style = Style(shapes=tuple(shape_names()))
    a, fa = render_item(style, seed=5, index=17, label=3)
    b, fb = render_item(style, seed=5, index=17, label=3)
    c, _ = render_item(style, seed=6, index=17, label=3)
    assert a.dtype == np.uint8 and a.shape == (32, 32, 3)
    assert np.array_equal(a, b) and fa == fb
    assert not np.array_equal(a, c)
    assert item_factors(style, 5, 17, 3) == fa


def test_items_do_not_depend_on_order():
    ds = MiniWorldDataset("mini-clutter", "test", size="smoke")
    late = ds[40][0]
    for i in range(5):
        ds[i]
    assert (MiniWorldDataset("mini-clutter", "test", size="smoke")[40][0] == late).all()


def test_every_shape_renders_distinctly():
    base = Factors("circle", "red", "large", 0.4, 0.5, 0.5, "center", 0.0, True, "plain", "white", 32)
    masks = {s: shape_mask(replace(base, shape=s), 32) > 0.5 for s in shape_names()}
    for s, m in masks.items():
        assert m.sum() > 15, f"{s} is too small to see"
        for t, n in masks.items():
            if s < t:
                iou = (m & n).sum() / (m | n).sum()
                assert iou < 0.9, f"{s} and {t} look alike (IoU {iou:.2f})"


def test_factors_vary_across_the_corpus():
    ds = MiniWorldDataset("mini-pretrain", "train", n=300)
    fs = [ds.factors(i) for i in range(len(ds))]
    assert {f.shape for f in fs} == set(shape_names())
    assert {f.colour for f in fs} == set(colour_names())
    assert {f.background for f in fs} == set(world()["backgrounds"])
    assert {f.size for f in fs} == {"small", "medium", "large"} and {f.filled for f in fs} == {True, False}
    assert len({f.position for f in fs}) >= 6 and len({round(f.rotation) for f in fs}) > 40
    assert all(f.colour != f.bg_colour for f in fs)
    assert any(f.resolution < 32 for f in fs)


def test_the_finetuning_set_is_turned_further_than_the_web_corpus():
    # The fine-tuning set's distribution shift (its clean top-1 has headroom below the corpus'): ±45°
    # where the corpus is drawn at the world's ±30°.
    corpus = [abs(MiniWorldDataset("mini-pretrain", "train", n=400).factors(i).rotation) for i in range(400)]
    finetune = [abs(MiniWorldDataset("mini-finetune", "train", n=400).factors(i).rotation) for i in range(400)]
    assert max(corpus) <= world()["rotation_max"] < max(finetune) <= 45
    assert sum(r > world()["rotation_max"] for r in finetune) > 400 * 0.2  # a third expected
    with pytest.raises(ValueError, match="rotation_max"):
        Style(shapes=("letter a",), rotation_max=200)


def test_render_cache_keys_on_the_dataset_itself_only(monkeypatch):
    from hrvlm.miniworld import datasets, render

    corpus, finetune = MiniWorldDataset("mini-pretrain", "train", n=8), MiniWorldDataset("mini-finetune", "test", n=8)
    before = corpus.cache_key(), finetune.cache_key()
    changed = json.loads(json.dumps(world()))
    changed["datasets"]["mini-finetune"]["seed"] += 1
    for module in (render, datasets):
        monkeypatch.setattr(module, "world", lambda: changed)
    assert corpus.cache_key() == before[0] and finetune.cache_key() != before[1]


@pytest.mark.parametrize("name", dataset_names())
def test_documented_sizes_and_balanced_labels(name):
    for split, sizes in definition(name)["splits"].items():
        assert split_size(name, split, "mini") >= 1000 and split_size(name, split, "smoke") <= 4096
        ds = MiniWorldDataset(name, split, size="smoke")
        assert len(ds) == sizes["smoke"]
        image, label = ds[len(ds) - 1]
        assert image.shape == (3, 32, 32) and 0 <= image.min() and image.max() <= 1
        counts = np.bincount([ds.label(i) for i in range(len(ds))], minlength=len(ds.classnames))
        assert counts.max() - counts.min() <= 1


def test_splits_differ_and_test_items_are_fixed():
    train = MiniWorldDataset("mini-finetune", "train", size="smoke")
    test = MiniWorldDataset("mini-finetune", "test", size="smoke")
    assert not any(np.array_equal(train.image_uint8(i), test.image_uint8(i)) for i in range(10))
    # a larger profile extends the smaller one: item i is the same
    assert np.array_equal(MiniWorldDataset("mini-finetune", "test", size="mini").image_uint8(7),
                          test.image_uint8(7))


def test_world_tree_passes_the_depth_rules():
    from hrvlm.hierarchy.trees import depth_rules, forest_for_dataset

    forest = forest_for_dataset("mini-finetune")
    first = forest[0]
    assert first.name == "mini-finetune/mini-world-curated" and first.provenance["source"].startswith("hrvlm, curated")
    assert depth_rules(first) == []
    assert [first.num_classes(level) for level in range(1, 4)] == [18, 8, 4] and first.n_leaves >= 48
    assert any("wordnet" in t.name for t in forest)  # WordNet trees stay in the forest
    assert depth_rules(forest_for_dataset("mini-heldout")[0]) == []  # the zero-shot sets: the same tree, restricted
    assert depth_rules(forest[1])  # WordNet's own paths mix depths: why the curated tree exists


def test_finetune_forest_has_five_distinct_trees_two_of_them_further_curated_views():
    """Issue 11 trains HRVLM on 5 trees; WordNet gives the mini world 2, so two further curated views
    (how the shape is drawn, what the symbol is for) complete the forest after the WordNet trees."""
    from hrvlm.hierarchy.trees import (TREE_DIR, dataset_tree_files, depth_rules, forest_for_dataset,
                                 read_tree_file)

    forest = forest_for_dataset("mini-finetune")
    assert len(forest) == 5 and len({tree.partitions() for tree in forest}) == 5
    assert [t.name.split("/")[1] for t in forest] == ["mini-world-curated", "wordnet-0", "wordnet-1",
                                                      "mini-world-function", "mini-world-strokes"]
    files = {p.name: read_tree_file(p) for p in dataset_tree_files("mini-finetune")}
    assert [n for n, spec in files.items() if spec.get("primary")] == [world()["tree"]]  # captions' tree only
    for name in ("mini-world-function.json", "mini-world-strokes.json"):
        spec = files[name]
        assert spec["leaves"] == files["mini-world.json"]["leaves"] and spec["datasets"] == files["mini-world.json"]["datasets"]
        assert spec["provenance"]["source"].startswith("hrvlm, curated")
    for tree in forest.trees[3:]:
        assert depth_rules(tree) == [] and tree.depth == 5 and tree.num_classes(5) == 1
    fresh = forest_for_dataset.__wrapped__("mini-finetune")  # built again, not the cached forest
    assert [t.content_hash() for t in fresh] == [t.content_hash() for t in forest]
    assert captions.world_tree() == read_tree_file(TREE_DIR / "mini-world.json")
    assert captions.superclasses("letter b")[-1] == "character"  # pretraining captions: the primary tree's names


def test_dataset_styles_hold():
    outline = MiniWorldDataset("mini-outline", "test", n=40)
    assert not any(outline.factors(i).filled for i in range(40))
    clutter = MiniWorldDataset("mini-clutter", "test", n=40)
    assert all(clutter.factors(i).background != "plain" for i in range(40))
    held = MiniWorldDataset("mini-heldout", "test", n=10).classnames
    assert not set(held) & set(MiniWorldDataset("mini-finetune", "test", n=10).classnames)
    colours = MiniWorldDataset("mini-colours", "test", n=40)
    for i in range(40):
        f = colours.factors(i)
        assert colours.classnames[colours.label(i)] == f.colour and f.bg_colour in ("white", "gray", "black")


def test_lowres_images_are_blocky():
    ds = MiniWorldDataset("mini-lowres", "test", n=20)
    for i in range(20):
        img, f = ds.render(i)
        assert f.resolution in (8, 12)
        if f.resolution == 8:  # nearest-neighbour 4x upsampling: every 4x4 block is constant
            assert (img == np.repeat(np.repeat(img[::4, ::4], 4, 0), 4, 1)).all()


def test_other_resolutions():
    ds = MiniWorldDataset("mini-finetune", "test", n=4, image_size=64)
    assert ds[0][0].shape == (3, 64, 64)
    with pytest.raises(ValueError, match="image_size"):
        MiniWorldDataset("mini-finetune", "test", n=4, image_size=4)


def test_caption_qualities():
    ds = MiniWorldDataset("mini-finetune", "test", n=12)
    f = ds.factors(5)
    assert ds.caption(5, "name") == f.shape
    assert ds.caption(5, "template") == f"a photo of a {f.shape}."
    detailed = ds.caption(5, "detailed")
    for word in (f.shape, f.colour, f.size, f.bg_colour, f.position, "filled"):
        assert word in detailed
    assert synset(world()["shapes"][f.shape]["synset"]).definition() in ds.caption(5, "gloss")
    assert captions.caption(replace(f, filled=False, background="stripes"), "detailed").count("outlined, on a") == 1
    image, label, text = ds.with_captions("detailed")[5]
    assert label == ds.label(5) and text == detailed and image.shape == (3, 32, 32)
    with pytest.raises(ValueError, match="quality"):
        ds.caption(0, "poetic")


def test_pretraining_captions_mix_qualities():
    from hrvlm.miniworld.captions import superclasses

    ds = MiniWorldDataset("mini-pretrain", "train", n=400)
    texts = ds.captions("pretrain")
    assert texts == MiniWorldDataset("mini-pretrain", "train", n=400).captions("pretrain")
    assert len(set(texts)) > 200
    assert sum(t.endswith(" shape") for t in texts) > 5 and sum(":" in t for t in texts) > 5

    def names_it(f, text):
        return f.shape in text or f.colour in text or any(name in text for name in superclasses(f.shape))

    assert all(names_it(ds.factors(i), t) for i, t in enumerate(texts))
    # the curated tree's names, nearest first, root excluded
    assert superclasses("letter b") == ("round consonant", "consonant", "letter", "character")
    assert superclasses("square") == ("quadrilateral", "polygon", "plane figure", "figure")
    said = [next((level for level, n in enumerate(superclasses(ds.factors(i).shape)) if t.endswith(f" {n}.")), None)
            for i, t in enumerate(texts)]
    assert {level for level in said if level is not None} == {0, 1, 2, 3}  # superclass-only captions, every level
    with pytest.raises(KeyError, match="not a leaf"):
        superclasses("blob")


def test_materialized_cache_is_reused_and_a_corrupt_file_rebuilt(tmp_path):
    ds = MiniWorldDataset("mini-heldout", "test", n=30).materialize()
    files = list((tmp_path / "cache" / "miniworld").glob("*.npz"))
    assert len(files) == 1
    again = MiniWorldDataset("mini-heldout", "test", n=30).materialize()
    assert np.array_equal(again.tensors()[0], ds.tensors()[0])
    files[0].write_bytes(files[0].read_bytes()[:200])  # truncated
    rebuilt = MiniWorldDataset("mini-heldout", "test", n=30).materialize()
    assert np.array_equal(rebuilt.tensors()[0], ds.tensors()[0])
    assert np.array_equal(rebuilt.image_uint8(3), rebuilt.render(3)[0])


def test_bad_inputs_are_clear_errors():
    with pytest.raises(KeyError, match="known"):
        MiniWorldDataset("mini-nothing")
    with pytest.raises(ValueError, match="split"):
        MiniWorldDataset("mini-heldout", "train")
    with pytest.raises(ValueError, match="unknown size .huge."):
        MiniWorldDataset("mini-heldout", "test", size="huge")
    with pytest.raises(ValueError, match="unknown shape"):
        Style(shapes=("blob",))
    with pytest.raises(IndexError):
        MiniWorldDataset("mini-heldout", "test", n=5)[5]


def test_registry_entries():
    from hrvlm.data.registry import get_dataset, get_spec

    assert zeroshot_names()[0] == "mini-finetune" and len(zeroshot_names()) >= 6
    for name in dataset_names():
        spec = get_spec(name)
        assert spec.world == "mini" and spec.hierarchy == name and spec.name.startswith("mini-")
        assert list(spec.classnames) == MiniWorldDataset(name, spec.splits[0], n=1).classnames
    ds = get_dataset("mini-colours", "test", size="smoke")
    assert len(ds) == split_size("mini-colours", "test", "smoke")
