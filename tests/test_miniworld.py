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
from hrvlm.wordnet import synset

CLASSNAMES = __import__("hrvlm.data.registry", fromlist=["CLASSNAME_DIR"]).CLASSNAME_DIR


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HRVLM_CACHE", str(tmp_path / "cache"))


def _ancestors(name: str) -> set[str]:
    return {s.name() for path in synset(name).hypernym_paths() for s in path}


def test_every_shape_and_colour_is_a_wordnet_synset_of_the_right_kind():
    for name, entry in world()["shapes"].items():
        assert "shape.n.02" in _ancestors(entry["synset"]), name
        assert name in synset(entry["synset"]).lemma_names(), name  # the readable name is a lemma
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
    ds = MiniWorldDataset("mini-clutter", "test", profile="smoke")
    late = ds[40][0]
    for i in range(5):
        ds[i]
    assert (MiniWorldDataset("mini-clutter", "test", profile="smoke")[40][0] == late).all()


def test_every_shape_renders_distinctly():
    base = Factors("circle", "red", "large", 0.4, 0.5, 0.5, "center", 0.0, True, "plain", "white", 32)
    masks = {s: shape_mask(replace(base, shape=s), 32) > 0.5 for s in shape_names()}
    for s, m in masks.items():
        assert m.sum() > 20, f"{s} is too small to see"
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


@pytest.mark.parametrize("name", dataset_names())
def test_documented_sizes_and_balanced_labels(name):
    for split, sizes in definition(name)["splits"].items():
        assert split_size(name, split, "mini") >= 1000 and split_size(name, split, "smoke") <= 4096
        ds = MiniWorldDataset(name, split, profile="smoke")
        assert len(ds) == sizes["smoke"]
        image, label = ds[len(ds) - 1]
        assert image.shape == (3, 32, 32) and 0 <= image.min() and image.max() <= 1
        counts = np.bincount([ds.label(i) for i in range(len(ds))], minlength=len(ds.classnames))
        assert counts.max() - counts.min() <= 1


def test_splits_differ_and_test_items_are_fixed():
    train = MiniWorldDataset("mini-finetune", "train", profile="smoke")
    test = MiniWorldDataset("mini-finetune", "test", profile="smoke")
    assert not any(np.array_equal(train.image_uint8(i), test.image_uint8(i)) for i in range(10))
    # a larger profile extends the smaller one: item i is the same
    assert np.array_equal(MiniWorldDataset("mini-finetune", "test", profile="mini").image_uint8(7),
                          test.image_uint8(7))


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
    from hrvlm.miniworld.captions import hypernyms
    from hrvlm.miniworld.render import world

    ds = MiniWorldDataset("mini-pretrain", "train", n=400)
    texts = ds.captions("pretrain")
    assert texts == MiniWorldDataset("mini-pretrain", "train", n=400).captions("pretrain")
    assert len(set(texts)) > 200
    assert sum(t.endswith(" shape") for t in texts) > 5 and sum(":" in t for t in texts) > 5

    def names_it(f, text):
        superclasses = hypernyms(world()["shapes"][f.shape]["synset"])
        return f.shape in text or f.colour in text or any(name in text for name in superclasses)

    assert all(names_it(ds.factors(i), t) for i, t in enumerate(texts))
    assert {"rectangle", "regular polygon", "polygon", "shape"} <= set(hypernyms("square.n.01")) and \
        "square" not in hypernyms("square.n.01")  # both WordNet paths, up to shape.n.02, without the class
    assert sum(any(n in t for n in hypernyms(world()["shapes"][ds.factors(i).shape]["synset"]))
               and ds.factors(i).shape not in t for i, t in enumerate(texts)) > 5  # superclass-only captions


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
    with pytest.raises(ValueError, match="profile"):
        MiniWorldDataset("mini-heldout", "test", profile="huge")
    with pytest.raises(ValueError, match="unknown shape"):
        Style(shapes=("blob",))
    with pytest.raises(IndexError):
        MiniWorldDataset("mini-heldout", "test", n=5)[5]


def test_registry_entries():
    from hrvlm.data.registry import get_dataset, get_spec

    assert zeroshot_names()[0] == "mini-finetune" and len(zeroshot_names()) >= 6
    for name in dataset_names():
        spec = get_spec(name)
        assert spec.profile == "mini" and spec.hierarchy == name and spec.name.startswith("mini-")
        assert list(spec.classnames) == MiniWorldDataset(name, spec.splits[0], n=1).classnames
    ds = get_dataset("mini-colours", "test", profile="smoke")
    assert len(ds) == split_size("mini-colours", "test", "smoke")
