"""Per-level clean and robust zero-shot accuracy, resumable, with every number's provenance.

For each level ``l`` of a dataset's class tree (level 0 = the dataset's own classes):

* **clean**: accuracy of the level-``l`` zero-shot classifier (prompts from the level-``l`` names);
* **robust**: its accuracy on adversarial images made *against it* with the level-``l`` labels (for
  ``l > 0`` this is the paper's superclass attack);
* **transfer** (``l > 0``): the leaf classifier on those superclass adversaries: leaf accuracy, and the
  success rate = the fraction of images the leaf classifier gets right clean but wrong adversarially.

A level-0 chunk's attack stops perturbing an image at its first misclassified iterate (only whether
each image falls is read there; the same images fall as under the full attack, in a fraction of the
time); a superclass level's runs every step, since the leaf classifier scores its images too.

Work is split into chunks, one per (dataset, split, level, attack); each finished chunk is appended to
a :class:`~hrvlm.evaluation.records.RecordStore` at once, and a chunk whose key is already stored is not
recomputed, so an interrupted evaluation resumes where it stopped without duplicates.  Each chunk
re-seeds torch with ``seed``, so resumed and uninterrupted runs give the same numbers.

What is evaluated is an :class:`~hrvlm.evaluation.request.EvalRequest` (checked before any work);
:func:`evaluate` runs one on a loaded model, :func:`evaluate_weights` checks several, loads the weights
once and runs them all (``hrvlm eval``, the book's ``evaluate_run``).
"""
from __future__ import annotations

import argparse
import datetime
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from hrvlm import __version__
from hrvlm.attacks import ATTACKS, superclass_attack, transfer_outcome, transfer_summary
from hrvlm.attacks.threat import check_eps_budget, read_eps
from hrvlm.data.real import DEFAULT_RESOLUTION, RESOLUTION_POLICIES, apply_resolution
from hrvlm.data.registry import default_num_workers, fixed_subset, get_dataset
from hrvlm.heads import build_head
from hrvlm.core.environment import computed_on
from hrvlm.core.precision import CHOICES as PRECISION_CHOICES, precision_policy
from hrvlm.evaluation.records import SCHEMA, RecordStore, default_store, encode_bits, record_key, records_to_frame
from hrvlm.evaluation.request import EvalRequest, check_attacks, check_store, default_split
from hrvlm.core.storage import config_hash
from hrvlm.models.weights import state_digest
from hrvlm.data.templates import load_templates

# Under torchrun the ranks wait at a barrier for the slowest rank's share of the datasets (AutoAttack on a
# whole dataset takes hours); a rank that dies ends the job through torchrun, not through this timeout.
RANKS_WAIT = datetime.timedelta(days=1)


def checkpoint_id(model) -> str:
    """Identity of the weights as evaluated: :func:`hrvlm.models.weights.state_digest` of the model's state
    (never its ``pretrained`` tag, which a fine-tuned model still carries)."""
    return state_digest(getattr(model, "clip", model))


@dataclass(frozen=True)
class Scored:
    """What the records say of the weights they score: the model's name, the weights' identity
    (:func:`checkpoint_id`), its input resolution and its head spec (``None``: cosine).  Taken from a loaded
    model (:meth:`of`), or from a finished run's record (:meth:`of_run`), which lets stored records be found
    without loading the weights."""

    model: str
    weights_digest: str
    image_size: int
    head: dict | None = None

    @classmethod
    def of(cls, model) -> "Scored":
        return cls(model.name, checkpoint_id(model), model.image_size, getattr(model, "head_spec", None))

    @classmethod
    def of_run(cls, record: dict) -> "Scored":
        """From a run's ``run.json`` (:func:`hrvlm.models.runs.read_record`): its ``weights_digest`` is
        :func:`checkpoint_id` of the weights it saved (``state_digest`` of the same state)."""
        from hrvlm.models.clip import model_image_size

        return cls(record["model"], record["weights_digest"], model_image_size(record["model"]), record.get("head"))


@dataclass(frozen=True)
class _Plan:
    """One checked request for one set of weights: the data, the fixed images, the prompts, the chunks and
    each chunk's provenance (what keys its record), all before any model runs."""

    request: EvalRequest
    policy: object
    spec: object
    hierarchy: object
    data: object
    ids: np.ndarray
    prompts: list
    names: list
    head: dict
    chunks: list
    provenance: list

    @classmethod
    def of(cls, request: EvalRequest, scored: Scored, device: torch.device) -> "_Plan":
        spec, split, levels, hierarchy, options = request.check()
        request = request.on(device)
        policy = precision_policy(device, request.precision)
        dataset = request.dataset
        data = get_dataset(dataset, split, **{**options, "image_size": scored.image_size,
                                              "resolution": request.resolution})
        ids = _subset_ids(dataset, split, len(data), request.n, request.subset)
        template_set = request.templates or spec.templates
        prompts = load_templates(template_set, dataset=spec.name)
        names = [list(spec.classnames)] + [list(hierarchy.names[lv]) for lv in range(1, levels[-1] + 1)]
        head = dict(request.head or scored.head or {"kind": "cosine"})
        base = {
            "schema": SCHEMA, "hrvlm_version": __version__, "method": request.method, "model": scored.model,
            "weights_digest": scored.weights_digest, "head": head, "dataset": dataset, "split": split,
            "dataset_options": {k: v for k, v in options.items() if k not in ("root", "download")},
            "dataset_size": len(data), "n": int(ids.size), "subset_ids_hash": config_hash(ids.tolist(), length=16),
            "tree": None if hierarchy is None else hierarchy.name,
            "tree_hash": None if hierarchy is None else hierarchy.content_hash(), "resolution": request.resolution,
            "templates": template_set, "templates_hash": config_hash(prompts, length=16), "seed": int(request.seed),
            "batch_size": int(request.batch_size), "precision": policy.name,
            "fabricated": bool(options.get("fabricated")),  # test data (hrvlm data fabricate), never a real result
        }
        chunks = [(level, _chunk_attack(attack, level, policy)) for level in levels
                  for attack in (list(request.attacks) or [None])]
        provenance = [{**base, "level": level, "classnames_hash": config_hash(names[level], length=16),
                       "attack": None if attack is None else attack.config()} for level, attack in chunks]
        return cls(request, policy, spec, hierarchy, data, ids, prompts, names, head, chunks, provenance)

    def stored(self, store) -> list:
        """Each chunk's stored record, ``None`` where the store (or no store) has none."""
        return [None if store is None else store.get(record_key(p)) for p in self.provenance]


def _subset_ids(dataset: str, split: str, size: int, n: int | None, subset) -> np.ndarray:
    if subset is None:
        return fixed_subset(dataset, size, n, split)
    ids = np.unique(np.asarray(subset, dtype=np.int64))
    if ids.size == 0 or ids[0] < 0 or ids[-1] >= size:
        raise ValueError(f"subset ids must be non-empty and in [0, {size}) for {dataset}/{split}")
    return ids


def check_request(dataset: str, levels: Sequence[int] = (0,), attacks=(), n: int | None = None, *, store=None,
                  **settings):
    """One-release alias (0.1 → 0.2) of ``EvalRequest(dataset, attacks, levels, n, **settings).check()`` and
    :func:`~hrvlm.evaluation.request.check_store`; returns ``(spec, split, levels, tree)``."""
    warnings.warn("check_request is replaced by EvalRequest(...).check() and check_store(store) "
                  "(this alias goes in hrvlm 0.2)", DeprecationWarning, stacklevel=2)
    checked = EvalRequest(dataset, attacks, levels, n, **settings).check()
    check_store(store)
    return checked[:4]


def _rate(correct: torch.Tensor) -> float:
    return float(correct.float().mean())


def _as_request(request, legacy: tuple, settings: dict) -> EvalRequest:
    """The :class:`EvalRequest` of an :func:`evaluate` call, also from the 0.1 keyword form."""
    if isinstance(request, EvalRequest):
        if legacy or settings:
            raise TypeError(f"evaluate(model, tokenizer, request): give {', '.join(settings) or 'the settings'} "
                            f"in the EvalRequest, not beside it")
        return request
    warnings.warn("evaluate(model, tokenizer, dataset, ...) is replaced by evaluate(model, tokenizer, "
                  "EvalRequest(dataset, ...)) (this form goes in hrvlm 0.2)", DeprecationWarning, stacklevel=3)
    return EvalRequest(request, *legacy, **settings)


def evaluate(model, tokenizer, request: EvalRequest, *legacy, store=None, progress: bool = True,
             scored: "Scored | None" = None, **settings) -> list[dict]:
    """Evaluate ``model`` (a :class:`~hrvlm.models.clip.PixelCLIP`) zero-shot as ``request`` says
    (:class:`~hrvlm.evaluation.request.EvalRequest`: dataset, attacks, levels, sizes, ...).

    The request is checked first (:meth:`~hrvlm.evaluation.request.EvalRequest.check`), then resolved
    for the model's device (:meth:`~hrvlm.evaluation.request.EvalRequest.on`): ``precision="auto"`` is the
    device's policy (bf16 on recent GPUs, float32 on the CPU), the autocast of the scoring forwards, and
    every attack runs in its attack dtype.  ``head`` (default ``model.head_spec``, else cosine) keys the
    records (the built head's parameters are stored as ``head_built``) and attacks are white-box on it.
    The weights are identified by :func:`checkpoint_id` (their values).  ``store``: a records file or
    :class:`~hrvlm.evaluation.records.RecordStore` (stored chunks are read, not recomputed) or ``None``;
    ``progress``: a bar per chunk.  ``scored``: :meth:`Scored.of` ``model``, for a caller that evaluates the
    same unchanged model on many requests (hashing ViT-B/32's weights takes seconds).  The 0.1 form
    ``evaluate(model, tokenizer, dataset, attacks, levels, n, **settings)`` still works for one release (a
    ``DeprecationWarning``).

    Returns one record per (level, attack) chunk (see :mod:`hrvlm.evaluation.records`), stored or new.
    """
    request = _as_request(request, legacy, settings)
    check_store(store)
    device = next(model.parameters()).device
    plan = _Plan.of(request, Scored.of(model) if scored is None else scored, device)
    store = RecordStore.shared(store) if store is not None and not isinstance(store, RecordStore) else store
    results = plan.stored(store)
    if all(r is not None for r in results):
        return results
    request, policy, data, ids, spec, hierarchy = plan.request, plan.policy, plan.data, plan.ids, plan.spec, plan.hierarchy
    batch_size, chunks, provenance = request.batch_size, plan.chunks, plan.provenance

    workers = default_num_workers(device) if request.num_workers is None else request.num_workers
    # one loader for every (level, attack) chunk: its workers persist from one pass to the next
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(data, ids.tolist()), batch_size=batch_size,
                                         shuffle=False, num_workers=workers, pin_memory=device.type == "cuda",
                                         persistent_workers=workers > 0)
    input_size = tuple(data[int(ids[0])][0].shape[-2:])
    encoder, prepare = apply_resolution(model, input_size, request.resolution)
    classifier = build_head(plan.head, encoder, tokenizer, plan.names, plan.prompts)
    for i, (level, attack) in enumerate(chunks):
        if results[i] is not None:
            continue
        record = {**provenance[i], "num_classes": classifier.num_classes(level), "head_built": classifier.spec(),
                  "input_size": list(input_size)}
        record.update(_run_chunk(classifier, hierarchy, loader, prepare, level, attack, spec, request.seed, device,
                                 progress, policy))
        record.update(computed_on(device), created=datetime.datetime.now(datetime.timezone.utc).isoformat())
        if store is not None:
            store.append(record)
            record = store.get(record_key(record))
        results[i] = record
    return results


def evaluate_weights(model: str, pretrained, requests: Sequence[EvalRequest], *, store=None, device=None,
                     progress: bool = True, dist=None, stored_only: bool = False) -> list[dict] | None:
    """Every record of ``requests`` for one model: each request checked (and its attacks run on a toy
    problem, :func:`~hrvlm.evaluation.request.check_attacks`), resolved for ``device`` and the store checked,
    all before ``load_clip(model, pretrained)`` loads the weights once; then :func:`evaluate` on each.

    ``pretrained``: anything :func:`hrvlm.models.clip.load_clip` takes (a run folder, a checkpoint, a tag).
    When it is a finished run whose records are all stored, they are returned without loading the weights
    (the run's record names them: :meth:`Scored.of_run`); ``stored_only``: return those or ``None``, never
    compute.  ``device``: default :func:`hrvlm.core.environment.default_device`.  ``dist``: a
    :class:`hrvlm.core.distributed.Dist` under torchrun: each rank evaluates its share of the requests into
    the shared (locked) store, then the main rank reads every record back (stored: nothing is recomputed)
    and the other ranks return none.
    """
    from hrvlm.core.environment import default_device
    from hrvlm.models.clip import load_clip

    requests = list(requests)
    for request in requests:  # the whole job, before the model loads
        check_attacks(request.attacks)
        request.check()
    check_store(store)
    device = default_device(device)
    requests = [request.on(device) for request in requests]  # an impossible precision fails here too
    if dist is None or dist.world == 1:
        stored = _stored_run_records(model, pretrained, requests, store, device)
        if stored is not None or stored_only:
            return stored
    elif stored_only:
        raise ValueError("stored_only is for one process; under torchrun every rank evaluates its share")
    loaded, _, tokenizer = load_clip(model, pretrained, device=device)
    scored = Scored.of(loaded)  # once: evaluation never changes the weights

    def evaluate_all(part) -> list:
        return [record for request in part for record in evaluate(loaded, tokenizer, request, store=store,
                                                                  progress=progress, scored=scored)]

    if dist is not None and dist.world > 1:
        evaluate_all(requests[dist.rank::dist.world])
        dist.barrier()
        if not dist.main:
            return []
    return evaluate_all(requests)


def _stored_run_records(model: str, pretrained, requests: Sequence[EvalRequest], store, device) -> list[dict] | None:
    """Every record of ``requests`` for the finished run ``pretrained`` if the store holds them all, else
    ``None`` (also for weights that are not a run's)."""
    from hrvlm.models import runs

    if store is None or pretrained is None or not runs.is_run(pretrained) \
            or not (runs.run_path(pretrained) / runs.RECORD).is_file():
        return None
    record = runs.read_record(pretrained, verify=False)  # the records are keyed by its weights' digest
    if record["model"] != model:
        return None  # load_clip says what is wrong
    scored, store = Scored.of_run(record), RecordStore.shared(store)
    found = []
    for request in requests:
        records = _Plan.of(request, scored, device).stored(store)
        if any(r is None for r in records):
            return None
        found.extend(records)
    return found


def _chunk_attack(attack, level: int, policy):
    """The attack a (level, attack) chunk runs.  A level-0 chunk reads only which images end misclassified
    (robust accuracy), so its attack stops perturbing an image at the first misclassified iterate
    (:meth:`~hrvlm.attacks.Attack.stopping_early`: the same images fall, in a fraction of the time); its
    record's attack config says ``stop_on_success``.  Not at a superclass level, whose adversarial images the
    leaf classifier scores too (the transfer), nor when scoring runs in another dtype than the attack (fp16
    GPUs), where an image just across the boundary could score correct again."""
    early = getattr(attack, "stopping_early", None)  # an attack-like callable without it runs as it is
    if early is None or level > 0 or policy.attack_dtype != policy.dtype:
        return attack
    return early()


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
    from hrvlm.profiles import get_profile
    from hrvlm.models.runs import is_run, read_record

    d = init_distributed(timeout=RANKS_WAIT)
    device = d.device(args.device)  # an absent device fails here, in one line
    run_record = read_record(args.pretrained) if args.pretrained is not None and is_run(args.pretrained) else {}
    unit, unit_name = eps_unit_for(args.profile, run_record)
    eps = [check_eps_budget(e, unit, unit_name, args.norm) for e in args.eps]
    step_size = None if args.step_size is None else check_eps_budget(args.step_size, unit, unit_name, args.norm,
                                                                      "--step-size")
    # in float32; evaluate() runs them in the device's attack precision (bf16 on recent GPUs)
    attacks = build_attacks(args.attack, eps, args.norm, steps=args.steps, step_size=step_size, restarts=args.restarts)
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
    requests = [EvalRequest(name, attacks, args.levels, args.n, split=args.split, method=method,
                            templates=args.templates, resolution=args.resolution, tree=args.tree, depth=args.depth,
                            batch_size=batch_size, seed=args.seed, num_workers=args.num_workers,
                            dataset_options=options, precision=args.precision) for name in args.datasets]
    records = evaluate_weights(model_name, args.pretrained, requests, store=store, device=device, dist=d)
    if not d.main:
        return 0
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


__all__ = ["EvalRequest", "RANKS_WAIT", "build_attacks", "check_attacks", "check_request", "checkpoint_id",
           "configure_parser", "default_split", "eps_unit_for", "evaluate", "evaluate_weights", "run"]
