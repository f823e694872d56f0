"""The training loop: one harness for every robust fine-tuning method (``hrvlm train``).

A method (:mod:`hrvlm.methods`) says what to attack, what to minimise and which parameters train; this
loop does the rest, the same way for all of them:

* **config as data** (:class:`TrainConfig`): the profile's ``train`` settings, updated by the method's
  ``loop`` entry and command-line overrides (:func:`config_from_profile`); checked before any model
  loads;
* **data**: batch ``t`` is a seeded function of ``(seed, t)`` (epoch-wise permutations, drop-last), so
  the data position is the step; under DDP each rank takes its contiguous slice of the same global
  batch; the batch carries its dataset indices, so a method reads per-item data (QT-AFT's captions)
  from ``TrainContext.train_set``; ``decode="device"`` (the full profile's) has the loader's workers read
  JPEG bytes only and decodes each batch on the device (:mod:`hrvlm.data.jpeg`: nvJPEG on GPUs);
* **modes**: the whole model is in ``eval()`` while the method perturbs (attacks see the deployed
  function), then back to training mode for the loss.  BatchNorm (the mini world's CNN tower) stays in
  eval mode in training too by default (``batchnorm="frozen"``): the running statistics of pretraining
  are used everywhere, so the attacked function and the trained one are the same, each image's loss is
  independent of the others in its batch (which makes a DDP run equal a single-process one), and the
  extra forwards of the attack never update the statistics.  ``batchnorm="batch"`` trains with batch
  statistics instead;
* **precision**: bf16 autocast on GPUs with bf16, fp16 with a gradient scaler on those without (T4, whose
  training attacks run in float32: :mod:`hrvlm.core.precision` says why), float32 on the CPU; ``precision=``
  forces one (fp16 runs on the CPU too, for tests);
* AdamW or SGD, linear warm-up + cosine decay, gradient clipping;
* **checkpoints** every ``checkpoint_every`` steps and every ``checkpoint_seconds``, written atomically
  with their sha256: model, optimiser, scheduler, scaler, method state and parameters, every RNG of
  every rank, the step (= data position) and the timings.  Re-running the same command resumes; the
  result is bit-identical to an uninterrupted run on the CPU (tested);
* **the run folder** (:mod:`hrvlm.models.runs`): ``model.safetensors`` and ``run.json`` (config, method,
  head spec, profile, seed, steps, wall times, per-epoch times, environment, sha256s), which
  ``load_clip(model, pretrained=<run>)`` and ``hrvlm eval --pretrained <run>`` consume.

Multi-GPU/multi-process training runs under ``torchrun`` with PyTorch DDP (gloo on the CPU, NCCL on
GPUs): ``torchrun --nproc_per_node 2 -m hrvlm.cli train --method M --profile P``.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import shlex
import time
import warnings
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import torch
from torch import nn

from hrvlm.models import runs
from hrvlm.attacks.threat import Eps, check_eps_budget, read_eps
from hrvlm.training.checkpoints import (discard_checkpoint, load_checkpoint, rng_state, save_checkpoint, seed_rngs,
                                       set_rng_state)
from hrvlm.training.schedule import batch_indices, decay_groups, lr_lambda
from hrvlm.data.jpeg import DECODE_CHOICES, EncodedImages, collate_encoded, decode_batch, image_files
from hrvlm.core.distributed import Dist, init_distributed
from hrvlm.core.precision import CHOICES as PRECISION_CHOICES, precision_policy
from hrvlm.core.storage import (atomic_write_bytes, atomic_write_json, canonical_json, check_writable_folder, config_hash,
                      file_sha256, folder_lock, remove_temporaries)
from hrvlm.models.weights import RANDOM_INIT  # re-exported: TrainConfig.pretrained for no pretrained weights

if TYPE_CHECKING:
    from hrvlm.core.precision import Precision
    from hrvlm.methods import Method

OPTIMIZERS = ("adamw", "sgd")
BATCHNORM_MODES = ("frozen", "batch")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a fine-tuning run (its hash names the run folder)."""

    method: str
    profile: str = "mini"
    method_settings: dict = field(default_factory=dict)
    model: str | None = None            # default: the profile's
    pretrained: str | None = None       # default: the profile's; "random-init" for none (tests)
    dataset: str | None = None          # default: the profile's fine-tuning set
    dataset_options: dict | None = None  # default: the profile's
    split: str = "train"
    steps: int = 100
    batch_size: int = 128
    optimizer: str = "adamw"
    lr: float = 1e-5
    weight_decay: float = 1e-4
    momentum: float = 0.9               # SGD only
    warmup: int = 0
    grad_clip: float | None = 1.0       # max global gradient norm (None: no clipping)
    eps: float = 1.0                    # training ε as a multiple of the profile's eps_unit
    precision: str = "auto"
    batchnorm: str = "frozen"
    seed: int = 0
    checkpoint_every: int = 100         # steps
    checkpoint_seconds: float = 900.0   # and at least this often (wall time)
    num_workers: int = 0
    # "workers": DataLoader workers decode and resize (PIL); "device": they read bytes, the loop decodes
    # the batch on the device (hrvlm.data.jpeg; nvJPEG on GPUs). Part of the hash: the pixels differ slightly
    decode: str = "workers"
    # torch threads on the CPU: fixed (and part of the run's hash), because the thread count changes
    # float summation order and so the weights; one thread is also the fastest for tiny models here
    threads: int = 1
    # what the starting weights are (hrvlm.models.weights.weights_identity: the sha256 of their file, or an
    # open_clip tag): filled in by identified(), so that new bytes under the same --pretrained are another run
    start_weights: str | None = None

    def check(self) -> None:
        """A ``ValueError`` naming the first bad value (before any model or data is loaded)."""
        from hrvlm.methods import METHODS, build_method
        from hrvlm.profiles import get_profile

        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {sorted(METHODS)}")
        try:
            get_profile(self.profile)
        except KeyError as err:
            raise ValueError(err.args[0]) from None
        positive = {"steps": self.steps, "batch_size": self.batch_size, "lr": self.lr,
                    "checkpoint_every": self.checkpoint_every, "checkpoint_seconds": self.checkpoint_seconds}
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")
        if not (isinstance(self.threads, int) and self.threads >= 1):
            raise ValueError(f"threads must be an integer >= 1, got {self.threads!r}")
        for name, value in (("eps", self.eps), ("warmup", self.warmup), ("weight_decay", self.weight_decay),
                            ("momentum", self.momentum), ("seed", self.seed), ("num_workers", self.num_workers)):
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value!r}")
        if not math.isfinite(self.eps):
            raise ValueError(f"eps must be a finite multiple of the ε unit, got {self.eps!r}")
        check_eps_budget(Eps(f"{self.eps:g}", Fraction(self.eps), explicit=False), get_profile(self.profile).eps_unit,
                         f"the {self.profile} profile's unit")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0 or None, got {self.grad_clip!r}")
        for name, value, known in (("optimizer", self.optimizer, OPTIMIZERS), ("precision", self.precision, PRECISION_CHOICES),
                                   ("batchnorm", self.batchnorm, BATCHNORM_MODES), ("decode", self.decode, DECODE_CHOICES)):
            if value not in known:
                raise ValueError(f"unknown {name} {value!r}; choose one of {known}")
        build_method(self.method, self.method_settings)  # its own settings check
        from hrvlm.data.registry import get_spec

        resolved = self.resolved()
        try:
            spec = get_spec(resolved.dataset)
        except KeyError as err:
            raise ValueError(err.args[0]) from None
        if self.split not in spec.splits:
            raise ValueError(f"dataset {spec.name!r} has no split {self.split!r}; its splits are {list(spec.splits)}")
        if self.decode == "device" and not spec.image_files:
            raise ValueError(f"decode='device' reads image files, and dataset {spec.name!r} is not a folder of them "
                             f"(ImageNet and TinyImageNet are); use decode='workers' (hrvlm train --decode workers)")
        weights = resolved.pretrained
        if os.sep in weights and not weights.startswith("hf-hub:"):  # a file or a run: it must exist now
            from hrvlm.models.weights import WEIGHT_SUFFIXES

            if not (Path(weights).is_file() if Path(weights).suffix in WEIGHT_SUFFIXES else runs.is_run(weights)):
                raise ValueError(f"pretrained={weights!r}: no such checkpoint file or run folder")

    def resolved(self) -> "TrainConfig":
        """The profile's model, weights and data filled in where left ``None``; the data options say
        whether the data root is fabricated (:func:`hrvlm.data.real.labelled_options`: part of the identity)."""
        from hrvlm.data.real import labelled_options
        from hrvlm.profiles import get_profile

        prof = get_profile(self.profile)
        dataset = self.dataset or prof.train_dataset
        options = dict(prof.dataset_options if self.dataset_options is None else self.dataset_options)
        return dataclasses.replace(
            self, model=self.model or prof.model, pretrained=self.pretrained or prof.pretrained,
            dataset=dataset, dataset_options=labelled_options(dataset, options))

    def identified(self) -> "TrainConfig":
        """:meth:`resolved`, with ``start_weights`` computed (hashing the starting weights' file, building
        registered weights first if absent): the configuration a run folder is named and checked by."""
        from hrvlm.models.weights import weights_identity

        config = self.resolved()
        start = RANDOM_INIT if config.pretrained == RANDOM_INIT else weights_identity(config.pretrained, config.model)
        return dataclasses.replace(config, start_weights=start)

    def identity(self) -> dict:
        """What determines the weights: every field but where the data is read from and by how many
        processes (``dataset_options.root``/``download``, ``num_workers``), so that a run resumes, and is
        found again, after its data moved or on a machine with other cores; and, once the starting
        weights' digest is known (:meth:`identified`), that digest instead of their path or tag."""
        fields = asdict(self)
        fields.pop("num_workers")
        if str(self.start_weights).startswith("sha256:"):  # the weights' bytes, not where they lie
            fields.pop("pretrained")
        options = fields["dataset_options"]
        if options is not None:
            fields["dataset_options"] = {k: v for k, v in options.items() if k not in ("root", "download")}
        return json.loads(canonical_json(fields))

    def name(self) -> str:
        """``<method>-<profile>-s<seed>-<hash>``: a default run name, unique per :meth:`identity`."""
        return f"{self.method}-{self.profile}-s{self.seed}-{config_hash(self.identity(), length=10)}"


LOOP_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig)
                    if f.name not in ("method", "profile", "method_settings", "start_weights"))


def config_from_profile(method: str, profile: str = "mini", method_settings: dict | None = None,
                        **overrides) -> TrainConfig:
    """The profile's ``train`` settings, then ``profiles.<profile>.methods.<method>.loop``, then
    ``overrides``; the method's settings from its profile entry updated by ``method_settings``.
    Raises a ``ValueError`` for an unknown profile or method, or a profile that lacks the method."""
    from hrvlm.methods import METHODS
    from hrvlm.profiles import get_profile

    try:
        prof = get_profile(profile)
    except KeyError as err:
        raise ValueError(err.args[0]) from None
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {sorted(METHODS)}")
    entry = prof.method(method)
    loop = {**(prof.train or {}), **entry.pop("loop", {}), **{k: v for k, v in overrides.items() if v is not None}}
    unknown = sorted(set(loop) - set(LOOP_FIELDS))
    if unknown:
        raise ValueError(f"unknown training setting(s) {unknown}; the loop's settings: {sorted(LOOP_FIELDS)}")
    config = TrainConfig(method=method, profile=profile, method_settings={**entry, **(method_settings or {})}, **loop)
    config.check()
    return config


# ----------------------------------------------------------------------------- pieces
def set_train_mode(model: nn.Module, batchnorm: str) -> None:
    """``model.train()``, with BatchNorm layers back in eval mode when ``batchnorm == "frozen"``."""
    model.train()
    if batchnorm == "frozen":
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


@contextlib.contextmanager
def attack_mode(model: nn.Module):
    """The whole model in eval mode inside the block; every module's own flag restored after it."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def build_optimizer(config: TrainConfig, named: list[tuple[str, nn.Parameter]],
                    own_lr: dict[str, float] | None = None) -> torch.optim.Optimizer:
    """Groups: decayed weights and undecayed ones at ``config.lr`` (:func:`~hrvlm.training.schedule.decay_groups`,
    the rule pretraining applies too), then one group per parameter named in
    ``own_lr`` at its own lr, undecayed (e.g. HRVLM's log feature scales: at the backbone's 1e-5 a
    log-parameter moves at most ~1e-5 per AdamW step, ×1.2 over a 20k-step run)."""
    own_lr = own_lr or {}
    unknown = sorted(set(own_lr) - {n for n, _ in named})
    if unknown:
        raise ValueError(f"learning rates for parameters that do not train: {unknown}")
    groups = decay_groups([(n, p) for n, p in named if n not in own_lr], config.weight_decay)
    groups += [{"params": [p], "weight_decay": 0.0, "lr": own_lr[n]} for n, p in named if n in own_lr]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)
    fused = all(p.is_cuda for _, p in named)  # one fused kernel per step on GPUs (measured by hrvlm bench step)
    return torch.optim.AdamW(groups, lr=config.lr, fused=fused or None)


class _Steps(torch.utils.data.Sampler):
    """The local indices of batches ``start .. end-1`` (a batch sampler for the DataLoader)."""

    def __init__(self, start: int, end: int, batch_size: int, n: int, seed: int, rank: int, world: int):
        self.range = range(start, end)
        self.batch_size, self.n, self.seed, self.rank, self.local = batch_size, n, seed, rank, batch_size // world

    def __len__(self) -> int:
        return len(self.range)

    def __iter__(self):
        for step in self.range:
            idx = batch_indices(step, self.batch_size, self.n, self.seed)
            yield idx[self.rank * self.local:(self.rank + 1) * self.local].tolist()


class _Indexed(torch.utils.data.Dataset):
    """``(image, label, index)`` items, so the batch knows its dataset indices (captions, provenance)."""

    def __init__(self, data):
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        image, label = self.data[i][:2]
        return image, label, i


class _Objective(nn.Module):
    """The method's loss as a module's forward, over the model and the method's own parameters: what
    DDP wraps (its gradient hooks need a forward call)."""

    def __init__(self, model: nn.Module, method, extras: dict[str, nn.Parameter]):
        super().__init__()
        self.model = model
        self.extras = nn.ParameterDict(extras)
        self.method = method  # a plain object: its frozen copies are no part of what trains

    def forward(self, batch, adv):
        return self.method.loss(batch, adv)


# ----------------------------------------------------------------------------- run folders
def _claim(out: Path, config: TrainConfig) -> None:
    """Write the run's config, or check that the folder's run (finished: its verified ``run.json``;
    unfinished: its ``config.json``) has the same identity, starting weights included."""
    finished = (out / runs.RECORD).is_file()
    path = out / (runs.RECORD if finished else runs.CONFIG)
    if not path.is_file():
        atomic_write_json(path, json.loads(canonical_json(asdict(config))))
        return
    held = runs.read_record(out, verify=False)["config"] if finished else None  # a bad record says so itself
    try:
        held = TrainConfig(**(held if finished else json.loads(path.read_text()))).identity()
    except (TypeError, ValueError) as err:
        raise ValueError(f"run folder {out}: {path.name} is not a training configuration of this version "
                         f"({str(err).splitlines()[0]}); choose another --out or delete the folder") from None
    wanted = config.identity()
    if held != wanted:
        diff = sorted(k for k in set(held) | set(wanted) if held.get(k) != wanted.get(k))
        raise ValueError(f"run folder {out} holds {'a finished run of ' if finished else ''}another configuration "
                         f"(differs in {diff}); choose another --out or delete the folder")


def finished_run(config: TrainConfig, out: str | os.PathLike | None = None) -> Path | None:
    """The folder :func:`train` would return at once for ``config`` (a finished run of the same identity, at
    ``out`` or its default place), or ``None``; writes nothing.  A finished run of another identity there is
    the same ``ValueError`` as :func:`train`'s."""
    config.check()
    config = config.identified()
    out = Path(out) if out is not None else runs.runs_root() / config.name()
    if not (out / runs.RECORD).is_file():
        return None
    _claim(out, config)  # a finished run only reads: its record against this identity
    return out


# ----------------------------------------------------------------------------- the loop
def train(config: TrainConfig, out: str | os.PathLike | None = None, *, stop_after: int | None = None,
          progress: bool = True, device: str | torch.device | None = None) -> Path:
    """Fine-tune with ``config`` into run folder ``out`` (default ``<cache>/runs/<name>``, ``name`` =
    ``config.identified().name()``: the configuration and the starting weights' digest); returns the
    folder.  A finished run of the same identity is returned as is, and one of another identity refused
    (a ``ValueError``); an interrupted one resumes.  ``stop_after``
    ends this call after that many total steps (a checkpoint is written there), as an interruption would.
    On the CPU the run uses ``config.threads`` torch threads (restored afterwards).
    """
    from hrvlm.data.real import REAL, require_files
    from hrvlm.data.registry import get_dataset

    d = init_distributed()
    device_type = d.device(device).type  # a machine without the device fails in one line, before any folder
    config.check()
    resolved = config.resolved()
    if resolved.dataset in REAL:  # a missing ImageNet fails before the model loads, saying how to get it
        require_files(resolved.dataset, resolved.split, resolved.dataset_options.get("root"))
    if config.batch_size % d.world:
        raise ValueError(f"batch_size {config.batch_size} is not divisible by the {d.world} processes")
    if d.world > 1 and config.batchnorm == "batch" and device_type != "cuda":
        # torch's SyncBatchNorm runs on GPUs only; per-rank statistics would change the results
        raise ValueError("batchnorm='batch' with several CPU processes would normalise each rank's part of the "
                         "batch separately; use batchnorm='frozen' (the default) or one process")
    # the training set's size before the model loads and before the run folder exists (a mini set is
    # built lazily in milliseconds; a real one is listed twice, which is seconds against hours of training)
    size = len(get_dataset(resolved.dataset, resolved.split, **resolved.dataset_options))
    if config.batch_size > size:
        raise ValueError(f"batch_size {config.batch_size} exceeds the {size} training images of {resolved.dataset}; "
                         f"give --batch-size {size} or less")
    config = config.identified()
    out = Path(out) if out is not None else runs.runs_root() / config.name()
    if not (out / runs.RECORD).is_file():
        check_writable_folder(out, "run folder", "; choose another --out, or set HRVLM_CACHE to a writable folder")
    previous_threads = torch.get_num_threads()
    if device_type == "cpu":
        torch.set_num_threads(config.threads)
    try:
        # rank 0 alone writes the folder; its lock makes a concurrent trainer of the same run wait (then
        # find it finished) and makes the leftovers of a killed one safe to remove
        with folder_lock(out) if d.main else contextlib.nullcontext():
            return _train(config, out, d, stop_after=stop_after, progress=progress, device=device)
    finally:
        torch.set_num_threads(previous_threads)


def _train(config: TrainConfig, out: Path, d: Dist, *, stop_after: int | None, progress: bool, device) -> Path:
    """The run, step by step: its folder, what trains, the optimisation, a checkpoint's state, the batches,
    the loop, the record."""
    if _open_folder(out, config, d):
        return out
    setup = _build(config, d.device(device))
    if not setup.params:  # e.g. CLIP: the reference row, nothing to fine-tune
        return _finish(out, config, setup, d, _Progress(), steps=0)
    optimisation = _Optimisation.build(config, setup)
    objective = _objective(config, setup, d)
    state = load_checkpoint(out)
    done = _Progress() if state is None else _restore(state, setup, optimisation)
    end = config.steps if stop_after is None else min(config.steps, stop_after)
    batches = _batches(config, setup, d, done.step, end)  # draws from torch's RNG: before its state is restored
    if state is not None:
        set_rng_state(state["rng"][d.rank])
    _loop(config, out, d, setup, optimisation, objective, done, batches, end, progress)
    if end < config.steps:
        return out
    return _finish(out, config, setup, d, done, steps=config.steps)


def _open_folder(out: Path, config: TrainConfig, d: Dist) -> bool:
    """Claim the run folder (rank 0) and clear what a killed run left; whether the run there is finished."""
    out.mkdir(parents=True, exist_ok=True)
    if d.main:
        _claim(out, config)  # a finished run of another configuration or other starting weights is refused
        remove_temporaries(out)  # a kill before an atomic write's rename
        if (out / runs.RECORD).is_file():
            discard_checkpoint(out)  # a kill between the record and the checkpoint's removal
    return (out / runs.RECORD).is_file()


@dataclass
class _Setup:
    """What a run trains, as it starts (the same on every rank): the model, the method set up on it, the
    training set, and the parameters the optimiser steps."""

    model: nn.Module
    method: Method
    data: torch.utils.data.Dataset
    extras: dict[str, nn.Parameter]          # the method's own parameters
    params: list[tuple[str, nn.Parameter]]   # the model's trainable parameters, then the extras ("method.<name>")
    start_digest: str                        # the identity of the starting weights (a tag alone is not one)
    device: torch.device
    precision: Precision


def _build(config: TrainConfig, device: torch.device) -> _Setup:
    """Seed, load the model, build the training set, set the method up; mark what trains."""
    from hrvlm.data.registry import get_spec
    from hrvlm.methods import TrainContext, build_method
    from hrvlm.models.clip import load_clip
    from hrvlm.models.weights import state_digest
    from hrvlm.profiles import get_profile

    spec = get_spec(config.dataset)
    method = build_method(config.method, config.method_settings)
    precision = precision_policy(device, config.precision)
    seed_rngs(config.seed)
    model, _, tokenizer = load_clip(config.model, config.pretrained, device=device)
    data = _training_set(config, spec, model.image_size)
    start_digest = state_digest(model.clip)
    # setup sees the pretrained weights, also when resuming: frozen copies are of the original model
    eps = get_profile(config.profile).eps(config.eps)
    method.setup(TrainContext(model=model, tokenizer=tokenizer, dataset=spec, eps=eps, device=device,
                              autocast=precision.dtype, attack_autocast=precision.attack_dtype,
                              seed=config.seed, train_set=data))
    extras, params = _trained_parameters(model, method)
    return _Setup(model, method, data, extras, params, start_digest, device, precision)


def _trained_parameters(model: nn.Module, method: Method) -> tuple[dict[str, nn.Parameter], list]:
    """The method's own parameters, and everything the optimiser steps (the model's parameters the method
    trains, the only ones left requiring gradients, then those extras as ``method.<name>``)."""
    named = list(method.trainable_parameters(model))
    extras = dict(method.extra_parameters())
    trainable = {id(p) for _, p in named}
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)
    return extras, named + [(f"method.{k}", p) for k, p in extras.items()]


def _training_set(config: TrainConfig, spec, image_size: int):
    """The training images at the model's resolution (real sets resized first, as TeCoA and FARE train at
    224 px: the training attack's ε-ball lives in the pixels the model sees), in memory where they can be."""
    from hrvlm.data.registry import get_dataset

    data = get_dataset(spec.name, config.split, **{**spec.options, **config.dataset_options, "image_size": image_size,
                                                   "resolution": "resize-first"})
    if hasattr(data, "materialize"):
        data.materialize()
    return data


@dataclass
class _Optimisation:
    """The optimiser, its learning-rate schedule and the gradient scaler, and one update with them."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler

    @classmethod
    def build(cls, config: TrainConfig, setup: _Setup) -> "_Optimisation":
        own_lr = {f"method.{k}": lr for k, lr in setup.method.extra_learning_rates().items()}
        optimizer = build_optimizer(config, setup.params, own_lr)
        scaler = setup.precision.grad_scaler()
        if scaler.is_enabled():  # a step skipped on overflow still advances the schedule: intended, not a bug
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step", category=UserWarning)
        return cls(optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config.warmup, config.steps)),
                   scaler)

    def step(self, loss: torch.Tensor, params: list[tuple[str, nn.Parameter]], grad_clip: float | None) -> None:
        self.optimizer.zero_grad(set_to_none=True)  # also drops whatever an attack left in .grad
        self.scaler.scale(loss).backward()
        if grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_([p for _, p in params], grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()


def _objective(config: TrainConfig, setup: _Setup, d: Dist) -> nn.Module:
    """The method's loss as a module (:class:`_Objective`), wrapped in DDP when several processes train."""
    objective = _Objective(setup.model, setup.method, setup.extras)
    if d.world > 1 and config.batchnorm == "batch":
        nn.SyncBatchNorm.convert_sync_batchnorm(setup.model)  # in place: the method's references stay valid
    if d.world > 1:
        cuda = setup.device.type == "cuda"
        objective = nn.parallel.DistributedDataParallel(objective, device_ids=[setup.device.index] if cuda else None)
    return objective


@dataclass
class _Progress:
    """How far a run is: its step (= data position), the per-step losses and method figures, its timings."""

    step: int = 0
    timing: dict = field(default_factory=lambda: {"elapsed": 0.0, "epoch_times_s": [], "epoch_start": 0.0})
    losses: list = field(default_factory=list)
    logs: list = field(default_factory=list)


def _save(out: Path, d: Dist, setup: _Setup, optimisation: _Optimisation, done: _Progress, step: int,
          elapsed: float) -> None:
    """The checkpoint after ``step`` steps: every rank's RNG states, the rest from rank 0."""
    rng = d.gather(rng_state())
    if d.main:
        save_checkpoint(out, {"step": step, "model": setup.model.state_dict(),
                              "optimizer": optimisation.optimizer.state_dict(),
                              "scheduler": optimisation.scheduler.state_dict(),
                              "scaler": optimisation.scaler.state_dict(),
                              "method": setup.method.state_dict(), "rng": rng, "losses": done.losses, "logs": done.logs,
                              "extras": {k: v.detach().cpu() for k, v in setup.extras.items()},
                              "timing": {**done.timing, "elapsed": elapsed}})


def _restore(state: dict, setup: _Setup, optimisation: _Optimisation) -> _Progress:
    """Load what :func:`_save` wrote (but the RNG states, restored once the loader has drawn its seed)."""
    setup.model.load_state_dict(state["model"])
    for k, v in state["extras"].items():
        setup.extras[k].data.copy_(v)
    optimisation.optimizer.load_state_dict(state["optimizer"])
    optimisation.scheduler.load_state_dict(state["scheduler"])
    optimisation.scaler.load_state_dict(state["scaler"])
    setup.method.load_state_dict(state["method"])
    return _Progress(int(state["step"]), state["timing"], list(state["losses"]), list(state["logs"]))


def _batches(config: TrainConfig, setup: _Setup, d: Dist, start: int, end: int) -> Iterator:
    """This rank's part of batches ``start .. end-1`` as :class:`~hrvlm.methods.Batch` es on the device.  The
    loader's iterator starts here, at once: it draws a seed from torch's RNG."""
    from hrvlm.methods import Batch

    on_device, device = config.decode == "device", setup.device
    loader = torch.utils.data.DataLoader(
        EncodedImages(image_files(setup.data)) if on_device else _Indexed(setup.data),
        batch_sampler=_Steps(start, end, config.batch_size, len(setup.data), config.seed, d.rank, d.world),
        num_workers=config.num_workers, pin_memory=device.type == "cuda",
        collate_fn=collate_encoded if on_device else None)
    items = iter(loader)

    def batches():
        for images, labels, index in items:
            if on_device:
                images = decode_batch(images, device, setup.model.image_size)
            yield Batch(images, labels.long(), index).to(device)
    return batches()


def _loop(config: TrainConfig, out: Path, d: Dist, setup: _Setup, optimisation: _Optimisation, objective: nn.Module,
          done: _Progress, batches: Iterator, end: int, progress: bool) -> None:
    """Steps ``done.step .. end-1``: attack in eval mode, the loss in training mode, one update; ``done``
    gains the losses, figures and timings (``elapsed`` and ``steps_per_epoch`` once the run ends); a
    checkpoint every ``checkpoint_every`` steps, every ``checkpoint_seconds`` and at ``end`` unless the run ends there."""
    start, timing, model, method = done.step, done.timing, setup.model, setup.method
    per_epoch = len(setup.data) // config.batch_size
    bar = _progress(progress and d.main, start, config)
    t0, last_save, base = time.perf_counter(), time.perf_counter(), timing["elapsed"]
    set_train_mode(model, config.batchnorm)
    for step, batch in enumerate(batches, start=start):
        with attack_mode(model):
            adv = method.perturb(batch)
        with setup.precision.autocast():
            loss, figures = objective(batch, adv)
        optimisation.step(loss, setup.params, config.grad_clip)
        done.losses.append(d.mean(float(loss.detach())))  # the global batch's loss
        done.logs.append(figures)  # the method's figures, on rank 0's part of the batch
        elapsed = base + time.perf_counter() - t0
        if per_epoch and (step + 1) % per_epoch == 0:
            timing["epoch_times_s"].append(round(elapsed - timing["epoch_start"], 3))
            timing["epoch_start"] = elapsed
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{done.losses[-1]:.4f}",
                            **{"img/s": f"{(step + 1 - start) * config.batch_size / (elapsed - base):.1f}"})
        # no checkpoint after the last step: _finish writes the weights next (ViT-B/32's checkpoint is 1.8 GB),
        # and a kill during it loses no more than one anywhere else would
        due = (step + 1) % config.checkpoint_every == 0 or step + 1 == end
        timely = time.perf_counter() - last_save >= config.checkpoint_seconds
        if step + 1 < config.steps and d.broadcast(due or timely):
            _save(out, d, setup, optimisation, done, step + 1, elapsed)
            last_save = time.perf_counter()
    if bar is not None:
        bar.close()
    if end == config.steps:
        done.timing = {**timing, "elapsed": base + time.perf_counter() - t0, "steps_per_epoch": per_epoch}


def _progress(enabled: bool, start: int, config: TrainConfig):
    """The run's progress (:func:`hrvlm.core.progress.progress`: a bar on a terminal, lines in a log), or ``None``."""
    if not enabled:
        return None
    from hrvlm.core.progress import progress

    return progress(initial=start, total=config.steps, desc=f"train {config.method}")


def _finish(out: Path, config: TrainConfig, setup: _Setup, d: Dist, done: _Progress, *, steps: int) -> Path:
    """Write the weights and the run record (rank 0); the run is finished once ``run.json`` exists."""
    from safetensors.torch import save as save_safetensors

    from hrvlm.core.environment import computed_on
    from hrvlm.models.weights import state_digest

    model, extras, timing = setup.model, setup.extras, done.timing
    model.eval()
    if d.main:
        atomic_write_bytes(out / runs.WEIGHTS, save_safetensors(
            {k: v.detach().cpu().contiguous() for k, v in model.clip.state_dict().items()}))
        files = [runs.WEIGHTS]
        if extras:
            atomic_write_bytes(out / runs.METHOD_WEIGHTS, save_safetensors(
                {k: v.detach().cpu().contiguous() for k, v in extras.items()}))
            files.append(runs.METHOD_WEIGHTS)
        train_s, per_epoch = timing.get("elapsed", 0.0), timing.get("steps_per_epoch")
        record = {
            "model": config.model, "pretrained": config.pretrained, "pretrained_digest": setup.start_digest,
            "profile": config.profile, "fabricated": bool(config.dataset_options.get("fabricated")),
            "method": setup.method.config(), "head": setup.method.head_spec(), "config": asdict(config),
            "seed": config.seed, "steps": steps, "world_size": d.world, "precision": setup.precision.to_dict(),
            "train_time_s": round(train_s, 3), "epoch_times_s": timing.get("epoch_times_s", []),
            # the paper reports time per epoch; runs shorter than one epoch get it extrapolated
            "steps_per_epoch": per_epoch,
            "epoch_time_s_estimate": round(train_s / steps * per_epoch, 3) if steps and per_epoch else None,
            "images_per_s": round(steps * config.batch_size / train_s, 2) if steps and train_s else None,
            "losses": done.losses, "logs": done.logs, "weights_digest": state_digest(model.clip),
            "environment": {**computed_on(setup.device), "torch_threads": torch.get_num_threads()},
            "sha256": {name: file_sha256(out / name) for name in files},
        }
        runs.write_record(out, record)
        discard_checkpoint(out)
    d.barrier()
    return out


# ----------------------------------------------------------------------------- command line
def configure_parser(parser: argparse.ArgumentParser) -> None:
    from hrvlm.methods import METHODS

    parser.add_argument("--method", required=True, metavar="METHOD",
                        help=f"a registered method: {', '.join(sorted(METHODS))}")
    parser.add_argument("--profile", default="mini", help="profile whose settings to use (smoke, mini, full)")
    parser.add_argument("--model", default=None, help="override the profile's model")
    parser.add_argument("--dataset", default=None,
                        help="override the profile's fine-tuning set (e.g. tinyimagenet under --profile full)")
    parser.add_argument("--root", default=None, help="data root of real datasets (default $HRVLM_DATA)")
    parser.add_argument("--pretrained", default=None,
                        help=f"override the profile's weights (a tag, checkpoint file or run; {RANDOM_INIT!r}: none)")
    parser.add_argument("--steps", type=int, default=None, help="override the profile's number of steps")
    parser.add_argument("--batch-size", type=int, default=None, help="override the global batch size")
    parser.add_argument("--lr", type=float, default=None, help="override the learning rate")
    parser.add_argument("--eps", type=read_eps, default=None,
                        help="training ε: a multiple of the profile's ε unit (eps_unit, the analogue of 1/255: "
                             "--eps 1 is one unit) or an explicit fraction of the [0, 1] pixel range such as 2/255; "
                             "default: the profile's")
    parser.add_argument("--precision", choices=PRECISION_CHOICES, default=None, help="default: auto")
    parser.add_argument("--seed", type=int, default=None, help="override the seed")
    parser.add_argument("--decode", choices=DECODE_CHOICES, default=None,
                        help="where training JPEGs are decoded: in the loader's workers (PIL) or as a batch on the "
                             "device (nvJPEG on GPUs; ImageNet and TinyImageNet); default: the profile's")
    parser.add_argument("--num-workers", type=int, default=None,
                        help="DataLoader worker processes (default: the profile's)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                        help="a method setting, e.g. --set lambda_=10 (repeatable)")
    parser.add_argument("--out", default=None, help="run folder (default <cache>/runs/<method>-<profile>-s<seed>-<hash>)")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _settings(pairs: list[str]) -> dict:
    settings = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--set takes KEY=VALUE, got {pair!r}")
        try:
            settings[key] = json.loads(value)
        except json.JSONDecodeError:
            settings[key] = value
    return settings


def run(args: argparse.Namespace) -> int:
    from hrvlm.profiles import get_profile

    # a bad configuration raises here, before any model loads (hrvlm.cli prints it in one line)
    options = None if args.root is None else {**get_profile(args.profile).dataset_options, "root": args.root}
    eps = None if args.eps is None else args.eps.multiple(get_profile(args.profile).eps_unit)
    config = config_from_profile(args.method, args.profile, _settings(args.set), steps=args.steps,
                                 model=args.model, pretrained=args.pretrained, dataset=args.dataset,
                                 dataset_options=options,
                                 batch_size=args.batch_size, lr=args.lr, eps=eps,
                                 precision=args.precision, seed=args.seed, decode=args.decode,
                                 num_workers=args.num_workers)
    out = train(config, args.out, progress=not args.no_progress, device=args.device)
    if int(os.environ.get("RANK", "0")) == 0:
        record = runs.read_record(out)
        print(json.dumps({k: record[k] for k in ("steps", "train_time_s", "epoch_time_s_estimate", "images_per_s",
                                                  "head")}, indent=2))
        resolved = config.resolved()
        root = resolved.dataset_options.get("root")
        where = f" --profile {shlex.quote(config.profile)}" + (f" --root {shlex.quote(str(root))}" if root else "")
        print(f"run: {out}\nevaluate: hrvlm eval --pretrained {shlex.quote(str(out))} --datasets "
              f"{shlex.quote(resolved.dataset)}{where}")
    return 0
