"""Captions of mini-world images at several qualities (QT-AFT's caption-quality axis).

* ``name``: the class name alone ("rhombus");
* ``template``: a prompt template filled with it ("a photo of a rhombus.");
* ``detailed``: the object and its properties ("a small red rhombus, outlined, on a blue striped
  background, upper left");
* ``gloss``: the class name with its WordNet gloss ("a rhombus: a parallelogram with four equal sides; …").
"""
from __future__ import annotations

import functools

import numpy as np

from hrvlm.miniworld.render import Factors, world

QUALITIES = ("name", "template", "detailed", "gloss")


@functools.lru_cache(maxsize=None)
def gloss(synset_name: str) -> str:
    """The WordNet 3.0 definition of ``synset_name`` (read once)."""
    from hrvlm.hierarchy.wordnet import synset

    return synset(synset_name).definition()


@functools.lru_cache(maxsize=1)
def world_tree() -> dict:
    """The mini world's curated tree (``hrvlm-tree/1``, named by ``world()["tree"]``), checked."""
    from hrvlm.hierarchy.trees import TREE_DIR, read_tree_file

    return read_tree_file(TREE_DIR / world()["tree"])


@functools.lru_cache(maxsize=None)
def superclasses(name: str) -> tuple[str, ...]:
    """Readable names of a class's ancestors in the world's curated tree, nearest first, root excluded
    ("letter b" → "round consonant", "consonant", "letter", "character"): the names the
    trees use, so that what pretraining captions say is what the zero-shot superclass prompts ask."""
    tree = world_tree()
    parents, names = tree["parents"], tree.get("names", {})
    if name not in parents:
        raise KeyError(f"class {name!r} is not a leaf of the mini world's tree {world()['tree']}")
    chain, node = [], parents[name]
    while node in parents:
        chain.append(names.get(node, node))
        node = parents[node]
    return tuple(chain)


def article(word: str) -> str:
    """``"a"`` or ``"an"`` before ``word``."""
    return "an" if word[:1] in "aeiou" else "a"


def subject(f: Factors, colour_label: bool) -> str:
    """What the image is labelled as: the shape, or for colour datasets the fill colour."""
    return f.colour if colour_label else f.shape


def caption(f: Factors, quality: str, template: str = "a photo of a {c}.", colour_label: bool = False) -> str:
    """The caption of an image with factors ``f`` at ``quality`` (one of :data:`QUALITIES`)."""
    if quality not in QUALITIES:
        raise ValueError(f"unknown caption quality {quality!r}; choose one of {QUALITIES}")
    name = subject(f, colour_label)
    if quality == "name":
        return name
    if quality == "template":
        return template.format(c=name)
    if quality == "gloss":
        key = "colours" if colour_label else "shapes"
        return f"{article(name)} {name}: {gloss(world()[key][name]['synset'])}"
    style = "filled" if f.filled else "outlined"
    bg = world()["backgrounds"][f.background]
    return (f"a {f.size} {f.colour} {f.shape}, {style}, on {article(f.bg_colour)} {f.bg_colour} {bg} background, "
            f"{f.position}")


def pretraining_mixtures() -> list[str]:
    """Names of the pretraining caption mixtures (``world()["pretraining_captions"]``)."""
    return list(world()["pretraining_captions"])


def pretraining_caption(f: Factors, rng: np.random.Generator, templates: list[str], mixture: str = "web") -> str:
    """A web-like caption of varying quality for the pretraining corpus.

    The kind is drawn with the weights of the named ``mixture`` of ``world()["pretraining_captions"]``:
    a template, the bare name, the gloss, the colour alone (the analogue of colour prompts), a template
    naming one of the class's superclasses in the world's tree, each level equally often (``hypernym``),
    or a detailed caption with a random subset of the
    properties (so text and image align on each property separately).  ``web`` is the corpus'
    mixture; ``shapes-first`` names mostly the shape (the first phase of the pretraining curriculum,
    see :class:`hrvlm.training.pretrain.PretrainConfig`).
    """
    mixtures = world()["pretraining_captions"]
    if mixture not in mixtures:
        raise ValueError(f"unknown pretraining caption mixture {mixture!r}; choose one of {list(mixtures)}")
    mix = mixtures[mixture]
    kind = list(mix)[rng.choice(len(mix), p=np.asarray(list(mix.values())) / sum(mix.values()))]
    if kind == "template":
        return caption(f, "template", templates[rng.integers(len(templates))])
    if kind in ("name", "gloss"):
        return caption(f, kind)
    if kind == "colour":
        return f"{article(f.colour)} {f.colour} shape"
    if kind == "hypernym":  # a superclass name, as web text names "a mammal" as well as "a cat"
        parents = superclasses(f.shape)
        return templates[rng.integers(len(templates))].format(c=parents[rng.integers(len(parents))])
    if kind != "detailed":
        raise ValueError(f"unknown pretraining caption kind {kind!r} in the mini world's data file")
    words = [f.size] if rng.random() < 0.5 else []
    words += [f.colour] if rng.random() < 0.8 else []
    text = " ".join(words + [f.shape])
    text = f"{article(text)} {text}"
    extras = []
    if rng.random() < 0.5:
        extras.append("filled" if f.filled else "outlined")
    if rng.random() < 0.6:
        extras.append(f"on {article(f.bg_colour)} {f.bg_colour} {world()['backgrounds'][f.background]} background")
    if rng.random() < 0.3:
        extras.append(f.position)
    order = rng.permutation(len(extras))
    return ", ".join([text] + [extras[k] for k in order])
