"""What one evaluation computes, apart from the model: :class:`EvalRequest`, checked before any model loads.

A request is data (a frozen dataclass, as :class:`hrvlm.training.train.TrainConfig` is):
:meth:`EvalRequest.check` raises a one-line error naming what to change, before a model or data is
loaded; :meth:`EvalRequest.on` resolves it for a device (``precision="auto"`` becomes the device's
policy, and every attack runs in that policy's attack dtype); :meth:`EvalRequest.key` hashes what it
computes.  Where the records go (``store``) and whether a bar is shown (``progress``) are how a request
runs, not what it computes: they are arguments of :func:`hrvlm.evaluation.evaluate.evaluate`, not fields.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import warnings
from dataclasses import KW_ONLY, dataclass
from typing import NamedTuple, Sequence

import numpy as np
import torch

from hrvlm.core.precision import CHOICES as PRECISION_CHOICES, precision_policy
from hrvlm.core.storage import canonical_json, check_writable_folder, config_hash
from hrvlm.data.real import DEFAULT_RESOLUTION, check_resolution, labelled_options
from hrvlm.data.registry import get_dataset, get_spec
from hrvlm.data.templates import load_templates


def default_split(spec) -> str:
    """The split a dataset is evaluated on: ``test``, else ``val``, else its first."""
    return next((s for s in ("test", "val") if s in spec.splits), spec.splits[0])


def _load_tree(spec, tree, depth: int):
    if not isinstance(tree, int):
        return tree
    if spec.hierarchy is None:
        raise ValueError(f"dataset {spec.name!r} has no class hierarchy: only level 0 can be evaluated")
    from hrvlm.hierarchy.trees import forest_for_dataset

    trees = forest_for_dataset(spec.hierarchy, depth=depth).trees
    if not 0 <= tree < len(trees):
        raise ValueError(f"{spec.name}: no tree {tree}; its forest has {len(trees)} tree(s), give 0..{len(trees) - 1}")
    return trees[tree]


def _attack_list(attacks) -> list:
    attacks = [] if attacks is None else [attacks] if callable(attacks) else list(attacks)
    for attack in attacks:
        if not (callable(attack) and callable(getattr(attack, "config", None))):
            raise TypeError(f"{attack!r} is not an attack: use hrvlm.attacks.build_attack(name, eps, ...)")
    return attacks


def check_attacks(attacks) -> list:
    """The attacks, each run once on a toy problem (one 4×4 image, three fixed logits) so that bad
    settings (negative steps, zero restarts, ...) fail now, by the attack's own checks, and not after
    the model has loaded.  Costs milliseconds (about a second for ``autoattack-standard``'s Square),
    once per attack configuration and process."""
    attacks = _attack_list(attacks)
    images, labels = torch.full((1, 3, 4, 4), 0.5), torch.zeros(1, dtype=torch.long)

    def toy(x):
        return torch.tensor([[1.0, 0.0, -1.0]]) + 0.01 * x.flatten(1)[:, :3]

    with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):  # the caller's RNG stream is untouched
        warnings.simplefilter("ignore")
        for attack in attacks:
            key = config_hash(attack.config())
            if key not in _CHECKED_ATTACKS:  # a configuration is checked once per process
                attack(toy, images, labels)
                _CHECKED_ATTACKS.add(key)
    return attacks


_CHECKED_ATTACKS: set[str] = set()


def with_autocast(attack, dtype: torch.dtype | None):
    """``attack`` running its forwards under ``dtype`` (:attr:`hrvlm.core.precision.Precision.attack_dtype`):
    itself when it already does, else a copy, its components (AutoAttack's) included.  An attack object
    without an ``autocast`` setting is left as it is: its precision is its own."""
    if getattr(attack, "autocast", dtype) == dtype:
        return attack
    attack = copy.copy(attack)
    attack.autocast = dtype
    if hasattr(attack, "components"):
        attack.components = [with_autocast(part, dtype) for part in attack.components]
    return attack


def _positive(name: str, value, allow_zero: bool = False) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < (0 if allow_zero else 1):
        raise ValueError(f"{name} must be {'a non-negative' if allow_zero else 'a positive'} integer, got {value!r}")


def check_levels(tree, levels: Sequence[int], attacked: bool) -> None:
    """Levels must exist in ``tree``, and an attacked level needs two classes or more (a single class,
    the root, has nothing to attack); the error names the levels that can be evaluated."""
    usable = [lv for lv in range(tree.depth + 1) if not attacked or tree.num_classes(lv) > 1]
    for level in levels:
        if level > tree.depth:
            raise ValueError(f"level {level} exceeds the depth {tree.depth} of tree {tree.name!r}: use levels 0..{tree.depth}")
        if level not in usable:
            raise ValueError(f"level {level} of tree {tree.name!r} has a single class, which cannot be attacked: "
                             f"use levels {usable[0]}..{usable[-1]} (or --attack none)")


def check_store(store) -> None:
    """A records store given as a path can be appended to: a file (existing or not) in a writable folder,
    checked before any work, not after the first chunk.  ``None`` (no store) and store objects pass."""
    from hrvlm.evaluation.records import check_store_path

    if store is None or hasattr(store, "append"):
        return
    path = check_store_path(store)
    hint = "; give a store in a writable folder (hrvlm eval --store FILE, evaluate(store=FILE))"
    if path.is_file() and not os.access(path, os.W_OK):
        raise PermissionError(f"records store {path} is read-only{hint}")
    check_writable_folder(path.parent, "records store folder", hint)


class Checked(NamedTuple):
    """What :meth:`EvalRequest.check` resolved: the registered ``spec``, the ``split``, the sorted
    ``levels``, the ``tree`` (``None`` when only level 0) and the dataset ``options`` (the spec's, then the
    request's, with the fabricated label of :func:`hrvlm.data.real.labelled_options`)."""

    spec: object
    split: str
    levels: list[int]
    tree: object
    options: dict


@dataclass(frozen=True)
class EvalRequest:
    """Every setting of one evaluation but the model (:func:`hrvlm.evaluation.evaluate.evaluate`).

    ``attacks``: attack objects (:func:`hrvlm.attacks.build_attack`), one or several; none for clean
    accuracy only.  ``levels``: tree levels (0 = the dataset's classes).  ``n`` images of the fixed subset
    (:func:`~hrvlm.data.fixed_subset`; ``None`` = all) or explicit ``subset`` ids.  ``split`` defaults to
    :func:`default_split`.  ``method``: the training method that produced the weights (``clip``: none), a
    record label.  ``head``: the classification head's spec (default ``model.head_spec``, which a
    fine-tuned run sets; else cosine).  ``templates``: a template set (default the dataset's).
    ``resolution``: :data:`~hrvlm.data.real.RESOLUTION_POLICIES`.  ``tree``: index into the dataset's
    forest of depth ``depth``, or a ``hrvlm.hierarchy.trees.Tree``.  ``num_workers``: the loader's
    processes (default :func:`~hrvlm.data.default_num_workers`; no record depends on it).
    ``dataset_options``: over the spec's (``size`` of the mini world, ``root`` of a real dataset).
    ``precision``: :data:`hrvlm.core.precision.CHOICES`; ``"auto"`` is the device's policy
    (:func:`hrvlm.core.precision.precision_policy`), resolved by :meth:`on`, which also runs every attack
    in the policy's attack dtype (bf16 on recent GPUs, float32 otherwise: never float16).
    """

    dataset: str
    attacks: tuple = ()
    levels: tuple[int, ...] = (0,)
    n: int | None = None
    _: KW_ONLY
    subset: tuple[int, ...] | None = None
    split: str | None = None
    method: str = "clip"
    head: dict | None = None
    templates: str | None = None
    resolution: str = DEFAULT_RESOLUTION
    tree: object = 0
    depth: int = 5
    batch_size: int = 64
    seed: int = 0
    num_workers: int | None = None
    dataset_options: dict | None = None
    precision: str = "auto"

    def __post_init__(self):
        # tuples, so that a request is immutable and two equal requests compare equal
        attacks = self.attacks
        one = callable(attacks) or isinstance(attacks, str)  # a string is one (wrong) attack, not its letters
        object.__setattr__(self, "attacks", () if attacks is None else (attacks,) if one else tuple(attacks))
        object.__setattr__(self, "levels", tuple(self.levels))
        if self.subset is not None:
            object.__setattr__(self, "subset", tuple(np.asarray(self.subset, dtype=np.int64).ravel().tolist()))

    def check(self) -> Checked:
        """Raise a one-line ``ValueError``/``KeyError``/``TypeError``/``FileNotFoundError`` saying what to change,
        before any model or data is loaded; return what the evaluation resolves (:class:`Checked`).

        Checks the dataset name, split and options (a real dataset's files are present), the attacks'
        type, the levels against the dataset's tree (depth, single-class levels when attacked), the sizes,
        the template set, the resolution policy and the precision.  Attack settings are checked by
        :func:`check_attacks`, which runs the attacks, so not on every call here; subset ids are checked
        against the dataset's size when it loads.
        """
        from hrvlm.data.real import REAL, require_files

        dataset = self.dataset
        if not isinstance(dataset, str) or not dataset.strip():
            raise ValueError(f"no dataset named: give registered dataset names, e.g. mini-heldout (got {dataset!r})")
        spec = get_spec(dataset)
        split = self.split or default_split(spec)
        if split not in spec.splits:
            raise ValueError(f"dataset {dataset!r} has no split {split!r}; its splits are {list(spec.splits)}")
        check_resolution(self.resolution)
        if self.precision not in PRECISION_CHOICES:
            raise ValueError(f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISION_CHOICES)}")
        attacks = _attack_list(self.attacks)
        levels = sorted({int(level) for level in self.levels})
        if not levels or levels[0] < 0:
            raise ValueError(f"levels must be non-negative integers (0 = the dataset's classes), got {levels}")
        for name in ("n", "batch_size", "depth"):
            _positive(name, getattr(self, name))
        _positive("num_workers", self.num_workers, allow_zero=True)
        load_templates(self.templates or spec.templates)
        options = labelled_options(dataset, {**spec.options, **(self.dataset_options or {})})
        if dataset in REAL and spec.world == "real":
            require_files(dataset, split, options.get("root"))
        elif spec.world == "mini":  # generated lazily: building it checks its options (size, n) in milliseconds
            get_dataset(dataset, split, **options)
        tree = _load_tree(spec, self.tree, self.depth) if levels[-1] > 0 else None
        if tree is not None:
            check_levels(tree, levels, attacked=bool(attacks))
            if len(tree.nodes[0]) != spec.num_classes:
                raise ValueError(f"tree {tree.name!r} has {len(tree.nodes[0])} leaves but {dataset} "
                                 f"has {spec.num_classes} classes")
        return Checked(spec, split, levels, tree, options)

    def on(self, device: str | torch.device) -> "EvalRequest":
        """This request as it runs on ``device``: ``precision`` the name of the device's policy
        (:func:`~hrvlm.core.precision.precision_policy`; ``"auto"``: bf16 on GPUs with native bf16, fp16 on
        older ones, fp32 on the CPU), every attack in that policy's attack dtype (:func:`with_autocast`)."""
        policy = precision_policy(device, self.precision)
        return dataclasses.replace(self, precision=policy.name,
                                   attacks=tuple(with_autocast(a, policy.attack_dtype) for a in self.attacks))

    def identity(self) -> dict:
        """What the request computes: every field but ``num_workers`` (no record depends on it), with the
        defaults filled in (split, templates), sorted levels, attacks as their configurations, a tree object
        as its name and content hash, subset ids as their hash, and dataset options without where the data
        lie (``root``, ``download``) but with their fabricated label.  ``precision`` is as given: ``"auto"``
        until :meth:`on` resolves it for a device."""
        spec = get_spec(self.dataset)
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "num_workers"}
        options = labelled_options(self.dataset, {**spec.options, **(self.dataset_options or {})})
        tree = self.tree if isinstance(self.tree, int) else {"name": self.tree.name, "hash": self.tree.content_hash()}
        fields.update(
            split=self.split or default_split(spec), templates=self.templates or spec.templates,
            levels=sorted({int(level) for level in self.levels}), attacks=[a.config() for a in self.attacks],
            subset=None if self.subset is None else config_hash(sorted(set(self.subset)), length=16), tree=tree,
            dataset_options={k: v for k, v in options.items() if k not in ("root", "download")})
        return json.loads(canonical_json(fields))

    def key(self) -> str:
        """A stable hash of :meth:`identity`: equal keys, for one model on one device, mean the same records."""
        return config_hash(self.identity(), length=20)


__all__ = ["Checked", "EvalRequest", "check_attacks", "check_levels", "check_store", "default_split", "with_autocast"]
