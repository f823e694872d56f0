"""The mini-world datasets, registered in :mod:`hrvlm.data.registry` on import.

Each dataset is data: its classes in ``resources/classnames/<name>.json`` (readable names + WordNet
synsets), its style, label kind, seed and per-size (``smoke``, ``mini``) split sizes in ``resources/miniworld.json``.
Item ``i`` of a split is rendered from ``(split seed, i)`` alone and labelled ``i mod C`` (balanced), so
a dataset is the same on every machine and its test indices are fixed; :meth:`MiniWorldDataset.materialize`
renders a whole split once and caches it as a compact uint8 ``.npz`` keyed by a hash of its configuration.
"""
from __future__ import annotations

import functools
import hashlib
import io
import json
import zipfile

import numpy as np
import torch
from torch.utils.data import Dataset

from hrvlm.data.registry import DatasetSpec, load_classnames, register
from hrvlm.core.storage import atomic_write_bytes, cache_dir, config_hash
from hrvlm.miniworld import captions as _captions
from hrvlm.miniworld.render import Style, font_sha256, item_factors, render_item, world

RENDER_VERSION = 1  # bump when the renderer's pixels change, so cached arrays are rebuilt


def definition(name: str) -> dict:
    """The data-file definition of mini dataset ``name``."""
    try:
        return world()["datasets"][name]
    except KeyError:
        raise KeyError(f"no mini-world dataset {name!r}; known: {sorted(world()['datasets'])}") from None


def rendering_inputs(name: str) -> dict:
    """Everything the items and captions of dataset ``name`` are made from: the world's shared vocabulary
    (shapes, colours, backgrounds, sizes, rotation, caption mixtures), the curated tree its captions name,
    the dataset's definition (its prose description aside), its classnames and templates files, the
    renderer version and the glyph font.  Other datasets' definitions are not part of it, so changing one
    dataset re-renders (and re-pretrains, for the corpus) nothing else."""
    from hrvlm.data.templates import TEMPLATE_DIR
    from hrvlm.miniworld.captions import world_tree

    d = {k: v for k, v in definition(name).items() if k != "description"}
    return {"vocabulary": {k: v for k, v in world().items() if k not in ("datasets", "source")},
            "tree": world_tree(), "definition": d,
            "classnames": json.loads(_classname_path(name).read_text()),
            "templates": json.loads((TEMPLATE_DIR / f"{d['templates']}.json").read_text()),
            "render_version": RENDER_VERSION, "font": font_sha256()}


def split_size(name: str, split: str, size: str = "mini") -> int:
    """The documented number of items of ``name``/``split`` at world ``size`` (``smoke`` or ``mini``)."""
    sizes = definition(name)["splits"]
    if split not in sizes:
        raise ValueError(f"{name} has no split {split!r}; its splits are {list(sizes)}")
    if size not in sizes[split]:
        raise ValueError(f"unknown size {size!r} for {name}; choose one of {list(sizes[split])}")
    return int(sizes[split][size])


class MiniWorldDataset(Dataset):
    """``(image [3, S, S] float in [0, 1], label)`` items of one split of a mini-world dataset.

    ``n`` overrides the ``size``'s number of items; ``image_size`` the resolution (32 by default, e.g. 64).
    ``caption(i, quality)`` and ``factors(i)`` describe item ``i``; ``with_captions(quality)`` is a
    view yielding ``(image, label, caption)``.
    """

    def __init__(self, name: str, split: str = "test", size: str = "mini", n: int | None = None,
                 image_size: int = 32):
        d = definition(name)
        self.name, self.split, self.image_size = name, split, int(image_size)
        self.n = split_size(name, split, size) if n is None else int(n)
        if self.n <= 0 or self.image_size < 8:
            raise ValueError(f"{name}: need n > 0 and image_size >= 8, got n={self.n}, image_size={image_size}")
        meta = json.loads((_classname_path(name)).read_text())
        self.classnames: list[str] = list(meta["classnames"])
        self.synsets: list[str] = list(meta["synsets"])
        self.colour_label = d["labels"] == "colour"
        key = "colours" if self.colour_label else "shapes"
        classes = tuple(self.classnames)
        style = dict(d.get("style", {}))
        style = {k: tuple(v) if isinstance(v, list) else v for k, v in style.items()}
        if self.colour_label:
            self.style = Style(shapes=tuple(world()["shapes"]), colours=classes, **style)
        else:
            self.style = Style(shapes=classes, **style)
        unknown = [c for c in classes if c not in world()[key]]
        if unknown:
            raise ValueError(f"{name}: classes {unknown} are not mini-world {key}")
        # Splits get distinct seeds so train and test never share an item.
        self.seed = int(d["seed"]) + {"train": 0, "test": 1}.get(split, 2) * 100
        self.templates_name: str = d["templates"]
        self._templates = _templates(self.templates_name)
        self._images: np.ndarray | None = None

    # ------------------------------------------------------------------ items
    def __len__(self) -> int:
        return self.n

    def label(self, i: int) -> int:
        return i % len(self.classnames)

    def _check(self, i: int) -> int:
        if not -self.n <= i < self.n:
            raise IndexError(f"{self.name}/{self.split}: index {i} out of range for {self.n} items")
        return i % self.n

    def render(self, i: int):
        """``(uint8 image [S, S, 3], factors)`` of item ``i``, rendered now."""
        i = self._check(i)
        return render_item(self.style, self.seed, i, self.label(i), self.image_size, self.colour_label)

    def factors(self, i: int):
        i = self._check(i)
        return item_factors(self.style, self.seed, i, self.label(i), self.image_size, self.colour_label)

    def image_uint8(self, i: int) -> np.ndarray:
        i = self._check(i)
        return self._images[i] if self._images is not None else self.render(i)[0]

    def __getitem__(self, i: int):
        img = torch.from_numpy(np.ascontiguousarray(self.image_uint8(i))).permute(2, 0, 1).float() / 255.0
        return img, self.label(self._check(i))

    def caption(self, i: int, quality: str = "detailed") -> str:
        """Caption of item ``i`` at ``quality`` (``name``, ``template``, ``detailed``, ``gloss``);
        the pretraining corpus also has ``quality="pretrain"``, its web-like mixed caption, and
        ``"pretrain:<mixture>"`` for another mixture of :func:`hrvlm.miniworld.captions.pretraining_mixtures`."""
        i = self._check(i)
        f = self.factors(i)
        if quality == "pretrain" or quality.startswith("pretrain:"):
            mixture = quality.partition(":")[2] or "web"
            # a stream separate from the image's, and one per mixture
            rng = np.random.default_rng([self.seed, i, 1, *mixture.encode()])
            return _captions.pretraining_caption(f, rng, self._templates, mixture)
        return _captions.caption(f, quality, self._templates[0], self.colour_label)

    def captions(self, quality: str = "detailed") -> list[str]:
        return [self.caption(i, quality) for i in range(self.n)]

    def with_captions(self, quality: str = "detailed") -> "CaptionedView":
        return CaptionedView(self, quality)

    # ------------------------------------------------------------------ caching
    def cache_key(self) -> str:
        return config_hash({"name": self.name, "split": self.split, "n": self.n, "size": self.image_size,
                            "style": repr(self.style), "seed": self.seed, "inputs": rendering_inputs(self.name)})

    def materialize(self, cache: bool = True) -> "MiniWorldDataset":
        """Render every item once into memory (and a cached ``.npz``; a corrupt one is rebuilt)."""
        if self._images is not None:
            return self
        path = cache_dir("miniworld") / f"{self.name}-{self.split}-{self.cache_key()}.npz"
        if cache and path.is_file():
            try:
                with np.load(path) as z:
                    images, digest = z["images"], str(z["sha256"])
                if images.shape == (self.n, self.image_size, self.image_size, 3) and \
                        hashlib.sha256(images.tobytes()).hexdigest() == digest:
                    self._images = images
                    return self
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
                pass  # unreadable: rebuilt below
        images = np.stack([self.render(i)[0] for i in range(self.n)])
        if cache:
            buf = io.BytesIO()
            np.savez_compressed(buf, images=images, sha256=hashlib.sha256(images.tobytes()).hexdigest())
            atomic_write_bytes(path, buf.getvalue())
        self._images = images
        return self

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All images ``[N, 3, S, S]`` as uint8 and labels ``[N]`` (materialises first)."""
        self.materialize()
        images = torch.from_numpy(self._images).permute(0, 3, 1, 2).contiguous()
        return images, torch.tensor([self.label(i) for i in range(self.n)])


class CaptionedView(Dataset):
    """A mini-world dataset yielding ``(image, label, caption)`` with captions of one quality."""

    def __init__(self, base: MiniWorldDataset, quality: str):
        pretraining = ("pretrain",) + tuple(f"pretrain:{m}" for m in _captions.pretraining_mixtures())
        if quality not in _captions.QUALITIES + pretraining:
            raise ValueError(f"unknown caption quality {quality!r}; choose one of {_captions.QUALITIES}")
        self.base, self.quality = base, quality

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        image, label = self.base[i]
        return image, label, self.base.caption(i, self.quality)


def _classname_path(name: str):
    from hrvlm.data.registry import CLASSNAME_DIR

    return CLASSNAME_DIR / f"{name}.json"


@functools.lru_cache(maxsize=None)
def _templates_cached(name: str) -> tuple[str, ...]:
    from hrvlm.data.templates import load_templates

    return tuple(load_templates(name))


def _templates(name: str) -> list[str]:
    return list(_templates_cached(name))


def mini_dataset(name: str, split: str = "test", **options) -> MiniWorldDataset:
    """``get_dataset`` for mini names, typed: ``mini_dataset("mini-finetune", "train", size="smoke")``."""
    return MiniWorldDataset(name, split, **options)


def dataset_names() -> list[str]:
    return sorted(world()["datasets"])


def zeroshot_names() -> list[str]:
    """The evaluation sets: every mini dataset with a test split (the fine-tuning set's first)."""
    names = [n for n in dataset_names() if "test" in definition(n)["splits"]]
    return sorted(names, key=lambda n: (n != "mini-finetune", n))


def _register_all() -> None:
    for name in dataset_names():
        d = definition(name)
        register(DatasetSpec(
            name=name, world="mini", classnames=tuple(load_classnames(name)), templates=d["templates"],
            factory=functools.partial(MiniWorldDataset, name), hierarchy=name,
            splits=tuple(d["splits"]), description=d["description"], options={"size": "mini"}),
            replace=True)


_register_all()
