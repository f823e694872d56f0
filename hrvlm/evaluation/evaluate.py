"""Per-level clean and robust zero-shot accuracy, resumable, with every number's provenance.

For each level ``l`` of a dataset's class tree (level 0 = the dataset's own classes):

* **clean**: accuracy of the level-``l`` zero-shot classifier (prompts from the level-``l`` names);
* **robust**: its accuracy on adversarial images made *against it* with the level-``l`` labels (for
  ``l > 0`` this is the paper's superclass attack);
* **transfer** (``l > 0``): the leaf classifier on those superclass adversaries: leaf accuracy, and the
  success rate = the fraction of images the leaf classifier gets right clean but wrong adversarially.

Work is split into chunks, one per (dataset, split, level, attack); each finished chunk is appended to
a :class:`~hrvlm.evaluation.records.RecordStore` at once, and a chunk whose key is already stored is not
recomputed, so an interrupted evaluation resumes where it stopped without duplicates.  Each chunk
re-seeds torch with ``seed``, so resumed and uninterrupted runs give the same numbers.
"""
from __future__ import annotations

import argparse
import datetime
import math
import os
import time
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from hrvlm import __version__
from hrvlm.attacks import ATTACKS, superclass_attack, transfer_outcome, transfer_summary
from hrvlm.attacks.threat import check_eps_budget, read_eps
from hrvlm.data.real import (DEFAULT_RESOLUTION, RESOLUTION_POLICIES, apply_resolution, check_resolution,
                        labelled_options)
from hrvlm.data.registry import default_num_workers, fixed_subset, get_dataset, get_spec
from hrvlm.heads import build_head
from hrvlm.core.environment import computed_on
from hrvlm.core.precision import CHOICES as PRECISION_CHOICES, precision_policy
from hrvlm.evaluation.records import SCHEMA, RecordStore, default_store, encode_bits, record_key, records_to_frame
from hrvlm.core.storage import check_writable_folder, config_hash
from hrvlm.models.weights import state_digest
from hrvlm.data.templates import load_templates

# Under torchrun the ranks wait at a barrier for the slowest rank's share of the datasets (AutoAttack on a
# whole dataset takes hours); a rank that dies ends the job through torchrun, not through this timeout.
RANKS_WAIT = datetime.timedelta(days=1)


def checkpoint_id(model) -> str:
    """Identity of the weights as evaluated: :func:`hrvlm.models.weights.state_digest` of the model's state
    (never its ``pretrained`` tag, which a fine-tuned model still carries)."""
    return state_digest(getattr(model, "clip", model))


def default_split(spec) -> str:
    """The split a dataset is evaluated on: ``test``, else ``val``, else its first."""
    return next((s for s in ("test", "val") if s in spec.splits), spec.splits[0])


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


def check_request(dataset: str, levels: Sequence[int] = (0,), attacks=(), n: int | None = None, *,
                  split: str | None = None, store=None, templates: str | None = None,
                  resolution: str = DEFAULT_RESOLUTION, tree=0, depth: int = 5, batch_size: int = 64,
                  num_workers: int | None = None, dataset_options: dict | None = None):
    """Check a whole :func:`evaluate` request before any model or data is loaded; raise a one-line
    ``ValueError``/``KeyError``/``FileNotFoundError`` saying what to change.

    Checks the dataset name, split and options (a real dataset's files are present), the levels against the
    dataset's tree (depth, single-class levels when attacked), the sizes, the template set, the
    resolution policy and the records store path.  Attack settings are checked by :func:`check_attacks`
    (the CLI calls both), which runs the attacks, so not on every call here.  Returns ``(spec, split, levels, tree)``:
    the registered spec, the split, the sorted levels and the tree (``None`` when only level 0).
    """
    from hrvlm.data.real import REAL, require_files
    from hrvlm.evaluation.records import check_store_path

    if not isinstance(dataset, str) or not dataset.strip():
        raise ValueError(f"no dataset named: give registered dataset names, e.g. mini-heldout (got {dataset!r})")
    spec = get_spec(dataset)
    split = split or default_split(spec)
    if split not in spec.splits:
        raise ValueError(f"dataset {dataset!r} has no split {split!r}; its splits are {list(spec.splits)}")
    check_resolution(resolution)
    attacks = _attack_list(attacks)
    levels = sorted({int(level) for level in levels})
    if not levels or levels[0] < 0:
        raise ValueError(f"levels must be non-negative integers (0 = the dataset's classes), got {levels}")
    for name, value in (("n", n), ("batch_size", batch_size), ("depth", depth)):
        _positive(name, value)
    _positive("num_workers", num_workers, allow_zero=True)
    load_templates(templates or spec.templates)
    if store is not None and not hasattr(store, "append"):
        check_writable_store(check_store_path(store))
    options = labelled_options(dataset, {**spec.options, **(dataset_options or {})})
    if dataset in REAL and spec.world == "real":
        require_files(dataset, split, options.get("root"))
    elif spec.world == "mini":  # generated lazily: building it checks its options (size, n) in milliseconds
        get_dataset(dataset, split, **options)
    hierarchy = _load_tree(spec, tree, depth) if levels[-1] > 0 else None
    if hierarchy is not None:
        check_levels(hierarchy, levels, attacked=bool(attacks))
        if len(hierarchy.nodes[0]) != spec.num_classes:
            raise ValueError(f"tree {hierarchy.name!r} has {len(hierarchy.nodes[0])} leaves but {dataset} "
                             f"has {spec.num_classes} classes")
    return spec, split, levels, hierarchy


def check_writable_store(path: Path) -> Path:
    """The records store ``path`` can be appended to (before any work, not after the first chunk)."""
    hint = "; give a store in a writable folder (hrvlm eval --store FILE, evaluate(store=FILE))"
    if path.is_file() and not os.access(path, os.W_OK):
        raise PermissionError(f"records store {path} is read-only{hint}")
    return check_writable_folder(path.parent, "records store folder", hint)


def _rate(correct: torch.Tensor) -> float:
    return float(correct.float().mean())


def evaluate(model, tokenizer, dataset: str, attacks=(), levels: Sequence[int] = (0,), n: int | None = None, *,
             subset=None, split: str | None = None, store=None, method: str = "clip",
             head: dict | None = None, templates: str | None = None,
             resolution: str = DEFAULT_RESOLUTION, tree=0, depth: int = 5, batch_size: int = 64,
             seed: int = 0, num_workers: int | None = None, dataset_options: dict | None = None,
             progress: bool = True, precision: str = "auto") -> list[dict]:
    """Evaluate ``model`` (a :class:`~hrvlm.models.clip.PixelCLIP`) zero-shot on registered ``dataset``.

    ``attacks``: attack objects (:func:`hrvlm.attacks.build_attack`), one or a list; empty for clean
    accuracy only.  ``levels``: tree levels (0 = leaves).  ``n`` images of the fixed subset
    (:func:`~hrvlm.data.fixed_subset`; ``None`` = all) or explicit ``subset`` ids.  ``split`` defaults
    to :func:`default_split`.  ``store``: a records file (resumable) or ``None``.
    ``method``: the training method that produced the weights (``clip``: none).  ``head``: the
    classification head's spec (default ``model.head_spec``, which a fine-tuned run sets; else cosine);
    it keys the records (the built head's parameters are stored as ``head_built``) and attacks are
    white-box on it.  The weights are identified by :func:`checkpoint_id` (their values).
    ``templates``: a template set (default the dataset's).  ``resolution``:
    :data:`~hrvlm.data.real.RESOLUTION_POLICIES`.  ``tree``: index into the dataset's forest of depth
    ``depth``, or a ``hrvlm.hierarchy.trees.Tree``.  ``num_workers``: the loader's processes (default
    :func:`~hrvlm.data.default_num_workers`: none on the CPU, several on a GPU; no record depends on it).
    ``precision``: the autocast policy of the scoring forwards (:func:`hrvlm.core.precision.precision_policy`:
    bf16 on recent GPUs, float32 on CPU); attacks carry their own ``autocast`` (the CLI builds them with
    the policy's ``attack_dtype``).

    Returns one record per (level, attack) chunk (see :mod:`hrvlm.evaluation.records`), stored or new.
    """
    spec, split, levels, hierarchy = check_request(
        dataset, levels, attacks, n, split=split, store=store, templates=templates, resolution=resolution, tree=tree,
        depth=depth, batch_size=batch_size, num_workers=num_workers, dataset_options=dataset_options)
    attacks = _attack_list(attacks)
    device = next(model.parameters()).device
    policy = precision_policy(device, precision)
    size = model.image_size

    options = labelled_options(dataset, {**spec.options, **(dataset_options or {})})
    data = get_dataset(dataset, split, **{**options, "image_size": size, "resolution": resolution})
    ids = _subset_ids(dataset, split, len(data), n, subset)
    template_set = templates or spec.templates
    prompts = load_templates(template_set, dataset=spec.name)
    names = [list(spec.classnames)] + [list(hierarchy.names[lv]) for lv in range(1, levels[-1] + 1)]
    head = dict(head or getattr(model, "head_spec", None) or {"kind": "cosine"})

    base = {
        "schema": SCHEMA, "hrvlm_version": __version__, "method": method, "model": model.name,
        "weights_digest": checkpoint_id(model), "head": head, "dataset": dataset, "split": split,
        "dataset_options": {k: v for k, v in options.items() if k not in ("root", "download")},
        "dataset_size": len(data), "n": int(ids.size), "subset_ids_hash": config_hash(ids.tolist(), length=16),
        "tree": None if hierarchy is None else hierarchy.name,
        "tree_hash": None if hierarchy is None else hierarchy.content_hash(), "resolution": resolution,
        "templates": template_set, "templates_hash": config_hash(prompts, length=16), "seed": int(seed),
        "batch_size": int(batch_size), "precision": policy.name,
        "fabricated": bool(options.get("fabricated")),  # test data (hrvlm data fabricate), never a real result
    }
    store = RecordStore(store) if store is not None and not isinstance(store, RecordStore) else store
    chunks = [(level, attack) for level in levels for attack in (attacks or [None])]
    provenance = [{**base, "level": level, "classnames_hash": config_hash(names[level], length=16),
                   "attack": None if attack is None else attack.config()} for level, attack in chunks]
    results = [None if store is None else store.get(record_key(p)) for p in provenance]
    if all(r is not None for r in results):
        return results

    workers = default_num_workers(device) if num_workers is None else num_workers
    # one loader for every (level, attack) chunk: its workers persist from one pass to the next
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(data, ids.tolist()), batch_size=batch_size,
                                         shuffle=False, num_workers=workers, pin_memory=device.type == "cuda",
                                         persistent_workers=workers > 0)
    input_size = tuple(data[int(ids[0])][0].shape[-2:])
    encoder, prepare = apply_resolution(model, input_size, resolution)
    classifier = build_head(head, encoder, tokenizer, names, prompts)
    for i, (level, attack) in enumerate(chunks):
        if results[i] is not None:
            continue
        record = {**provenance[i], "num_classes": classifier.num_classes(level), "head_built": classifier.spec(),
                  "input_size": list(input_size)}
        record.update(_run_chunk(classifier, hierarchy, loader, prepare, level, attack, spec, seed, device, progress,
                                 policy))
        record.update(computed_on(device), created=datetime.datetime.now(datetime.timezone.utc).isoformat())
        if store is not None:
            store.append(record)
            record = store.get(record_key(record))
        results[i] = record
    return results


def _run_chunk(classifier, tree, loader, prepare, level, attack, spec, seed, device, progress, precision) -> dict:
    """Clean (and adversarial, and leaf-transfer) correctness of every image for one (level, attack);
    ``classifier`` is the :class:`~hrvlm.heads.Head`; clean and adversarial images are scored under
    ``precision`` (:func:`hrvlm.core.precision.precision_policy`)."""
    from hrvlm.core.progress import progress as progress_bar

    torch.manual_seed(seed)
    start = time.perf_counter()
    transfer = attack is not None and level > 0
    out = {k: [] for k in ("clean", "robust", "leaf_clean", "leaf_robust")}
    head = classifier.level(level)
    name = "clean" if attack is None else attack.config()["name"]
    for images, labels in progress_bar(loader, desc=f"{spec.name} L{level} {name}", enabled=progress, leave=False):
        if int(labels.max()) >= spec.num_classes:  # checked on the host copy: no device synchronisation
            raise ValueError(f"{spec.name}: label {int(labels.max())} but only {spec.num_classes} class names; "
                             f"the class-name file does not match the dataset")
        x = prepare(images.to(device, non_blocking=True))
        labels = labels.to(device=device, dtype=torch.long, non_blocking=True)
        if level == 0:
            target = labels
            adv = None if attack is None else attack(head, x, labels)
        elif attack is None:
            adv, target = None, torch.as_tensor(tree.level_labels(labels, level), dtype=torch.long, device=device)
        else:
            adv, target = superclass_attack(attack, classifier, tree, level, x, labels)
        with torch.no_grad(), precision.autocast():
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
def _csv(kind):
    def parse(text: str):
        return [kind(t) for t in text.split(",") if t.strip()]
    parse.__name__ = kind.__name__  # argparse names it in errors: "invalid int value"
    return parse


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="open_clip / hrvlm model config (default: the run's, "
                                                       "else the --profile's, else hrvlm-tiny)")
    parser.add_argument("--pretrained", default=None,
                        help="'mini', an open_clip tag, a checkpoint file, or a fine-tuning run (folder or name)")
    parser.add_argument("--method", default=None,
                        help="training method of the weights, for the records: a registered method (default: the run's, "
                             "which it may only repeat; else clip)")
    parser.add_argument("--datasets", type=_csv(str), required=True,
                        help="comma-separated registered names, each once")
    parser.add_argument("--split", default=None, help="default: each dataset's evaluation split")
    parser.add_argument("--attack", type=_csv(str), default=["pgd"],
                        help=f"comma-separated attack names, each once ({', '.join(ATTACKS)}), or 'none' for clean "
                             f"only")
    parser.add_argument("--eps", type=_csv(read_eps), default=[read_eps("1/255")],
                        help="comma-separated budgets, each a multiple of the ε unit (the --profile's eps_unit, else "
                             "the run's profile's, else 1/255: --eps 1 is one unit, never 255/255) or an explicit "
                             "fraction of the [0, 1] pixel range such as 2/255; default 1/255")
    parser.add_argument("--norm", default="linf", choices=["linf", "l2"])
    parser.add_argument("--steps", type=int, default=None, help="default: each attack's own")
    parser.add_argument("--step-size", type=read_eps, default=None,
                        help="as --eps (units or a fraction); pgd, mpgd and cw only (default eps/4); an error with "
                             "apgd-*/autoattack*, which adapt their step size: evaluate those in a separate call")
    parser.add_argument("--restarts", type=int, default=None, help="default: each attack's own")
    # --num-images: under torchrun, whose argparse takes "--n" for an abbreviation of its own options
    parser.add_argument("--n", "--num-images", dest="n", type=int, default=None,
                        help="images per dataset (fixed subset); default all; a set with fewer images is evaluated "
                             "whole, with a printed note (its records say the true n)")
    parser.add_argument("--levels", type=_csv(int), default=[0], help="tree levels, e.g. 0,1,2")
    parser.add_argument("--tree", type=int, default=0, help="which tree of the dataset's forest")
    parser.add_argument("--depth", type=int, default=5, help="depth of the dataset's forest")
    parser.add_argument("--templates", default=None, help="template set (default: each dataset's)")
    parser.add_argument("--resolution", choices=RESOLUTION_POLICIES, default=DEFAULT_RESOLUTION)
    parser.add_argument("--profile", default=None,
                        help="profile whose dataset options (the mini world's size) and ε unit to use")
    parser.add_argument("--root", default=None, help="data root of real datasets (default $HRVLM_DATA)")
    parser.add_argument("--store", default=None, help="records file (default <cache>/records/results.jsonl)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="images per batch (a record key field; default: the --profile's eval_batch_size, else 64)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="default: cuda if available (this rank's under torchrun), "
                                                        "else cpu")
    parser.add_argument("--num-workers", type=int, default=None,
                        help="data loader processes (default: 0 on the CPU, min(8, CPU cores - 1) on a GPU)")
    parser.add_argument("--precision", choices=PRECISION_CHOICES, default="auto",
                        help="autocast of attacks and scoring: auto = bf16 on GPUs with it, fp16 on older GPUs "
                             "(their attacks in float32: fp16 loses confident images' gradients), float32 on CPU")


def build_attacks(names: Sequence[str], eps_values: Sequence[float], norm: str = "linf", **settings) -> list:
    """Every (name, ε) combination through :func:`hrvlm.attacks.build_attack`; 'none' gives none.

    ``settings`` that are ``None`` are left to each attack's default; the others go to every attack, and
    one that an attack does not take (e.g. ``step_size`` for APGD/AutoAttack) is a ``ValueError`` rather
    than being dropped silently, so a recorded run is always the run that was asked for.
    """
    from hrvlm.attacks import build_attack

    if not names:
        raise ValueError("no attack named: give attack names, or 'none' for clean accuracy only")
    if any(name != "none" for name in names) and not eps_values:
        raise ValueError("no eps given: give at least one budget, e.g. 1/255")
    settings = {k: v for k, v in settings.items() if v is not None}
    attacks = [build_attack(name, eps, norm=norm, **settings) for name in names if name != "none" for eps in eps_values]
    seen = set()
    for attack in attacks:  # a repeat would print (and cost) the same rows twice: refused, not silently dropped
        config = attack.config()
        key = config_hash(config)
        if key in seen:
            raise ValueError(f"the attacks repeat {config['name']} at eps {config.get('eps', 0):.5g}: give each attack "
                             f"name and each budget once")
        seen.add(key)
    return attacks


def eps_unit_for(profile: str | None, run_record: dict) -> tuple[float, str]:
    """The unit of a bare ``--eps`` number: the profile's ``eps_unit`` (``--profile``, else the run's
    profile), else the paper's 1/255; with its name for messages."""
    from hrvlm.attacks.threat import PAPER_UNIT
    from hrvlm.profiles import get_profile

    name = profile or run_record.get("profile")
    if name is None:
        return PAPER_UNIT, "the paper's unit, with no --profile"
    return get_profile(name).eps_unit, f"the {name} profile's unit"


def _method_label(requested: str | None, run_record: dict) -> str:
    """The method that records are labelled with: the run's (``--method`` may only repeat it), else the
    requested registered method, else ``clip``.  A wrong label would put one method's numbers in another's row."""
    from hrvlm.methods import METHODS

    trained = run_record.get("method", {}).get("name") if run_record else None
    if requested is not None and requested not in METHODS and requested != trained:
        raise ValueError(f"--method {requested!r} is not a registered method; choose one of {sorted(METHODS)}")
    if trained is not None and requested not in (None, trained):
        raise ValueError(f"--method {requested}: run {run_record['path']} was trained with {trained!r}; omit --method "
                         f"(the records take the run's)")
    return trained or requested or "clip"


def run(args: argparse.Namespace) -> int:
    from hrvlm.core.distributed import init_distributed
    from hrvlm.models.clip import load_clip
    from hrvlm.profiles import get_profile
    from hrvlm.models.runs import is_run, read_record

    d = init_distributed(timeout=RANKS_WAIT)
    device = d.device(args.device)  # an absent device fails here, in one line
    policy = precision_policy(device, args.precision)  # bf16 attacks and scoring on recent GPUs
    run_record = read_record(args.pretrained) if args.pretrained is not None and is_run(args.pretrained) else {}
    unit, unit_name = eps_unit_for(args.profile, run_record)
    eps = [check_eps_budget(e, unit, unit_name, args.norm) for e in args.eps]
    step_size = None if args.step_size is None else check_eps_budget(args.step_size, unit, unit_name, args.norm,
                                                                      "--step-size")
    attacks = build_attacks(args.attack, eps, args.norm, steps=args.steps, step_size=step_size,
                            restarts=args.restarts, autocast=policy.attack_dtype)
    if d.main and any(name != "none" for name in args.attack):
        print("eps: " + ", ".join(e.describe(unit, unit_name) for e in args.eps))
    # the model: given, else the run's, else the profile's (so `--pretrained mini --profile mini` loads the
    # mini world's own tower rather than building weights for another architecture)
    model_name = args.model or run_record.get("model") or (get_profile(args.profile).model if args.profile
                                                            else "hrvlm-tiny")
    method = _method_label(args.method, run_record)
    batch_size = args.batch_size if args.batch_size is not None else (
        get_profile(args.profile).eval_batch_size if args.profile else 64)
    store = Path(args.store) if args.store else default_store()
    options = {**(get_profile(args.profile).base_options if args.profile else {}),
               **({"root": args.root} if args.root is not None else {})}
    if not args.datasets:
        raise ValueError("--datasets names no dataset: give comma-separated registered names, e.g. mini-heldout "
                         "(hrvlm data list shows them)")
    repeated = sorted({name for name in args.datasets if args.datasets.count(name) > 1})
    if repeated:  # each would print (and evaluate) its rows twice
        raise ValueError(f"--datasets names {', '.join(repeated)} more than once: give each dataset once")
    check_attacks(attacks)
    for name in args.datasets:  # the whole request, before the model loads
        check_request(name, args.levels, attacks, args.n, split=args.split, store=store, templates=args.templates,
                      resolution=args.resolution, tree=args.tree, depth=args.depth, batch_size=batch_size,
                      num_workers=args.num_workers, dataset_options=options)
    model, _, tokenizer = load_clip(model_name, args.pretrained, device=device)

    def evaluate_all(names) -> list:
        return [record for name in names for record in evaluate(
            model, tokenizer, name, attacks, args.levels, args.n, split=args.split, store=store, method=method,
            templates=args.templates, resolution=args.resolution, tree=args.tree, depth=args.depth,
            batch_size=batch_size, seed=args.seed, num_workers=args.num_workers, dataset_options=options,
            precision=args.precision)]

    if d.world > 1:  # under torchrun: each rank its share of the datasets, into the shared (locked) store
        evaluate_all(args.datasets[d.rank::d.world])
        d.barrier()
        if not d.main:
            return 0
    records = evaluate_all(args.datasets)  # after the split: every chunk is stored, nothing is recomputed
    capped = {(r["dataset"], r["split"]): r for r in records if args.n is not None and r["n"] < args.n}
    for (name, split), record in capped.items():  # the records say the true n; the note says why it is not --n
        print(f"note: --n {args.n} exceeds the {record['dataset_size']} images of {name}/{split}: all "
              f"{record['n']} were evaluated (records: n = {record['n']})")
    table = records_to_frame(records)
    columns = [c for c in ("dataset", "level", "attack_name", "attack_eps", "n", "clean_acc", "robust_acc",
                           "leaf_robust_acc", "transfer_success_rate") if c in table]
    print(table[columns].to_string(index=False))
    print(f"records: {store}")
    return 0
