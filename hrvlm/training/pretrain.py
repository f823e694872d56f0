"""Contrastive pretraining of a tiny CLIP on the mini world's image–caption corpus.

The analogue of CLIP's web-scale pretraining: the symmetric InfoNCE loss over a batch of
``(image, caption)`` pairs of ``mini-pretrain``, AdamW with linear warm-up and cosine decay, seeded and
deterministic on the CPU (schedule, batch order and weight-decay rule: :mod:`hrvlm.training.schedule`, shared
with fine-tuning).  A run lives in ``cache_dir("pretrained", f"{model}-{config_hash}")``:

* ``checkpoint.pt`` (+ ``checkpoint.json`` with its sha256 and step), written atomically every
  ``checkpoint_every`` steps or ``checkpoint_seconds`` seconds, whichever comes first: model, optimiser,
  scheduler and RNG states.  Re-running an interrupted
  run resumes there; batch ``t`` depends only on ``(seed, t)``, so resuming gives the same weights (removed
  once the run has finished);
* ``model.safetensors`` (the inner open_clip state dict) and ``record.json`` (config, seed, steps, wall
  and CPU time, thread count and the weights' sha256) once finished.  A weights file whose sha256 does
  not match its record is never loaded: it is rebuilt.

Torch's CPU kernels split their reductions by thread, so the weights depend on the thread count (1 and 2
threads gave zero-shot averages of 0.794 and 0.776): a run uses ``config.threads`` threads on every
machine, and the count is part of the key, as is the image tower's memory format (channels-last picks
other convolution kernels).  The key covers only what the weights are made from
(:func:`hrvlm.miniworld.datasets.rendering_inputs` of the corpus): changing an evaluation or fine-tuning
set does not retrain.  The record holds no accuracies for the same reason; :func:`zeroshot_report`
evaluates the weights on today's sets.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hrvlm.training.checkpoints import (discard_checkpoint, load_checkpoint, rng_state, save_checkpoint, seed_rngs,
                                       set_rng_state)
from hrvlm.training.schedule import batch_indices, decay_groups, lr_lambda
from hrvlm.core.storage import (atomic_write_bytes, atomic_write_json, cache_dir, config_hash, file_sha256, folder_lock,
                      remove_temporaries)


@dataclass(frozen=True)
class PretrainConfig:
    """Everything that determines the pretrained weights (its hash keys the cache)."""

    model: str = "hrvlm-tiny-cnn"
    corpus: str = "mini-pretrain"
    corpus_size: int = 40000
    image_size: int = 32
    steps: int = 3000
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.1
    warmup: int = 100
    seed: int = 0
    # Caption curriculum: (fraction of the steps from which it applies, caption quality).  With the web
    # mixture from the start, the colours (a shortcut that alone tells most captions of a batch apart)
    # are learned first and shapes never catch up on the CPU budget; naming mostly shapes first, then
    # switching to the web mixture, learns both (measurements in the mini-world chapter).
    captions: tuple[tuple[float, str], ...] = ((0.0, "pretrain:shapes-first"), (0.5, "pretrain:web"))
    checkpoint_every: int = 250
    checkpoint_seconds: float = 60.0   # …or after this long, whichever first: a kill loses at most a minute
    # Torch threads of the run: fixed, so the weights are the same on every machine (see the module
    # docstring).  On the idle 2-core reference machine a step of batch 128 takes 0.187 s with 1 thread,
    # 0.100 s with 2, and 0.080 s with 2 threads and a channels-last image tower.
    threads: int = 2
    channels_last: bool = True
    # The 49,408-token embedding is 93 % of the tiny model's weights while the mini world uses ~100 tokens;
    # training it would cost more than the rest of the model, so it stays at its (seeded) random init.
    freeze_token_embedding: bool = True

    def __post_init__(self):
        for name in ("steps", "batch_size", "corpus_size", "image_size", "checkpoint_every", "threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"pretraining {name} must be a positive integer, got {value!r} "
                                 f"(e.g. --{name.replace('_', '-')} {getattr(PretrainConfig, name)})")
        if self.warmup < 0 or not self.lr > 0 or self.weight_decay < 0 or not self.checkpoint_seconds > 0:
            raise ValueError(f"pretraining needs warmup >= 0, lr > 0, weight_decay >= 0 and checkpoint_seconds > 0; "
                             f"got {self.warmup}, {self.lr}, {self.weight_decay}, {self.checkpoint_seconds}")
        if self.batch_size > self.corpus_size:
            raise ValueError(f"batch size {self.batch_size} exceeds the corpus size {self.corpus_size}; "
                             f"lower --batch-size or raise the corpus size")
        fractions = [f for f, _ in self.captions]
        if not fractions or fractions[0] != 0 or any(b <= a for a, b in zip(fractions, fractions[1:])) \
                or fractions[-1] >= 1:
            raise ValueError(f"captions must start at fraction 0 and increase within [0, 1): {self.captions}")

    def key(self) -> str:
        """Hash of everything the weights depend on: this config (but when checkpoints are written: a
        resumed run gives the same weights), what the corpus is rendered and captioned from
        (:func:`~hrvlm.miniworld.datasets.rendering_inputs`: vocabulary, caption mixtures, the curated tree
        the captions name, the corpus' definition, classnames and templates, the font) and the model's
        architecture config.  Evaluation and fine-tuning sets are not in it."""
        from hrvlm.miniworld.datasets import rendering_inputs
        from hrvlm.models.clip import CONFIG_DIR

        arch = CONFIG_DIR / f"{self.model}.json"
        config = {k: v for k, v in asdict(self).items() if k not in ("checkpoint_every", "checkpoint_seconds")}
        return config_hash({"config": config, "corpus": rendering_inputs(self.corpus),
                            "architecture": json.loads(arch.read_text()) if arch.is_file() else self.model})

    @classmethod
    def profile(cls, name: str, **overrides) -> "PretrainConfig":
        """The configuration of profile ``name`` (``smoke`` or ``mini``), with ``overrides``."""
        if name not in PROFILES:
            raise ValueError(f"unknown pretraining profile {name!r}; choose one of {sorted(PROFILES)}")
        return replace(PROFILES[name], **overrides)


def _profile_configs() -> dict[str, PretrainConfig]:
    """Each profile's ``pretrain`` entry of ``profiles.json`` (overrides of the defaults above)."""
    from hrvlm.profiles import get_profile, profile_names

    def frozen(value):  # JSON lists -> the tuples the frozen config holds
        return tuple(map(frozen, value)) if isinstance(value, list) else value

    return {name: PretrainConfig(**{k: frozen(v) for k, v in get_profile(name).pretrain.items()})
            for name in profile_names() if get_profile(name).pretrain is not None}


PROFILES: dict[str, PretrainConfig] = _profile_configs()


def run_dir(config: PretrainConfig) -> Path:
    """The run's folder (not created here: only a run that starts training makes it)."""
    return cache_dir("pretrained") / f"{config.model}-{config.key()}"


# ----------------------------------------------------------------------------- pieces
def contrastive_loss(image_features: torch.Tensor, text_features: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric InfoNCE over the batch (features unit-norm; pair ``i`` is the positive)."""
    logits = scale * image_features @ text_features.t()
    target = torch.arange(logits.shape[0], device=logits.device)
    return (nn.functional.cross_entropy(logits, target) + nn.functional.cross_entropy(logits.t(), target)) / 2


def _corpus(config: PretrainConfig, tokenizer):
    from hrvlm.miniworld.datasets import MiniWorldDataset

    ds = MiniWorldDataset(config.corpus, "train", n=config.corpus_size, image_size=config.image_size)
    images, _ = ds.tensors()
    tokens = []
    for _, quality in config.captions:
        texts = ds.captions(quality)
        unique = sorted(set(texts))
        tokens_of = dict(zip(unique, tokenizer(unique)))  # tokenise each distinct caption once
        tokens.append(torch.stack([tokens_of[t] for t in texts]))
    return images, tokens


def caption_phase(step: int, config: PretrainConfig) -> int:
    """Index into ``config.captions`` of the caption quality used at ``step``."""
    starts = [round(fraction * config.steps) for fraction, _ in config.captions]
    return max(i for i, start in enumerate(starts) if step >= start)


def _save_checkpoint(path: Path, model, optimizer, scheduler, step: int, elapsed: float) -> None:
    save_checkpoint(path, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                           "scheduler": scheduler.state_dict(), "step": step, "elapsed": elapsed,
                           "rng": rng_state()})



# ----------------------------------------------------------------------------- evaluation
def zeroshot_report(model, tokenizer, profile: str = "mini", datasets=None, progress: bool = False,
                    store=None) -> dict[str, float]:
    """Clean zero-shot top-1 (through :func:`hrvlm.evaluation.evaluate.evaluate`; ``store``: a records file whose
    stored evaluations are reused) on the mini evaluation sets of ``profile``, plus ``"zero-shot average"``
    over all of them but the fine-tuning set."""
    from hrvlm.evaluation.evaluate import EvalRequest, evaluate
    from hrvlm.profiles import get_profile

    prof = get_profile(profile)
    acc = {}
    for name in datasets or prof.eval_datasets:
        request = EvalRequest(name, n=prof.eval_n, dataset_options=prof.dataset_options, batch_size=250)
        record = evaluate(model, tokenizer, request, progress=progress, store=store)[0]
        acc[name] = record["clean_acc"]
    others = [v for k, v in acc.items() if k != prof.train_dataset]
    acc["zero-shot average"] = float(np.mean(others))
    return acc


# ----------------------------------------------------------------------------- training
def pretrain(config: PretrainConfig, stop_after: int | None = None, progress: bool = True) -> Path:
    """Train (or resume) the run of ``config``; returns the path of its ``model.safetensors``.

    ``stop_after`` ends the process-local run after that many total steps without finishing, as an
    interruption would (the checkpoint is written there); the next call resumes.  Runs on
    ``config.threads`` torch threads, restored afterwards.
    """
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        with contextlib.ExitStack() as lock:
            return _pretrain(config, stop_after, progress, lock)
    finally:
        torch.set_num_threads(previous_threads)


def _pretrain(config: PretrainConfig, stop_after: int | None, progress: bool, lock: contextlib.ExitStack) -> Path:
    from safetensors.torch import save as save_safetensors

    from hrvlm.models.clip import load_clip
    from hrvlm.core.progress import progress as progress_bar

    seed_rngs(config.seed)
    model, _, tokenizer = load_clip(config.model, pretrained=None)  # an unknown model fails here, before mkdir
    if model.image_size != config.image_size:
        raise ValueError(f"{config.model} takes {model.image_size} px images but the config asks for "
                         f"{config.image_size}; set image_size={model.image_size}")
    out = run_dir(config)
    lock.enter_context(folder_lock(out))  # one writer at a time (released when pretrain returns)...
    remove_temporaries(out)  # ...so a killed writer's temporaries can go
    model.train()
    model.set_channels_last(config.channels_last)
    # open_clip's full-context text pass, with which the cached weights were made: the trimmed pass is the
    # same function but other float rounding, and the key would not tell the two apart (captions fill the
    # whole 32-token context of most batches, so it saves little here)
    model.trim_text_padding = False
    model.clip.token_embedding.weight.requires_grad_(not config.freeze_token_embedding)
    trained = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(decay_groups(trained, config.weight_decay), lr=config.lr, betas=(0.9, 0.98),
                                  eps=1e-6)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config.warmup, config.steps))
    start, elapsed = 0, 0.0
    state = load_checkpoint(out)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        start, elapsed = int(state["step"]), float(state.get("elapsed", 0.0))

    t0, c0 = time.perf_counter(), time.process_time()
    images, tokens = _corpus(config, tokenizer)
    t_train = time.perf_counter()
    end = config.steps if stop_after is None else min(config.steps, stop_after)
    bar = progress_bar(range(start, end), initial=start, total=config.steps, desc=f"pretrain {config.model}",
                       enabled=progress, mininterval=2.0)
    log_scale_max = math.log(100.0)
    last_save = time.perf_counter()
    for step in bar:
        idx = batch_indices(step, config.batch_size, len(images), config.seed)
        img_f, txt_f, scale = model(images[idx].float() / 255, tokens[caption_phase(step, config)][idx])
        loss = contrastive_loss(img_f, txt_f, scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            model.clip.logit_scale.clamp_(0, log_scale_max)
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
        now = time.perf_counter()
        if (step + 1) % config.checkpoint_every == 0 or step + 1 == end or now - last_save >= config.checkpoint_seconds:
            _save_checkpoint(out, model, optimizer, scheduler, step + 1, elapsed + now - t0)
            last_save = now
    bar.close()
    train_s = time.perf_counter() - t_train
    if end < config.steps:
        return out / "checkpoint.pt"

    model.eval()
    weights = out / "model.safetensors"
    atomic_write_bytes(weights, save_safetensors({k: v.contiguous() for k, v in model.clip.state_dict().items()}))
    record = {"config": asdict(config), "key": config.key(), "seed": config.seed, "steps": config.steps,
              # wall time of the whole build (corpus and training), summed over resumed parts
              "wall_time_s": round(elapsed + time.perf_counter() - t0, 2),
              "steps_per_s": round((end - start) / max(train_s, 1e-9), 3), "resumed_at": start,
              # CPU seconds of this process (all threads) since the last resume: wall time on a shared
              # machine overstates the cost, CPU time does not
              "cpu_time_s": round(time.process_time() - c0, 2),
              "torch_threads": config.threads, "torch": torch.__version__,
              "weights": weights.name, "sha256": file_sha256(weights)}
    atomic_write_json(out / "record.json", record)
    discard_checkpoint(out)
    return weights


def load_record(config: PretrainConfig) -> dict | None:
    """The record of a finished run whose weights match their sha256, else None."""
    out = run_dir(config)
    try:
        record = json.loads((out / "record.json").read_text())
        weights = out / record["weights"]
        if weights.is_file() and file_sha256(weights) == record["sha256"]:
            return record
    except (OSError, ValueError, KeyError):
        pass
    return None


def ensure_pretrained(model_name: str | None = None, profile: str = "mini", progress: bool = True) -> Path:
    """The pretrained weights of ``model_name`` (default: the profile's) in ``profile``, trained first if
    absent or corrupt."""
    config = PretrainConfig.profile(profile, **({} if model_name is None else {"model": model_name}))
    if load_record(config) is not None:
        discard_checkpoint(run_dir(config))  # left by a kill between the record and its removal
        return run_dir(config) / "model.safetensors"
    for stale in ("record.json", "model.safetensors"):
        (run_dir(config) / stale).unlink(missing_ok=True)
    return pretrain(config, progress=progress)


def ensure_smoke(model_name: str | None = None) -> Path:
    """The smoke profile's weights (``load_clip(name, pretrained="mini-smoke")``): tests and the CI book."""
    return ensure_pretrained(model_name, "smoke")


def _register_weights() -> None:
    """``load_clip(model, pretrained=<profile's tag>)`` builds (or finds) that profile's weights."""
    import functools

    from hrvlm.profiles import get_profile
    from hrvlm.models.weights import register_weights

    for name in PROFILES:
        register_weights(get_profile(name).pretrained, functools.partial(ensure_pretrained, profile=name))


_register_weights()


# ----------------------------------------------------------------------------- command line
def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default="mini", choices=sorted(PROFILES), help="pretraining profile")
    parser.add_argument("--model", default=PretrainConfig.model, help="registered open_clip config to train")
    parser.add_argument("--steps", type=int, default=None, help="override the profile's number of steps")
    parser.add_argument("--seed", type=int, default=None, help="override the profile's seed")
    parser.add_argument("--force", action="store_true", help="retrain even if a valid cached run exists")


def run(args: argparse.Namespace) -> int:
    from hrvlm.models.clip import check_model_name

    # bad values fail here, before anything is loaded or written (hrvlm.cli prints them in one line)
    overrides = {k: v for k, v in (("steps", args.steps), ("seed", args.seed)) if v is not None}
    config = PretrainConfig.profile(args.profile, model=args.model, **overrides)
    check_model_name(config.model)
    if args.force:
        for stale in ("record.json", "model.safetensors", "checkpoint.pt", "checkpoint.json"):
            (run_dir(config) / stale).unlink(missing_ok=True)
    record = load_record(config)
    if record is None:
        pretrain(config)
        record = load_record(config)
    else:
        print(f"reusing the cached run {run_dir(config)}")
    from hrvlm.evaluation.records import default_store
    from hrvlm.models.clip import load_clip

    model, _, tokenizer = load_clip(config.model, pretrained=run_dir(config) / record["weights"])
    summary = {k: record[k] for k in ("key", "steps", "wall_time_s", "steps_per_s")}
    # today's sets, not the record's; kept in hrvlm eval's store, so a second call reads them back
    summary["zeroshot_top1"] = zeroshot_report(model, tokenizer, args.profile, store=default_store())
    print(json.dumps(summary, indent=2))
    return 0
