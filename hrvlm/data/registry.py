"""The dataset registry.

A dataset is registered once, as data: its name, world (``mini``: generated offline, or ``real``),
class names, template set, hierarchy key and a factory that builds a ``torch.utils.data.Dataset`` yielding
``(image, label)`` with ``image`` a float tensor ``[3, S, S]`` in [0, 1].  The mini world and the real
datasets go through the same calls, so every chapter differs between profiles only in names.
"""
from __future__ import annotations

import difflib
import hashlib
import inspect
import json
import os
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from hrvlm.core.resources import RESOURCES

CLASSNAME_DIR = RESOURCES / "classnames"
# The paper's evaluation sets: ImageNet, then its 14 zero-shot sets; a profile's evaluation sets by default
# (full, rehearsal).  Here, not in data.real: the hierarchy reads it and needs no torch.
PAPER_DATASETS = ("imagenet", "cifar10", "cifar100", "stl10", "caltech101", "caltech256", "oxford_pets",
                  "flowers102", "fgvc_aircraft", "stanford_cars", "sun397", "food101", "eurosat", "dtd", "pcam")

WORLDS = ("mini", "real")  # where a dataset's images come from: the generated mini world, or real data
_REGISTRY: dict[str, "DatasetSpec"] = {}


@dataclass(frozen=True)
class DatasetSpec:
    """Everything the harness needs to know about a dataset, without loading it."""

    name: str
    world: str                        # "mini" (offline, generated) or "real" (real data)
    classnames: tuple[str, ...]       # readable names, as they go into prompts
    templates: str                    # a template set of hrvlm/resources/templates
    factory: Callable[..., object]    # factory(split=..., **options) -> Dataset of (image [3,S,S] in [0,1], label)
    hierarchy: str | None = None      # key of its class forest in hrvlm.hierarchy.trees (None: flat)
    splits: tuple[str, ...] = ("test",)
    description: str = ""
    options: dict = field(default_factory=dict)  # default keyword arguments of the factory
    image_files: bool = False         # its items are image files (decode="device" reads their bytes)
    bundled: str | None = None        # the installed package that ships its files (nothing to fetch)

    @property
    def num_classes(self) -> int:
        return len(self.classnames)


def register(spec: DatasetSpec, replace: bool = False) -> DatasetSpec:
    if spec.world not in WORLDS:
        raise ValueError(f"dataset {spec.name!r}: world must be one of {WORLDS}, not {spec.world!r}")
    if spec.name in _REGISTRY and not replace:
        raise KeyError(f"dataset {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def _load_builtin() -> None:
    # Importing these modules registers their datasets; done lazily so `import hrvlm` stays cheap.
    import importlib

    for module in BUILTIN_MODULES:
        importlib.import_module(module)


# Modules whose import registers datasets.
BUILTIN_MODULES: list[str] = ["hrvlm.miniworld.datasets", "hrvlm.data.real", "hrvlm.data.digits"]


def get_spec(name: str) -> DatasetSpec:
    _load_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
        hint = f" Did you mean {close}?" if close else ""
        raise KeyError(f"unknown dataset {name!r}.{hint} Known: {sorted(_REGISTRY)}") from None


def list_datasets(world: str | None = None) -> list[str]:
    """The registered datasets' names, those of one ``world`` (:data:`WORLDS`) if given."""
    _load_builtin()
    return sorted(n for n, s in _REGISTRY.items() if world is None or s.world == world)


def accepted_options(factory, options: dict) -> dict:
    """The ``options`` that ``factory`` accepts (mini-world factories take no ``resolution``)."""
    params = inspect.signature(factory).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return options
    return {k: v for k, v in options.items() if k in params}


def get_dataset(name: str, split: str = "test", **options):
    """Build the dataset ``name``: the one way every layer does.  Its registered options updated by
    ``options``, of which those its factory does not take are dropped (a mini-world set has no
    ``resolution``: evaluation passes the same options to every set)."""
    spec = get_spec(name)
    if split not in spec.splits:
        raise ValueError(f"dataset {name!r} has no split {split!r}; its splits are {list(spec.splits)}")
    return spec.factory(split=split, **accepted_options(spec.factory, {**spec.options, **options}))


def default_num_workers(device) -> int:
    """Loader processes when none are asked for: none on the CPU (the mini world is rendered in memory,
    and the cores are the model's), ``min(8, cores - 1)`` when a GPU computes (decoding 224-px JPEGs in
    one process feeds about 250 images/s; ``hrvlm bench jpeg``)."""
    if str(getattr(device, "type", device)).split(":")[0] != "cuda":  # a torch.device, "cuda" or "cuda:0"
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(8, cores - 1))


def classname_file(dataset: str) -> dict:
    """The class-name file of a dataset, ``resources/classnames/<dataset>.json``: ``{"classnames": [...],
    "source": ...}``, with ``"wnids"`` or ``"synsets"`` where the dataset has them."""
    path = CLASSNAME_DIR / f"{dataset}.json"
    if not path.is_file():
        known = sorted(p.stem for p in CLASSNAME_DIR.glob("*.json"))
        raise KeyError(f"no class-name file for {dataset!r} in {CLASSNAME_DIR}; known: {known}")
    return json.loads(path.read_text())


def load_classnames(name: str) -> list[str]:
    """Class names shipped as data in ``resources/classnames/<name>.json`` (``{"classnames": [...]}``)."""
    return list(classname_file(name)["classnames"])


def fixed_subset(name: str, size: int, n: int | None, split: str = "test") -> np.ndarray:
    """The same ``n`` indices of a dataset of ``size`` items, on every machine (RobustBench-style).

    A permutation seeded by the sha256 of ``name/split`` is cut at ``n`` and sorted; ``n=None`` or
    ``n >= size`` gives every index.  Larger ``n`` extends smaller ones (prefixes of one permutation).
    """
    if n is None or n >= size:
        return np.arange(size)
    if n <= 0:
        raise ValueError(f"subset size must be positive, got {n}")
    seed = int.from_bytes(hashlib.sha256(f"{name}/{split}".encode()).digest()[:8], "little")
    return np.sort(np.random.default_rng(seed).permutation(size)[:n])
