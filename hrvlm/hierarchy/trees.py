"""Class trees and forests over a dataset's leaves: WordNet hypernym paths, dataset-native and curated trees.

A **tree** gives every leaf (class) exactly one ancestor at each level ``1..L``; a **forest** is up to
``max_trees`` trees over the same leaves (the paper sums its loss over up to 5 of them).

Level rule (applied to every tree, WordNet or file)
---------------------------------------------------
* Levels count **up from the leaf**: level 0 is the class itself, level ``l`` its ``l``-th ancestor.
  This is "the leaf-to-root path truncated to depth L": the ``L`` ancestors nearest the leaf.
* A tree is a *parent function*: one parent per node.  A leaf's chain is the leaf's parent, its
  parent's parent, ... up to the top.  Because the level-``l+1`` node is always the parent of the
  level-``l`` node, every level partitions the leaves and every node has one parent: it is a tree.
* **Root**: the deepest node that lies on the chain of every leaf (their common ancestor under this
  parent function); chains stop there.  Leaves with no parent at all (class names WordNet lacks) are
  left out of that computation.
* **Short chains** (fewer than ``L`` ancestors below the root) are padded by repeating their top-most
  node (the root), so uneven depths never shift a leaf's nearest ancestors.  A leaf with no ancestor
  (not in WordNet) is its own ancestor at every level: we do not guess its superclass.
* Node ids are per level, so one concept may appear at two levels (uneven depths); HNSA never takes a
  node with the same id as a negative of itself.

WordNet trees
-------------
WordNet is a DAG (``square.n.01`` is both a ``rectangle`` and a ``regular_polygon``); its parents are
not collapsed.  Tree ``k`` (``k = 0 .. max_trees-1``) gives each synset its ``(k mod n)``-th hypernym,
in the order of :func:`hrvlm.hierarchy.wordnet.hypernyms` (by synset offset, the same in every process), ``n``
being the number of its hypernyms (instance hypernyms included).  Tree 0
thus takes every synset's first hypernym.  Trees whose levels partition the leaves identically are one
tree and are kept once.  Leaves come from wnids (ImageNet), a ``"synsets"`` list in the class-name
file (mini world) or the versioned disambiguation table ``resources/synsets/<dataset>.json``.

Tree files (``resources/trees/*.json``, format ``hrvlm-tree/1``)
---------------------------------------------------------------
Dataset-native and curated trees, and any tree a user brings (e.g. made by an LLM)::

    {"format": "hrvlm-tree/1",
     "name": "cifar100-superclasses",            # unique within the dataset
     "dataset": "cifar100",                      # optional: forest_for_dataset("cifar100") uses it
     "provenance": {"source": "...", "method": "..."},
     "leaves": ["apple", "aquarium fish", ...],  # the dataset's leaf ids: class names (wnids for ImageNet)
     "parents": {"apple": "fruit and vegetables", "fruit and vegetables": "thing", ...},
     "names": {"fruit and vegetables": "fruit or vegetable"}}   # optional readable names

``parents`` maps each node (leaf or inner) to its one parent; a node absent from its keys is a root.
A file may serve several datasets: ``"datasets": [...]`` instead of ``"dataset"``, its leaves a superset of
each one's classes; a dataset's tree is then the file's tree restricted to its classes
(:func:`restrict_spec`).  ``"primary": true`` puts the file's tree before the WordNet trees.
:func:`load_tree_file` rejects, naming the problem: a node given two parents, a cycle, a leaf missing
or unknown, a leaf with children.  A forest's order: WordNet trees first when at least half the leaves
are in WordNet, else the files' trees first (files marked ``"primary"`` always first); then deduplicated and
cut at ``max_trees``.

Built trees serialise exactly with :meth:`Tree.to_json` (format ``hrvlm-levelled-tree/1``: per-level
ids, names and the ancestor matrix) and forests with :meth:`Forest.to_json` (``hrvlm-forest/1``).
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from hrvlm.core.resources import RESOURCES
from hrvlm.data.registry import PAPER_DATASETS, classname_file

SYNSET_DIR = RESOURCES / "synsets"
TREE_DIR = RESOURCES / "trees"
TREE_FORMAT = "hrvlm-tree/1"
LEVELLED_FORMAT = "hrvlm-levelled-tree/1"
FOREST_FORMAT = "hrvlm-forest/1"
DEFAULT_TEMPLATE = "a photo of a {c}."
LEVEL_RULE = ("levels counted up from the leaf; chains stop at the leaves' common ancestor (the root); "
              "short chains repeat their top node; leaves without ancestors stand for themselves")
# The real datasets with class forests: the paper's 15 and TinyImageNet.
REAL_DATASETS = PAPER_DATASETS + ("tinyimagenet",)


class HierarchyError(ValueError):
    """A tree, tree file or forest that breaks the rules above; the message names the problem."""


# ---------------------------------------------------------------- trees
@dataclass(eq=False)
class Tree:
    """One class tree of depth ``L`` over ``n`` leaves, stored level by level.

    ``nodes[l]`` are the node ids of level ``l`` (level 0 = the leaves, in label order), ``names[l]``
    their readable names (for prompts), ``ancestor[l, i]`` the index in ``nodes[l]`` of leaf ``i``'s
    level-``l`` ancestor (row 0 is ``arange(n)``).
    """

    name: str
    depth: int
    nodes: list[list[str]]
    names: list[list[str]]
    ancestor: np.ndarray
    provenance: dict = field(default_factory=dict)

    def __post_init__(self):
        self.ancestor = np.asarray(self.ancestor, dtype=np.int64)
        self.nodes = [list(level) for level in self.nodes]
        self.names = [list(level) for level in self.names]
        self._parents = _check_levels(self.name, self.depth, self.nodes, self.names, self.ancestor)

    @property
    def n_leaves(self) -> int:
        return self.ancestor.shape[1]

    @property
    def leaves(self) -> list[str]:
        return self.nodes[0]

    def num_classes(self, level: int) -> int:
        return len(self.nodes[self._level(level)])

    def _level(self, level: int) -> int:
        if not 0 <= level <= self.depth:
            raise IndexError(f"tree {self.name!r} has levels 0..{self.depth}, not {level}")
        return level

    def level_labels(self, y, level: int):
        """Leaf labels ``y`` (int array, list or torch tensor) → labels of their level-``level`` ancestors."""
        row = self.ancestor[self._level(level)]
        if type(y).__module__.split(".")[0] == "torch":
            import torch  # only when given tensors: the hierarchy itself needs no torch

            return torch.as_tensor(row, device=y.device)[y]
        return row[np.asarray(y, dtype=np.int64)]

    def parents(self, level: int) -> np.ndarray:
        """Index in ``nodes[level+1]`` of the parent of each node of ``level`` (``level < depth``)."""
        if not 0 <= level < self.depth:
            raise IndexError(f"tree {self.name!r}: parents exist for levels 0..{self.depth - 1}, not {level}")
        return self._parents[level]

    def prompts(self, level: int, template: str = DEFAULT_TEMPLATE) -> list[str]:
        """One prompt per class of ``level``: ``template`` with ``{c}`` replaced by the readable name."""
        if "{c}" not in template:
            raise ValueError(f"template {template!r} has no '{{c}}' placeholder")
        return [template.replace("{c}", name) for name in self.names[self._level(level)]]

    def partitions(self) -> tuple[tuple[int, ...], ...]:
        """Each level's partition of the leaves in a canonical form (blocks numbered by first leaf)."""
        return tuple(tuple(_first_seen(row)[0]) for row in self.ancestor.tolist())

    def restrict(self, leaf_indices: Sequence[int], name: str | None = None) -> "Tree":
        """The same tree over a subset of its leaves (for drawing and inspection)."""
        idx = np.asarray(leaf_indices, dtype=np.int64)
        nodes, names, rows = [], [], []
        for level in range(self.depth + 1):
            row, kept = _first_seen(self.ancestor[level, idx].tolist())
            nodes.append([self.nodes[level][j] for j in kept])
            names.append([self.names[level][j] for j in kept])
            rows.append(row)
        return Tree(name or self.name, self.depth, nodes, names, np.stack(rows), dict(self.provenance))

    def to_json(self) -> dict:
        return {"format": LEVELLED_FORMAT, "name": self.name, "depth": self.depth, "nodes": self.nodes,
                "names": self.names, "ancestor": self.ancestor.tolist(), "provenance": self.provenance}

    def content_hash(self) -> str:
        """sha256 (16 hex digits) of the tree's serialisation: caches and records that depend on a tree
        key on it, so results built from another tree (e.g. another hypernym order) are never reused."""
        from hrvlm.core.storage import config_hash

        return config_hash(self.to_json(), length=16)

    @classmethod
    def from_json(cls, obj: dict) -> "Tree":
        if not isinstance(obj, dict) or obj.get("format") != LEVELLED_FORMAT:
            raise HierarchyError(f"not a levelled tree: expected format {LEVELLED_FORMAT!r}, got "
                                 f"{obj.get('format') if isinstance(obj, dict) else type(obj).__name__!r} "
                                 f"(a parent-map tree file is read with load_tree_file)")
        return cls(obj["name"], int(obj["depth"]), obj["nodes"], obj["names"], np.array(obj["ancestor"]),
                   dict(obj.get("provenance", {})))

    def __eq__(self, other) -> bool:
        return (isinstance(other, Tree) and (self.name, self.depth, self.nodes, self.names, self.provenance)
                == (other.name, other.depth, other.nodes, other.names, other.provenance)
                and np.array_equal(self.ancestor, other.ancestor))

    def __repr__(self) -> str:
        sizes = [len(level) for level in self.nodes]
        return f"Tree({self.name!r}, depth={self.depth}, classes per level={sizes})"


def _first_seen(values) -> tuple[list[int], list]:
    """Renumber ``values`` by order of first appearance: ``(new labels, distinct values in that order)``."""
    index: dict = {}
    return [index.setdefault(v, len(index)) for v in values], list(index)


def _check_levels(name, depth, nodes, names, ancestor) -> list[np.ndarray]:
    """Validate a levelled tree; return the parent index array of each level below the top."""
    if depth < 1:
        raise HierarchyError(f"tree {name!r}: depth must be at least 1, got {depth}")
    if len(nodes) != depth + 1 or len(names) != depth + 1 or ancestor.shape[0] != depth + 1:
        raise HierarchyError(f"tree {name!r}: depth {depth} needs {depth + 1} levels of nodes, names and "
                             f"ancestors; got {len(nodes)}, {len(names)}, {ancestor.shape[0]}")
    n = ancestor.shape[1] if ancestor.ndim == 2 else -1
    if n < 1 or not np.array_equal(ancestor[0], np.arange(n)) or len(nodes[0]) != n:
        raise HierarchyError(f"tree {name!r}: level 0 must list the {n} leaves once each, in order")
    if len(set(nodes[0])) != n:
        raise HierarchyError(f"tree {name!r}: leaf ids repeat: {sorted(x for x in set(nodes[0]) if nodes[0].count(x) > 1)}")
    parents = []
    for level in range(depth + 1):
        if len(names[level]) != len(nodes[level]):
            raise HierarchyError(f"tree {name!r}, level {level}: {len(nodes[level])} nodes but {len(names[level])} names")
        row = ancestor[level]
        if row.min() < 0 or row.max() >= len(nodes[level]):
            raise HierarchyError(f"tree {name!r}, level {level}: ancestor index outside 0..{len(nodes[level]) - 1}")
        empty = np.setdiff1d(np.arange(len(nodes[level])), row)
        if empty.size:
            raise HierarchyError(f"tree {name!r}, level {level}: node {nodes[level][empty[0]]!r} covers no leaf")
        if level < depth:
            parent = np.full(len(nodes[level]), -1, dtype=np.int64)
            parent[row] = ancestor[level + 1]
            clash = np.flatnonzero(parent[row] != ancestor[level + 1])
            if clash.size:
                i = clash[0]
                raise HierarchyError(
                    f"tree {name!r}: node {nodes[level][row[i]]!r} at level {level} has two parents at level "
                    f"{level + 1}: {nodes[level + 1][parent[row[i]]]!r} and {nodes[level + 1][ancestor[level + 1, i]]!r}")
            parents.append(parent)
    return parents


def tree_from_chains(name: str, leaf_ids: Sequence[str], leaf_names: Sequence[str],
                     chains: Sequence[Sequence[str]], readable: Callable[[str], str], depth: int,
                     provenance: dict | None = None) -> Tree:
    """Build a levelled tree from each leaf's ancestor chain (nearest first, up to its top).

    Applies the level rule of the module docstring: cut every chain at the leaves' common root, pad
    short chains with their top node, and let a leaf without ancestors stand for itself.
    """
    if depth < 1:
        raise HierarchyError(f"depth must be at least 1, got {depth}")
    chains = [list(c) for c in chains]
    covered = [c for c in chains if c]
    if covered:  # the common root: the deepest node shared by every (non-empty) chain
        shared = 0
        while shared < min(map(len, covered)) and len({c[-1 - shared] for c in covered}) == 1:
            shared += 1
        if shared:
            chains = [c[: len(c) - shared + 1] if c else c for c in chains]
    columns = []
    for leaf, chain in zip(leaf_ids, chains):
        chain = chain[:depth] if chain else [leaf]
        columns.append([leaf] + [chain[min(l, len(chain)) - 1] for l in range(1, depth + 1)])
    leaf_name = dict(zip(leaf_ids, leaf_names))
    nodes, names, rows = [], [], []
    for level in range(depth + 1):
        row, kept = _first_seen([col[level] for col in columns])
        rows.append(row)
        nodes.append(kept)
        names.append([leaf_name[x] if x in leaf_name else readable(x) for x in kept])
    return Tree(name, depth, nodes, names, np.array(rows), dict(provenance or {}))


def _is_synset(node: str) -> bool:
    parts = node.rsplit(".", 2)
    return len(parts) == 3 and parts[1] in "nvasr" and parts[2].isdigit()


# ---------------------------------------------------------------- WordNet
@functools.lru_cache(maxsize=None)
def _hypernyms(synset_name: str) -> tuple[str, ...]:
    from hrvlm.hierarchy.wordnet import hypernyms, synset

    return tuple(h.name() for h in hypernyms(synset(synset_name)))


@functools.lru_cache(maxsize=None)
def readable_name(node: str) -> str:
    """A synset's first lemma with spaces (``motor_vehicle.n.01`` → ``motor vehicle``); other ids as given."""
    if not _is_synset(node):
        return node
    from hrvlm.hierarchy.wordnet import lemma_name

    return lemma_name(node)


def wordnet_chain(synset_name: str, variant: int = 0) -> list[str]:
    """Ancestors of a synset, nearest first, each node taking its ``(variant mod n)``-th hypernym."""
    chain, node = [], synset_name
    while True:
        options = _hypernyms(node)
        if not options:
            return chain
        node = options[variant % len(options)]
        chain.append(node)


def _synset_name(s) -> str | None:
    if s is None:
        return None
    if isinstance(s, str):
        from hrvlm.hierarchy.wordnet import synset

        return synset(s).name()  # validates, with an error naming the bad name
    return s.name()


def dedupe(trees: Sequence[Tree]) -> list[Tree]:
    """Keep the first of trees that partition the leaves identically at every level."""
    seen, out = set(), []
    for tree in trees:
        key = tree.partitions()
        if key not in seen:
            seen.add(key)
            out.append(tree)
    return out


def wordnet_trees(leaf_synsets: Sequence, depth: int = 5, max_trees: int = 5, leaf_ids: Sequence[str] | None = None,
                  leaf_names: Sequence[str] | None = None, prefix: str = "wordnet") -> list[Tree]:
    """The distinct WordNet trees over the leaves (tree ``k``: every synset's ``(k mod n)``-th hypernym)."""
    synsets = [_synset_name(s) for s in leaf_synsets]
    if not any(synsets):
        return []
    if leaf_ids is None:
        if None in synsets:
            raise HierarchyError("leaves without a synset need leaf_ids (e.g. their class names)")
        leaf_ids = synsets
    leaf_ids = list(leaf_ids)
    leaf_names = list(leaf_names) if leaf_names is not None else [readable_name(x) for x in leaf_ids]
    trees = []
    for k in range(max_trees):
        chains = [wordnet_chain(s, k) if s else [] for s in synsets]
        provenance = {"source": "WordNet 3.0 hypernyms (instance hypernyms included)", "variant": k,
                      "choice": "each synset takes its (variant mod n)-th hypernym, hypernyms ordered by synset offset",
                      "level_rule": LEVEL_RULE}
        trees.append(tree_from_chains(f"{prefix}-{k}", leaf_ids, leaf_names, chains, readable_name, depth, provenance))
    return dedupe(trees)


# ---------------------------------------------------------------- forests
@dataclass(eq=False)
class Forest:
    """Up to ``max_trees`` trees of the same depth over the same leaves (ids in label order)."""

    trees: list[Tree]
    name: str = ""

    def __post_init__(self):
        if not self.trees:
            raise HierarchyError(f"forest {self.name!r} has no tree")
        first = self.trees[0]
        for tree in self.trees[1:]:
            if tree.leaves != first.leaves or tree.depth != first.depth:
                raise HierarchyError(f"forest {self.name!r}: tree {tree.name!r} does not share the leaves and "
                                     f"depth of {first.name!r}")

    @property
    def leaves(self) -> list[str]:
        return self.trees[0].leaves

    @property
    def leaf_names(self) -> list[str]:
        return self.trees[0].names[0]

    @property
    def depth(self) -> int:
        return self.trees[0].depth

    def __len__(self) -> int:
        return len(self.trees)

    def __iter__(self):
        return iter(self.trees)

    def __getitem__(self, i) -> Tree:
        return self.trees[i]

    def to_json(self) -> dict:
        return {"format": FOREST_FORMAT, "name": self.name, "trees": [t.to_json() for t in self.trees]}

    @classmethod
    def from_json(cls, obj: dict) -> "Forest":
        if not isinstance(obj, dict) or obj.get("format") != FOREST_FORMAT:
            raise HierarchyError(f"not a forest: expected format {FOREST_FORMAT!r}")
        return cls([Tree.from_json(t) for t in obj["trees"]], obj.get("name", ""))

    def __eq__(self, other) -> bool:
        return isinstance(other, Forest) and self.name == other.name and self.trees == other.trees

    def __repr__(self) -> str:
        return f"Forest({self.name!r}, {len(self.leaves)} leaves, trees={[t.name for t in self.trees]})"


def build_forest(leaf_synsets: Sequence, depth: int = 5, max_trees: int = 5, leaf_ids: Sequence[str] | None = None,
                 leaf_names: Sequence[str] | None = None, name: str = "wordnet") -> Forest:
    """A forest of WordNet trees over leaves given as synsets (names like ``"cat.n.01"`` or objects)."""
    trees = wordnet_trees(leaf_synsets, depth, max_trees, leaf_ids, leaf_names)
    if not trees:
        raise HierarchyError(f"forest {name!r}: no leaf has a WordNet synset")
    return Forest(trees, name)


# ---------------------------------------------------------------- tree files
def _no_duplicate_keys(pairs):
    out = {}
    for key, value in pairs:
        if key in out:
            raise HierarchyError(f"{key!r} is given twice ({out[key]!r} and {value!r}); in 'parents' that is two "
                                 f"parents in one tree, and a tree gives each node exactly one parent")
        out[key] = value
    return out


def read_tree_file(path) -> dict:
    """Parse and check a ``hrvlm-tree/1`` file (see the module docstring); errors name the problem."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tree file {path} does not exist (or is not a file)")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=_no_duplicate_keys)
    except HierarchyError as err:
        raise HierarchyError(f"{path}: {err}") from None
    except UnicodeDecodeError:
        raise HierarchyError(f"{path}: not a UTF-8 text file; a tree file is JSON (format {TREE_FORMAT})") from None
    except json.JSONDecodeError as err:
        raise HierarchyError(f"{path}: not valid JSON ({err})") from None
    try:
        check_tree_spec(obj)
    except HierarchyError as err:
        raise HierarchyError(f"{path}: {err}") from None
    return obj


def check_tree_spec(obj: dict) -> None:
    """Check a parent-map tree: format, fields, one parent per node, no cycle, leaves are leaves."""
    if not isinstance(obj, dict) or obj.get("format") != TREE_FORMAT:
        raise HierarchyError(f"expected a JSON object with \"format\": {TREE_FORMAT!r}")
    for key in ("name", "leaves", "parents"):
        if key not in obj:
            raise HierarchyError(f"missing field {key!r} (a tree file has name, leaves, parents, provenance)")
    leaves, parents = obj["leaves"], obj["parents"]
    if not isinstance(leaves, list) or not leaves or not all(isinstance(x, str) for x in leaves):
        raise HierarchyError("'leaves' must be a non-empty list of class names (strings)")
    if len(set(leaves)) != len(leaves):
        raise HierarchyError("'leaves' must be a list of distinct class names")
    if not isinstance(parents, dict):
        raise HierarchyError("'parents' must map each node to its parent")
    for key in ("names", "provenance"):
        if not isinstance(obj.get(key, {}), dict):
            raise HierarchyError(f"{key!r} must be a JSON object (node → readable name / field → value), "
                                 f"not a {type(obj[key]).__name__}")
    if not all(isinstance(v, str) for v in obj.get("names", {}).values()):
        raise HierarchyError("'names' must map nodes to readable names (strings)")
    for child, parent in parents.items():
        if not isinstance(parent, str):
            raise HierarchyError(f"node {child!r} has parent {parent!r}: a tree gives each node exactly one "
                                 f"parent, a string (two parents belong in two trees)")
    orphans = [leaf for leaf in leaves if leaf not in parents]
    if orphans and len(leaves) > 1:
        raise HierarchyError(f"leaf {orphans[0]!r} has no parent ({len(orphans)} leaves lack one)")
    leaf_set = set(leaves)
    for child, parent in parents.items():
        if parent in leaf_set:
            raise HierarchyError(f"leaf {parent!r} has a child ({child!r}): leaves must be leaves")
    for start in parents:
        seen, node = [start], parents[start]
        while node in parents:
            if node in seen:
                loop = seen[seen.index(node):] + [node]
                raise HierarchyError(f"cycle: {' → '.join(loop)}")
            seen.append(node)
            node = parents[node]


def load_tree_file(path, depth: int = 5, leaves: Sequence[str] | None = None) -> Tree:
    """Read a tree file and level it at ``depth``; with ``leaves`` (the dataset's class names in label
    order) the file's leaves must be exactly those, and the tree follows their order."""
    obj = read_tree_file(path)
    return tree_from_spec(obj, depth, leaves, where=str(path))


def tree_from_spec(obj: dict, depth: int = 5, leaves: Sequence[str] | None = None,
                   leaf_names: Sequence[str] | None = None, where: str = "tree") -> Tree:
    """Level a parent-map tree (already parsed) at ``depth``, over ``leaves`` in that order if given;
    ``leaf_names`` are the leaves' readable names (default: the leaf ids)."""
    check_tree_spec(obj)
    if leaves is not None:
        leaves = list(leaves)
        missing = [x for x in leaves if x not in set(obj["leaves"])]
        extra = [x for x in obj["leaves"] if x not in set(leaves)]
        if missing:
            raise HierarchyError(f"{where}: missing leaf {missing[0]!r} ({len(missing)} of the dataset's classes are not in the tree)")
        if extra:
            raise HierarchyError(f"{where}: leaf {extra[0]!r} is not a class of the dataset")
    else:
        leaves = list(obj["leaves"])
    parents, names = obj["parents"], obj.get("names", {})
    chains = []
    for leaf in leaves:
        chain, node = [], leaf
        while node in parents:
            node = parents[node]
            chain.append(node)
        chains.append(chain)
    provenance = {**obj.get("provenance", {}), "level_rule": LEVEL_RULE}
    if obj.get("dataset"):
        provenance.setdefault("dataset", obj["dataset"])
    leaf_names = list(leaf_names) if leaf_names is not None else [names.get(x, x) for x in leaves]
    return tree_from_chains(obj["name"], leaves, leaf_names, chains, lambda x: names.get(x, x), depth, provenance)


def dataset_tree_files(dataset: str) -> list[Path]:
    """Tree files in ``resources/trees`` that declare ``"dataset": dataset`` or list it in ``"datasets"``,
    sorted by file name."""
    out = []
    for path in sorted(TREE_DIR.glob("*.json")):
        obj = json.loads(path.read_text())
        if obj.get("dataset") == dataset or dataset in obj.get("datasets", ()):
            out.append(path)
    return out


def restrict_spec(obj: dict, leaves: Sequence[str]) -> dict:
    """A parent-map tree keeping only ``leaves`` and the nodes on their chains (a multi-dataset file's
    tree for one dataset); leaves it lacks are reported by :func:`tree_from_spec`."""
    keep, parents = set(), obj["parents"]
    for leaf in leaves:
        node = leaf
        while node in parents and node not in keep:
            keep.add(node)
            node = parents[node]
    return {**obj, "leaves": [x for x in obj["leaves"] if x in set(leaves)],
            "parents": {k: v for k, v in parents.items() if k in keep}}


# ---------------------------------------------------------------- datasets
def synset_table(dataset: str) -> dict | None:
    """The versioned class name → synset table of a dataset, or None when it has none."""
    path = SYNSET_DIR / f"{dataset}.json"
    return json.loads(path.read_text()) if path.is_file() else None


@functools.lru_cache(maxsize=None)
def dataset_leaves(dataset: str) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str | None, ...], str]:
    """``(leaf ids, readable names, synset names or None, where the synsets come from)`` of a dataset.

    Leaf ids are the class names, or the wnids where the class-name file has them (ImageNet's readable
    names repeat).  Synsets come from, in order: a ``"synsets"`` list in the class-name file, its
    ``"wnids"``, or the table ``resources/synsets/<dataset>.json``.
    """
    from hrvlm.hierarchy.wordnet import synset_from_wnid

    info = classname_file(dataset)
    names = list(info["classnames"])
    if "synsets" in info:
        synsets, source = [_synset_name(s) if s else None for s in info["synsets"]], "classnames file 'synsets'"
        ids = names
    elif "wnids" in info:
        synsets, source, ids = [synset_from_wnid(w).name() for w in info["wnids"]], "wnids", list(info["wnids"])
    else:
        table = synset_table(dataset)
        if table is None:
            synsets, source = [None] * len(names), "none"
        else:
            unknown = [c for c in names if c not in table["synsets"]]
            if unknown:
                raise HierarchyError(f"synset table of {dataset!r} lacks class {unknown[0]!r}; every class needs an "
                                     f"entry (a synset name or null with a reason)")
            synsets = [_synset_name(table["synsets"][c]) if table["synsets"][c] else None for c in names]
            source = f"synset table v{table.get('version', '?')}"
        ids = names
    if len(synsets) != len(names) or len(ids) != len(names):
        raise HierarchyError(f"{dataset}: {len(names)} class names but {len(synsets)} synsets / {len(ids)} ids")
    return tuple(ids), tuple(names), tuple(synsets), source


@functools.lru_cache(maxsize=None)
def forest_for_dataset(name: str, depth: int = 5, max_trees: int = 5) -> Forest:
    """The forest of a dataset (names as in the registry): its WordNet trees and its tree files."""
    if max_trees < 1:
        raise ValueError(f"max_trees must be at least 1, got {max_trees}")
    ids, names, synsets, _ = dataset_leaves(name)
    wn = wordnet_trees(synsets, depth, max_trees, ids, names, prefix=f"{name}/wordnet")
    paths = dataset_tree_files(name)
    specs = [read_tree_file(p) for p in paths]
    specs = [restrict_spec(spec, ids) if "datasets" in spec else spec for spec in specs]
    files = [tree_from_spec(spec, depth, ids, names, str(p)) for spec, p in zip(specs, paths)]
    for tree in files:
        tree.name = f"{name}/{tree.name}"
    primary = [t for t, spec in zip(files, specs) if spec.get("primary")]
    files = [t for t, spec in zip(files, specs) if not spec.get("primary")]
    coverage_fraction = sum(s is not None for s in synsets) / len(synsets)
    trees = dedupe(primary + (wn + files if coverage_fraction >= 0.5 else files + wn))
    if not trees:
        raise HierarchyError(f"no hierarchy for {name!r}: none of its classes is in WordNet and no tree file "
                             f"declares it; add resources/trees/<name>.json (format {TREE_FORMAT})")
    return Forest(trees[:max_trees], name)


def hnsa_negatives(tree: Tree, level: int) -> "HNSANegatives":
    """HNSA negatives of every class ``c`` of ``level``: the classes of levels ``level-1`` and
    ``level+1`` that share no edge with ``c`` (not its children, not its parent, not ``c`` itself
    repeated at another level).  Masks are ``[n_level, n_other]`` booleans; a missing level gives
    a ``[n_level, 0]`` mask."""
    tree._level(level)
    here = np.array(tree.nodes[level], dtype=object)
    n = len(here)
    if level > 0:
        below = np.array(tree.nodes[level - 1], dtype=object)
        lower = tree.parents(level - 1)[None, :] != np.arange(n)[:, None]
        lower &= here[:, None] != below[None, :]
    else:
        lower = np.zeros((n, 0), dtype=bool)
    if level < tree.depth:
        above = np.array(tree.nodes[level + 1], dtype=object)
        upper = tree.parents(level)[:, None] != np.arange(len(above))[None, :]
        upper &= here[:, None] != above[None, :]
    else:
        upper = np.zeros((n, 0), dtype=bool)
    return HNSANegatives(level, np.asarray(lower, dtype=bool), np.asarray(upper, dtype=bool))


@dataclass(frozen=True)
class HNSANegatives:
    """``lower[c, k]``: class ``k`` of level ``level-1`` is a negative of class ``c``; ``upper`` likewise
    for level ``level+1``."""

    level: int
    lower: np.ndarray
    upper: np.ndarray

    def of(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        """Indices of class ``c``'s negatives at the level below and the level above."""
        return np.flatnonzero(self.lower[c]), np.flatnonzero(self.upper[c])


# ---------------------------------------------------------------- reports
def coverage(dataset: str) -> dict:
    """WordNet coverage of a dataset: counts, fraction, source, and the classes left out with reasons."""
    ids, names, synsets, source = dataset_leaves(dataset)
    table = synset_table(dataset) or {}
    reasons = table.get("reasons", {})
    missing = {n: reasons.get(n, "no synset") for n, s in zip(names, synsets) if s is None}
    return {"dataset": dataset, "classes": len(names), "in_wordnet": len(names) - len(missing),
            "coverage": (len(names) - len(missing)) / len(names), "source": source, "missing": missing}


def depth_stats(dataset: str, depth: int = 5, max_trees: int = 5) -> dict:
    """Depth statistics of a dataset's leaves and forest: WordNet depth of the leaves (first-hypernym
    chain length to ``entity``), trees by kind, classes per level of the first tree, padded leaves."""
    _, _, synsets, _ = dataset_leaves(dataset)
    forest = forest_for_dataset(dataset, depth, max_trees)
    wn_depths = [len(wordnet_chain(s)) for s in synsets if s]
    first = forest.trees[0]
    top, below = (np.array(first.nodes[l], dtype=object)[first.ancestor[l]] for l in (first.depth, first.depth - 1))
    padded = int((top == below).sum())  # leaves whose chain ran out before level L
    return {"dataset": dataset,
            "wordnet_depth_min": min(wn_depths, default=np.nan),
            "wordnet_depth_mean": float(np.mean(wn_depths)) if wn_depths else np.nan,
            "wordnet_depth_max": max(wn_depths, default=np.nan),
            "trees": len(forest), "wordnet_trees": sum("/wordnet-" in t.name for t in forest),
            "file_trees": sum("/wordnet-" not in t.name for t in forest),
            "classes_per_level": "-".join(str(len(level)) for level in first.nodes),
            "padded_leaves": padded}


def depth_rules(tree: Tree, min_levels: int = 3, min_classes: int = 4) -> list[str]:
    """What keeps ``tree`` from being a testbed for superclass attacks (empty: nothing): fewer than
    ``min_levels`` superclass levels with at least ``min_classes`` classes, a node at two levels, a leaf
    that is also an inner node."""
    problems = []
    rich = [level for level in range(1, tree.depth + 1) if tree.num_classes(level) >= min_classes]
    if len(rich) < min_levels:
        problems.append(f"{len(rich)} superclass levels with >= {min_classes} classes (levels {rich}); "
                        f"need {min_levels}")
    seen: dict[str, int] = {}
    for level in range(tree.depth + 1):
        for node in tree.nodes[level]:
            if node in seen:
                kind = "leaf" if seen[node] == 0 else "node"
                problems.append(f"{kind} {node!r} is at levels {seen[node]} and {level}")
            else:
                seen[node] = level
    return problems


def coverage_table(datasets: Sequence[str] | None = None, depth: int = 5, max_trees: int = 5):
    """A pandas table with one row per dataset: coverage and depth statistics."""
    import pandas as pd

    rows = []
    for dataset in datasets or REAL_DATASETS:
        row = {k: v for k, v in coverage(dataset).items() if k != "missing"}
        row.update({k: v for k, v in depth_stats(dataset, depth, max_trees).items() if k != "dataset"})
        rows.append(row)
    return pd.DataFrame(rows).set_index("dataset")
