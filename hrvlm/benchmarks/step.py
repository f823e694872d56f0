"""``hrvlm bench step``: the cost of one adversarial training step, PGD-k + forward/backward + AdamW.

A generic step, the same for every method up to its number of attack steps k (the papers' training
attacks: :data:`PAPER_ATTACK_STEPS`): k L∞ PGD steps on the image (last iterate, as in training), then
the image tower's forward on the adversarial batch against fixed text prototypes (text features
computed once per run, as a frozen text tower allows), cross-entropy, backward and an AdamW step of the
image tower.  Method-specific extras (FARE's and PMG-AFT's frozen-teacher forwards, HRVLM's hyperbolic
head and text perturbation) are left out here; ``hrvlm bench train`` times the real methods.

Rows, per k: **hrvlm** (the precision policy's autocast and loss scaling, weights frozen during the
attack, fused AdamW on a GPU; on a GPU also with torch's default AdamW, to measure the fused one) and
the **reference** (float32, weights trainable during the attack, torch's default AdamW), side by side.
On a GPU (ViT-B/32) each row also gets TFLOP/s, the percentage of the bf16 ceiling (a step costs
``2k + 3`` forwards) and the projected ImageNet epoch (1.28 M images).
"""
from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F

from hrvlm.attacks import ThreatModel, pgd_maximize
from hrvlm.attacks.base import attack_context, ce_loss
from hrvlm.attacks.threat import eps_argument
from hrvlm.core.precision import precision_policy

from hrvlm.benchmarks._measure import (EPOCH_IMAGES, VIT_B32_GFLOP, add_arguments, ceilings, environment, print_environment,
                       rate_unit, reference_pgd, run, seconds, setup, train_forwards)

# training-attack steps of each method (the papers and public code of TeCoA, PMG-AFT, FARE and QT-AFT;
# HRVLM's 3 steps per the papernotes.org note on the paper)
PAPER_ATTACK_STEPS = {"clip": 0, "tecoa": 2, "pmg-aft": 2, "hrvlm": 3, "fare": 10, "qtaft": 10}


def training_step(clf, x, y, steps: int, eps: float, prec, fused: bool):
    """hrvlm's step: attack in ``prec``'s autocast with frozen weights, then a (scaled) AdamW step."""
    params = list(clf.model.clip.visual.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-5, fused=fused or None)
    scaler = prec.grad_scaler()
    threat = ThreatModel("linf", eps)

    def objective(adv):
        return ce_loss(clf(adv).float(), y)

    def step():
        adv = x
        if steps:
            with attack_context(clf):
                adv = pgd_maximize(objective, x, threat, steps, eps, keep_best=False, autocast=prec.attack_dtype)
        clf.train()
        with prec.autocast(), clf.model.unchecked():  # the batch is checked once, by the data pipeline
            loss = F.cross_entropy(clf(adv).float(), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    return step


def reference_step(clf, x, y, steps: int, eps: float):
    """The plain float32 step: the reference PGD loop (weights trainable), default AdamW."""
    params = list(clf.model.clip.visual.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    generator = torch.Generator(device=x.device)

    def step():
        clf.eval()
        with clf.model.unchecked():  # the peers' loops have no range check
            adv = reference_pgd(clf, x, y, eps, eps, steps, generator.manual_seed(0)) if steps else x
            clf.train()
            loss = F.cross_entropy(clf(adv), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def measure(args: argparse.Namespace) -> dict:
    work = setup(args)
    ks = args.attack_steps
    clf = work.classifier()
    size = clf.model.image_size
    x, y = work.batch_tensors(size)
    prec = precision_policy(work.device, args.precision)
    ceiling = ceilings(work.device) if work.is_vit_b32 else None
    fused = work.device.type == "cuda"
    results = []
    try:
        for k in ks:
            variants = [(f"hrvlm, {prec.name}" + (", fused AdamW" if fused else ""),
                         training_step(clf, x, y, k, args.eps, prec, fused))]
            if fused:  # what the fused optimiser buys, measured rather than assumed
                variants.append((f"hrvlm, {prec.name}, default AdamW",
                                 training_step(clf, x, y, k, args.eps, prec, False)))
            variants.append(("reference, fp32", reference_step(clf, x, y, k, args.eps)))
            for label, fn in variants:
                t = seconds(fn, work.device, args.repeats, args.warmup)
                row = {"attack_steps": k, "label": label, "seconds": t, "images_per_s": work.batch / t,
                       "methods": [m for m, s in PAPER_ATTACK_STEPS.items() if s == k]}
                if work.is_vit_b32:
                    row["tflop_s"] = work.batch * train_forwards(k) * VIT_B32_GFLOP / t / 1e3
                    row["percent_of_ceiling"] = 100 * row["images_per_s"] / ceiling.images_per_s(train_forwards(k))
                    row["epoch_minutes"] = EPOCH_IMAGES / row["images_per_s"] / 60
                results.append(row)
    finally:
        clf.eval()
    return {"benchmark": "step", "environment": environment(work.device), "workload": work.describe(size),
            "eps": args.eps, "precision": prec.to_dict(), "ceilings": None if ceiling is None else vars(ceiling),
            "rows": results}


def report(fig: dict) -> None:
    print_environment(fig["environment"])
    print(f"PGD-k + one training step (image tower, AdamW), {fig['workload']}, "
          f"precision {fig['precision']['precision']}")
    if fig["ceilings"]:
        c = fig["ceilings"]
        print(f"  ceilings: copy {c['copy_gb_s']:.0f} GB/s, {c['matmul_dtype']} matmul {c['matmul_tflop_s']:.3g} "
              f"TFLOP/s (FLOP model: a step is 2k + 3 forwards of {VIT_B32_GFLOP} GFLOP)")
    for k in sorted({r["attack_steps"] for r in fig["rows"]}):
        rows = [r for r in fig["rows"] if r["attack_steps"] == k]
        ref = rows[-1]
        print(f"  k = {k:2d} ({', '.join(ref['methods']) or '—'})")
        for r in rows:
            extra = (f"  {r['tflop_s']:6.1f} TFLOP/s  {r['percent_of_ceiling']:5.1f} % of ceiling  "
                     f"ImageNet epoch {r['epoch_minutes']:6.1f} min") if "tflop_s" in r else ""
            print(f"    {r['label']:32s} {r['images_per_s']:9.1f} {rate_unit(fig['environment']['device'])}  "
                  f"{ref['seconds'] / r['seconds']:5.2f}x"
                  f" the reference{extra}")


def step_counts(text: str) -> list[int]:
    """``"0,2,3"`` → ``[0, 2, 3]`` (argparse type: a bad value is a one-line usage error)."""
    try:
        ks = sorted({int(k) for k in text.split(",")})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated step counts such as 0,2,3,10, got {text!r}")
    if ks[0] < 0:
        raise argparse.ArgumentTypeError(f"step counts must be >= 0, got {text!r}")
    return ks


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hrvlm bench step", description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--attack-steps", type=step_counts, default=sorted(set(PAPER_ATTACK_STEPS.values())),
                        help="comma-separated PGD step counts k (default: the papers' 0,2,3,10)")
    parser.add_argument("--eps", type=eps_argument(), default=1 / 255,
                        help="training L∞ radius (step size = eps): an explicit fraction of the pixel range (2/255) or "
                             "a multiple of 1/255 (2), as --eps in every verb; default 1/255")
    return parser


def main(argv: list[str] | None = None) -> int:
    return run(sys.modules[__name__], argv)


if __name__ == "__main__":
    raise SystemExit(main())
