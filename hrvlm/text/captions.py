"""Caption sources: one caption per training image, for QT-AFT's caption-guided loss.

A source is named by a string (a method setting) and bound to the training data once
(:func:`caption_source`); it then gives the captions of a :class:`~hrvlm.methods.Batch` from the
batch's dataset indices or labels:

* ``"file:PATH"`` — a captions file in the QT-AFT authors' format: a JSON object mapping an image file
  name to its caption, either one file or a folder of them (the authors ship one ``<wnid>.json`` per
  ImageNet class).  Keys are matched on the file's base name (the authors strip the folders too); the
  training set must be an image-folder dataset (items with file paths);
* ``"name"``, ``"template"``, ``"gloss"``, ``"detailed"`` — built captions of increasing quality: the
  class name, a prompt template filled with it, the name with its WordNet definition, and (mini world
  only) the object with its properties.  Mini-world datasets caption every item themselves
  (:meth:`hrvlm.miniworld.datasets.MiniWorldDataset.caption`); real datasets get the first three from
  their class names and WordNet synsets (offline: no captioning model is needed).

The paper's captions (InternVL2.5-8B, "Describe the image in detail within 50 words.") are a download
of the authors; ``file:`` reads it unchanged.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

from hrvlm.miniworld.captions import QUALITIES, article, gloss

BUILT = QUALITIES                      # qualities built from the data itself
CLASS_QUALITIES = ("name", "template", "gloss")  # the ones a class name (and its synset) determines
MAX_MISSING = 500                      # images without a caption the authors' loader tolerates (as "")


def parse_source(spec: str) -> tuple[str, str | None]:
    """``spec`` → ``(kind, argument)``: ``("file", path)`` or ``("built", quality)``."""
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"a caption source must be a string, got {spec!r}; use 'file:PATH' or one of {BUILT}")
    if spec.startswith("file:"):
        path = spec.removeprefix("file:")
        if not path:
            raise ValueError("caption source 'file:' needs a path: 'file:/path/to/captions.json' (or a folder of them)")
        return "file", path
    if spec in BUILT:
        return "built", spec
    raise ValueError(f"unknown caption source {spec!r}; use 'file:PATH' (the authors' captions) "
                     f"or a built quality, one of {BUILT}")


def load_captions_file(path: str | os.PathLike) -> dict[str, str]:
    """``{image file base name: caption}`` from a JSON object file, or from every ``*.json`` in a folder."""
    path = Path(path).expanduser()
    if path.is_dir():
        files = sorted(path.glob("*.json"))
        if not files:
            raise FileNotFoundError(f"caption folder {path} holds no *.json files (expected e.g. <wnid>.json "
                                    f"files mapping image file names to captions)")
    elif path.is_file():
        files = [path]
    else:
        raise FileNotFoundError(f"captions file {path} does not exist")
    captions: dict[str, str] = {}
    for file in files:
        try:
            table = json.loads(file.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"captions file {file} is not valid JSON: {err}") from None
        if not isinstance(table, dict):
            raise ValueError(f"captions file {file} must hold a JSON object {{image file name: caption}}, "
                             f"got a {type(table).__name__}")
        for key, caption in table.items():
            if not isinstance(caption, str):
                raise ValueError(f"captions file {file}: the caption of {key!r} is a {type(caption).__name__}, "
                                 f"not a string")
            name = key.replace("\\", "/").rsplit("/", 1)[-1]
            if captions.get(name, caption) != caption:
                raise ValueError(f"captions file {file}: image {name!r} has two different captions "
                                 f"(file names must be unique across the captions files)")
            captions[name] = caption
    return captions


def class_caption(name: str, synset: str | None, quality: str, template: str = "a photo of a {c}.") -> str:
    """The ``quality`` caption of a class (one of :data:`CLASS_QUALITIES`); the mini world's format.

    ``gloss`` without a synset (a class WordNet does not cover) is the name with its article alone.
    """
    if quality == "name":
        return name
    if quality == "template":
        return template.format(c=name)
    if quality == "gloss":
        return f"{article(name)} {name}" + (f": {gloss(synset)}" if synset else "")
    raise ValueError(f"a class name alone gives the qualities {CLASS_QUALITIES}, not {quality!r}")


def item_paths(dataset: Any) -> list[str]:
    """The image file paths of an image-folder dataset's items, in index order (torchvision's
    ``samples``, or the ``items`` of hrvlm's TinyImageNet): ``[(path, label), …]``."""
    for attribute in ("samples", "items"):
        items = getattr(dataset, attribute, None)
        if isinstance(items, Sequence) and items and isinstance(items[0], tuple):
            return [str(item[0]) for item in items]
    raise ValueError(f"a captions file needs the training images' file names, but the training set "
                     f"({type(dataset).__name__}) is not an image-folder dataset; use a built caption quality "
                     f"({BUILT}) instead")


class CaptionSource:
    """``source(batch) → list[str]`` (one caption per image); :meth:`vocabulary` lists every caption the
    source can give when it is a fixed list (so their text features can be computed once)."""

    def __init__(self, spec: str):
        self.spec = spec

    def __call__(self, batch) -> list[str]:
        raise NotImplementedError

    def vocabulary(self) -> list[str] | None:
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"


def _indices(batch) -> list[int]:
    if batch.index is None:
        raise ValueError("this caption source looks captions up by dataset index, but the batch has no "
                         "index; the data loader must fill Batch.index")
    return [int(i) for i in batch.index.tolist()]


class ItemCaptions(CaptionSource):
    """A fixed caption per dataset item (a captions file, or a mini-world quality)."""

    def __init__(self, spec: str, captions: list[str]):
        super().__init__(spec)
        self.captions = captions

    def __call__(self, batch) -> list[str]:
        return [self.captions[i] for i in _indices(batch)]

    def vocabulary(self) -> list[str]:
        return self.captions


class ClassCaptions(CaptionSource):
    """The caption of the image's class (every image of a class shares it)."""

    def __init__(self, spec: str, captions: list[str]):
        super().__init__(spec)
        self.captions = captions

    def __call__(self, batch) -> list[str]:
        return [self.captions[int(y)] for y in batch.labels.tolist()]

    def vocabulary(self) -> list[str]:
        return self.captions


def caption_source(spec: str, dataset_spec: Any, train_set: Any = None) -> CaptionSource:
    """The source ``spec`` bound to the training data: ``dataset_spec`` (a
    :class:`~hrvlm.data.registry.DatasetSpec`: name, class names, templates) and ``train_set`` (the split
    ``Batch.index`` indexes; needed by ``file:`` and by mini-world item captions)."""
    kind, argument = parse_source(spec)
    if kind == "file":
        table = load_captions_file(argument)
        if train_set is None:
            raise ValueError("caption source 'file:' needs the training set (to read its image file names)")
        names = [os.path.basename(p) for p in item_paths(train_set)]
        missing = [n for n in names if n not in table]
        if len(missing) >= MAX_MISSING or len(missing) == len(names):
            raise ValueError(f"{len(missing)} of {len(names)} training images have no caption in {argument} "
                             f"(e.g. {missing[0]!r}); is it the captions file of this training set?")
        if missing:
            warnings.warn(f"{len(missing)} training images have no caption in {argument}; they get an empty "
                          f"caption, as the authors' loader does (up to {MAX_MISSING - 1})", stacklevel=2)
        return ItemCaptions(spec, [table.get(n, "") for n in names])
    if hasattr(train_set, "caption"):  # a mini-world split captions its items itself
        return ItemCaptions(spec, [train_set.caption(i, argument) for i in range(len(train_set))])
    if argument not in CLASS_QUALITIES and train_set is None:
        raise ValueError(f"caption quality {argument!r} describes each image, so it needs the training set: "
                         f"pass it as TrainContext.train_set (the split Batch.index indexes)")
    if argument not in CLASS_QUALITIES:
        raise ValueError(f"caption quality {argument!r} needs per-image descriptions, which only the mini world "
                         f"builds; for {getattr(dataset_spec, 'name', 'this dataset')!r} use 'file:PATH' (the "
                         f"authors' captions) or one of {CLASS_QUALITIES}")
    return ClassCaptions(spec, class_captions(dataset_spec, argument))


def class_captions(dataset_spec: Any, quality: str) -> list[str]:
    """One ``quality`` caption per class of a registered dataset (synsets from its WordNet mapping,
    the template from its template set)."""
    from hrvlm.hierarchy.trees import dataset_leaves
    from hrvlm.data.templates import load_templates

    names = list(dataset_spec.classnames)
    synsets = dataset_leaves(dataset_spec.name)[2] if quality == "gloss" else [None] * len(names)
    template = load_templates(dataset_spec.templates)[0]
    return [class_caption(n, s, quality, template) for n, s in zip(names, synsets)]
