"""Per-level clean and robust zero-shot accuracy, resumable, with every number's provenance.

For each level ``l`` of a dataset's class tree (level 0 = the dataset's own classes):

* **clean**: accuracy of the level-``l`` zero-shot classifier (prompts from the level-``l`` names);
* **robust**: its accuracy on adversarial images made *against it* with the level-``l`` labels (for
  ``l > 0`` this is the paper's superclass attack);
* **transfer** (``l > 0``): the leaf classifier on those superclass adversaries: leaf accuracy, and the
  success rate = the fraction of images the leaf classifier gets right clean but wrong adversarially.

Work is split into chunks, one per (dataset, split, level, attack); each finished chunk is appended to
a :class:`~hrvlm.records.RecordStore` at once, and a chunk whose key is already stored is not
recomputed, so an interrupted evaluation resumes where it stopped without duplicates.  Each chunk
re-seeds torch with ``seed``, so resumed and uninterrupted runs give the same numbers.
"""
from __future__ import annotations

import argparse
import datetime
import functools
import inspect
import math
import time
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from . import __version__
from .attacks import ATTACKS, HierarchicalClassifier, superclass_attack, transfer_outcome, transfer_summary
from .data.real import DEFAULT_RESOLUTION, RESOLUTION_POLICIES, apply_resolution, check_resolution
from .data.registry import fixed_subset, get_spec
from .records import SCHEMA, RecordStore, encode_bits, record_key, records_to_frame
from .storage import cache_dir, config_hash, file_sha256
from .zeroshot import class_embeddings, load_templates

RECORD_LIBRARIES = ("torch", "torchvision", "open_clip_torch", "torchattacks", "numpy")


@functools.lru_cache(maxsize=32)
def _sha256(path: str, mtime: float, size: int) -> str:
    return file_sha256(path)


def checkpoint_id(model) -> str:
    """Identity of a :func:`hrvlm.models.load_clip` model's weights: ``sha256:<hex>`` of its weights
    file (local checkpoints and the mini world's), ``openclip:<tag>``, or ``random-init``.  Models
    fine-tuned in memory should pass ``checkpoint=`` to :func:`evaluate` instead."""
    from . import models

    tag = getattr(model, "pretrained", None)
    if tag is None:
        return "random-init"
    if tag in models.LOCAL_PRETRAINED:
        path = models._resolve_local(tag, model.name)
    elif Path(tag).is_file():
        path = Path(tag)
    else:
        return f"openclip:{tag}"
    stat = Path(path).stat()
    return "sha256:" + _sha256(str(path), stat.st_mtime, stat.st_size)


def _environment(device: torch.device) -> dict:
    from .environment import device_name, git_commit, library_versions

    return {"code": {"hrvlm": __version__, "git": git_commit()}, "libraries": library_versions(RECORD_LIBRARIES),
            "device": device_name(device)}


def default_split(spec) -> str:
    """The split a dataset is evaluated on: ``test``, else ``val``, else its first."""
    return next((s for s in ("test", "val") if s in spec.splits), spec.splits[0])


def _accepted(factory, options: dict) -> dict:
    """The ``options`` that ``factory`` accepts (mini-world factories take no ``resolution``)."""
    params = inspect.signature(factory).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return options
    return {k: v for k, v in options.items() if k in params}


def _subset_ids(dataset: str, split: str, size: int, n: int | None, subset) -> np.ndarray:
    if subset is None:
        return fixed_subset(dataset, size, n, split)
    ids = np.unique(np.asarray(subset, dtype=np.int64))
    if ids.size == 0 or ids[0] < 0 or ids[-1] >= size:
        raise ValueError(f"subset ids must be non-empty and in [0, {size}) for {dataset}/{split}")
    return ids


def _load_tree(spec, tree, depth: int):
    if not isinstance(tree, int):
        return tree
    if spec.hierarchy is None:
        raise ValueError(f"dataset {spec.name!r} has no class hierarchy: only level 0 can be evaluated")
    from .hierarchy import forest_for_dataset

    trees = forest_for_dataset(spec.hierarchy, depth=depth).trees
    if not 0 <= tree < len(trees):
        raise ValueError(f"{spec.name}: tree index {tree} out of range; its forest has {len(trees)} trees")
    return trees[tree]


def _attack_list(attacks) -> list:
    attacks = [] if attacks is None else [attacks] if callable(attacks) else list(attacks)
    for attack in attacks:
        if not (callable(attack) and callable(getattr(attack, "config", None))):
            raise TypeError(f"{attack!r} is not an attack: use hrvlm.attacks.build_attack(name, eps, ...)")
    return attacks


def _rate(correct: torch.Tensor) -> float:
    return float(correct.float().mean())


def evaluate(model, tokenizer, dataset: str, attacks=(), levels: Sequence[int] = (0,), n: int | None = None, *,
             subset=None, split: str | None = None, store=None, method: str = "clip",
             checkpoint: str | None = None, templates: str | None = None,
             resolution: str = DEFAULT_RESOLUTION, tree=0, depth: int = 5, batch_size: int = 64,
             seed: int = 0, num_workers: int = 0, dataset_options: dict | None = None,
             progress: bool = True) -> list[dict]:
    """Evaluate ``model`` (a :class:`~hrvlm.models.PixelCLIP`) zero-shot on registered ``dataset``.

    ``attacks``: attack objects (:func:`hrvlm.attacks.build_attack`), one or a list; empty for clean
    accuracy only.  ``levels``: tree levels (0 = leaves).  ``n`` images of the fixed subset
    (:func:`~hrvlm.data.fixed_subset`; ``None`` = all) or explicit ``subset`` ids.  ``split`` defaults
    to :func:`default_split`.  ``store``: a records file (resumable) or ``None``.
    ``method``: the training method that produced the weights (``clip``: none).  ``checkpoint``:
    weights identity (default :func:`checkpoint_id`).  ``templates``: a template set (default the
    dataset's).  ``resolution``: :data:`~hrvlm.data.real.RESOLUTION_POLICIES`.  ``tree``: index into
    the dataset's forest of depth ``depth``, or a ``hrvlm.hierarchy.Tree``.

    Returns one record per (level, attack) chunk (see :mod:`hrvlm.records`), stored or new.
    """
    spec = get_spec(dataset)
    split = split or default_split(spec)
    check_resolution(resolution)
    attacks = _attack_list(attacks)
    levels = sorted({int(level) for level in levels})
    if not levels or levels[0] < 0:
        raise ValueError(f"levels must be non-negative integers, got {levels}")
    device = next(model.parameters()).device
    size = model.image_size

    options = {**spec.options, **(dataset_options or {})}
    data = spec.factory(split=split, **_accepted(spec.factory, {**options, "image_size": size, "resolution": resolution}))
    ids = _subset_ids(dataset, split, len(data), n, subset)
    hierarchy = _load_tree(spec, tree, depth) if levels[-1] > 0 else None
    if hierarchy is not None:
        if levels[-1] > hierarchy.depth:
            raise ValueError(f"level {levels[-1]} exceeds the depth {hierarchy.depth} of tree {hierarchy.name!r}")
        if len(hierarchy.nodes[0]) != spec.num_classes:
            raise ValueError(f"tree {hierarchy.name!r} has {len(hierarchy.nodes[0])} leaves but {dataset} "
                             f"has {spec.num_classes} classes")
    template_set = templates or spec.templates
    prompts = load_templates(template_set)
    names = [list(spec.classnames)] + [list(hierarchy.names[lv]) for lv in range(1, levels[-1] + 1)]

    base = {
        "schema": SCHEMA, "hrvlm_version": __version__, "method": method, "model": model.name,
        "checkpoint": checkpoint or checkpoint_id(model), "dataset": dataset, "split": split,
        "dataset_options": {k: v for k, v in options.items() if k not in ("root", "download")},
        "dataset_size": len(data), "n": int(ids.size), "subset_ids_hash": config_hash(ids.tolist(), length=16),
        "tree": None if hierarchy is None else hierarchy.name,
        "tree_hash": None if hierarchy is None else hierarchy.content_hash(), "resolution": resolution,
        "templates": template_set, "templates_hash": config_hash(prompts, length=16), "seed": int(seed),
        "batch_size": int(batch_size),
    }
    store = RecordStore(store) if store is not None and not isinstance(store, RecordStore) else store
    chunks = [(level, attack) for level in levels for attack in (attacks or [None])]
    provenance = [{**base, "level": level, "classnames_hash": config_hash(names[level], length=16),
                   "attack": None if attack is None else attack.config()} for level, attack in chunks]
    results = [None if store is None else store.get(record_key(p)) for p in provenance]
    if all(r is not None for r in results):
        return results

    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(data, ids.tolist()), batch_size=batch_size,
                                         shuffle=False, num_workers=num_workers)
    input_size = tuple(data[int(ids[0])][0].shape[-2:])
    encoder, prepare = apply_resolution(model, input_size, resolution)
    classifier = HierarchicalClassifier(encoder, [class_embeddings(encoder, tokenizer, c, prompts) for c in names])
    for i, (level, attack) in enumerate(chunks):
        if results[i] is not None:
            continue
        record = {**provenance[i], "num_classes": classifier.level(level).num_classes,
                  "input_size": list(input_size)}
        record.update(_run_chunk(classifier, hierarchy, loader, prepare, level, attack, spec, seed, device, progress))
        record.update(_environment(device), created=datetime.datetime.now(datetime.timezone.utc).isoformat())
        if store is not None:
            store.append(record)
            record = store.get(record_key(record))
        results[i] = record
    return results


def _run_chunk(classifier, tree, loader, prepare, level, attack, spec, seed, device, progress) -> dict:
    """Clean (and adversarial, and leaf-transfer) correctness of every image for one (level, attack)."""
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    start = time.perf_counter()
    transfer = attack is not None and level > 0
    out = {k: [] for k in ("clean", "robust", "leaf_clean", "leaf_robust")}
    head = classifier.level(level)
    name = "clean" if attack is None else attack.config()["name"]
    for images, labels in tqdm(loader, desc=f"{spec.name} L{level} {name}", disable=not progress, leave=False):
        x, labels = prepare(images.to(device)), labels.to(device=device, dtype=torch.long)
        if int(labels.max()) >= spec.num_classes:
            raise ValueError(f"{spec.name}: label {int(labels.max())} but only {spec.num_classes} class names; "
                             f"the class-name file does not match the dataset")
        if level == 0:
            target = labels
            adv = None if attack is None else attack(head, x, labels)
        elif attack is None:
            adv, target = None, torch.as_tensor(tree.level_labels(labels, level), dtype=torch.long, device=device)
        else:
            adv, target = superclass_attack(attack, classifier, tree, level, x, labels)
        with torch.no_grad():
            out["clean"].append(head(x).argmax(1) == target)
            if adv is not None:
                out["robust"].append(head(adv).argmax(1) == target)
        if transfer:
            leaf = transfer_outcome(classifier.level(0), x, adv, labels)
            out["leaf_clean"].append(leaf["clean_correct"])
            out["leaf_robust"].append(leaf["adv_correct"])
    got = {k: torch.cat(v).cpu() for k, v in out.items() if v}
    result = {"attack_size": list(x.shape[-2:]), "model_image_size": classifier.model.image_size,
              "clean_acc": _rate(got["clean"]), "clean_correct": encode_bits(got["clean"].numpy()),
              "robust_acc": None, "robust_correct": None, "leaf_clean_acc": None, "leaf_robust_acc": None,
              "transfer_success_rate": None, "leaf_clean_correct": None, "leaf_robust_correct": None}
    if attack is not None:
        result.update(robust_acc=_rate(got["robust"]), robust_correct=encode_bits(got["robust"].numpy()))
    if transfer:
        summary = transfer_summary(got["leaf_clean"], got["leaf_robust"])
        result.update(leaf_clean_acc=summary["clean_accuracy"], leaf_robust_acc=summary["accuracy"],
                      transfer_success_rate=None if math.isnan(summary["success_rate"]) else summary["success_rate"],
                      leaf_clean_correct=encode_bits(got["leaf_clean"].numpy()),
                      leaf_robust_correct=encode_bits(got["leaf_robust"].numpy()))
    result["wall_time_s"] = time.perf_counter() - start
    return result


# ------------------------------------------------------------------------------------------ CLI
def parse_eps(text: str) -> float:
    """``"1/255"``, ``"0.0039"`` → a float in [0, 1] (pixel units)."""
    try:
        value = float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"cannot read eps {text!r}: write e.g. 1/255 or 0.0039") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"eps {text!r} = {value:g} is outside [0, 1]: eps is in [0, 1] pixel "
                                         f"units, so write 1/255 for the usual '1/255' budget, not 1")
    return value


def _csv(kind):
    def parse(text: str):
        return [kind(t) for t in text.split(",") if t.strip()]
    return parse


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="hrvlm-tiny", help="open_clip / hrvlm model config")
    parser.add_argument("--pretrained", default=None, help="'mini', an open_clip tag or a checkpoint file")
    parser.add_argument("--method", default="clip", help="training method of the weights (for the records)")
    parser.add_argument("--datasets", type=_csv(str), required=True, help="comma-separated registered names")
    parser.add_argument("--split", default=None, help="default: each dataset's evaluation split")
    parser.add_argument("--attack", type=_csv(str), default=["pgd"],
                        help=f"comma-separated attack names ({', '.join(ATTACKS)}), or 'none' for clean only")
    parser.add_argument("--eps", type=_csv(parse_eps), default=[1 / 255], help="comma-separated, e.g. 1/255,4/255")
    parser.add_argument("--norm", default="linf", choices=["linf", "l2"])
    parser.add_argument("--steps", type=int, default=None, help="default: each attack's own")
    parser.add_argument("--step-size", type=parse_eps, default=None,
                        help="pgd, mpgd and cw only (default eps/4); an error with apgd-*/autoattack*, which adapt "
                             "their step size: evaluate those in a separate call")
    parser.add_argument("--restarts", type=int, default=None, help="default: each attack's own")
    parser.add_argument("--n", type=int, default=None, help="images per dataset (fixed subset); default all")
    parser.add_argument("--levels", type=_csv(int), default=[0], help="tree levels, e.g. 0,1,2")
    parser.add_argument("--tree", type=int, default=0, help="which tree of the dataset's forest")
    parser.add_argument("--depth", type=int, default=5, help="depth of the dataset's forest")
    parser.add_argument("--templates", default=None, help="template set (default: each dataset's)")
    parser.add_argument("--resolution", choices=RESOLUTION_POLICIES, default=DEFAULT_RESOLUTION)
    parser.add_argument("--profile", default=None, help="dataset profile option (mini world: smoke|mini)")
    parser.add_argument("--root", default=None, help="data root of real datasets (default $HRVLM_DATA)")
    parser.add_argument("--store", default=None, help="records file (default <cache>/records/results.jsonl)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--num-workers", type=int, default=0)


def build_attacks(names: Sequence[str], eps_values: Sequence[float], norm: str = "linf", **settings) -> list:
    """Every (name, ε) combination through :func:`hrvlm.attacks.build_attack`; 'none' gives none.

    ``settings`` that are ``None`` are left to each attack's default; the others go to every attack, and
    one that an attack does not take (e.g. ``step_size`` for APGD/AutoAttack) is a ``ValueError`` rather
    than being dropped silently, so a recorded run is always the run that was asked for.
    """
    from .attacks import build_attack

    settings = {k: v for k, v in settings.items() if v is not None}
    return [build_attack(name, eps, norm=norm, **settings) for name in names if name != "none" for eps in eps_values]


def run(args: argparse.Namespace) -> int:
    from .models import load_clip

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    attacks = build_attacks(args.attack, args.eps, args.norm, steps=args.steps, step_size=args.step_size,
                            restarts=args.restarts)
    model, _, tokenizer = load_clip(args.model, args.pretrained, device=device)
    store = Path(args.store) if args.store else cache_dir("records") / "results.jsonl"
    options = {k: v for k, v in (("profile", args.profile), ("root", args.root)) if v is not None}
    records = []
    for name in args.datasets:
        records += evaluate(model, tokenizer, name, attacks, args.levels, args.n, split=args.split, store=store,
                            method=args.method, templates=args.templates, resolution=args.resolution,
                            tree=args.tree, depth=args.depth, batch_size=args.batch_size, seed=args.seed,
                            num_workers=args.num_workers, dataset_options=options)
    table = records_to_frame(records)
    columns = [c for c in ("dataset", "level", "attack_name", "attack_eps", "n", "clean_acc", "robust_acc",
                           "leaf_robust_acc", "transfer_success_rate") if c in table]
    print(table[columns].to_string(index=False))
    print(f"records: {store}")
    return 0
