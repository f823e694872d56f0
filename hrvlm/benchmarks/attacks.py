"""``hrvlm bench attacks``: PGD-k evaluation throughput, hrvlm's against the plain float32 loop.

One run, one batch, the same steps and step size for every row:

* **hrvlm PGD** (and the same stopping early, as a level-0 evaluation runs it: each image leaves the
  loop at its first misclassified iterate; the run also prints whether the same images fall) in the
  attack precision of :func:`hrvlm.core.precision.precision_policy` (bf16 autocast on an
  Ampere-or-newer GPU, float32 on older GPUs and the CPU), weights frozen, no host synchronisation, best
  iterate kept;
* the same in float32, and the same with weights left trainable (what freezing buys); with a conv tower
  (the mini world's), the same with its BatchNorm layers run one by one instead of folded into the
  convolutions (what folding buys);
* the **reference loop** (:func:`._measure.reference_pgd`): the peers' plain float32 loop;
* ``torchattacks.PGD`` (float32), an independent library's loop.

On a GPU (default: ViT-B/32 at 224 px, random init, batch 256, 1,000 classes) each row also gets
TFLOP/s and the percentage of the bf16 ceiling from the FLOP model of :mod:`._measure` (hrvlm's PGD-k
costs ``2k + 1`` forwards: k steps and one scoring forward of the last iterate; the loops ``2k``), and
the time of a 15-dataset evaluation (≈ 217 k images) is projected.  On the CPU the mini world's tiny
CLIP runs the same rows and the ratios are printed, each row with its share of the CPU's float32 matmul
rate measured in the same run (the forward's FLOP counted by torch): how far faster kernels could go.
``--channels-last`` / ``--compile`` add rows with those switches, to measure whether they pay (they are off
everywhere else); on a GPU ``--compile`` also adds ``torch.compile(mode="reduce-overhead")``, i.e. CUDA graphs.
"""
from __future__ import annotations

import argparse
import copy
import sys

import torch

from hrvlm.attacks import PGD, ThreatModel
from hrvlm.attacks.threat import eps_argument
from hrvlm.core.precision import dtype_name, precision_policy

from hrvlm.benchmarks._measure import (EVAL_IMAGES, Ceilings, add_arguments, ceilings, environment, pgd_eval_forwards,
                       print_environment, rate_unit, reference_pgd, run, seconds, setup)


def rows(clf, x, y, steps: int, eps: float, prec, channels_last: bool = False, compile_: bool = False):
    """``[(label, fn, forwards per image)]``: the attack variants timed side by side (forwards ``None`` where
    the work depends on the images: stopping early)."""
    import torchattacks

    step_size = eps / 4
    threat = ThreatModel("linf", eps)
    ours = PGD(threat, steps=steps, step_size=step_size, autocast=prec.attack_dtype)
    name = dtype_name(prec.attack_dtype)  # attacks never run in fp16 (hrvlm.core.precision says why)
    ours32 = PGD(threat, steps=steps, step_size=step_size)
    generator = torch.Generator(device=x.device)

    def trainable():  # through a plain function, whose weights attack_context cannot see, so does not freeze
        with clf.model.unchecked():
            return ours(lambda images: clf(images), x, y)

    def reference():
        with clf.model.unchecked():  # the peers' loops have no range check either
            return reference_pgd(clf, x, y, eps, step_size, steps, generator.manual_seed(0))

    attack_theirs = torchattacks.PGD(clf, eps=eps, alpha=step_size, steps=steps, random_start=True)

    def theirs():
        with clf.model.unchecked():  # hrvlm's range check costs two host synchronisations per step on a GPU
            return attack_theirs(x, y)

    early = ours.stopping_early()  # what a level-0 evaluation runs: each image stops at its first success
    out = [(f"hrvlm PGD, {name}", lambda: ours(clf, x, y), pgd_eval_forwards(steps)),
           (f"hrvlm PGD, {name}, stopping early", lambda: early(clf, x, y), None)]  # its work: the images
    if prec.attack_dtype is not None:
        out.append(("hrvlm PGD, fp32", lambda: ours32(clf, x, y), pgd_eval_forwards(steps)))
    out.append((f"hrvlm PGD, {name}, weights trainable", trainable, pgd_eval_forwards(steps)))
    unfolded = _batchnorm_unfolded(clf)
    if unfolded is not None:
        out.append((f"hrvlm PGD, {name}, BatchNorm unfolded", lambda: ours(unfolded, x, y), pgd_eval_forwards(steps)))
    if channels_last:
        x_cl = x.contiguous(memory_format=torch.channels_last)
        clf_cl = copy.deepcopy(clf).to(memory_format=torch.channels_last)
        out.append((f"hrvlm PGD, {name}, channels-last", lambda: ours(clf_cl, x_cl, y), pgd_eval_forwards(steps)))
    if compile_:
        compiled = torch.compile(clf)
        out.append((f"hrvlm PGD, {name}, torch.compile", lambda: ours(compiled, x, y), pgd_eval_forwards(steps)))
        if x.is_cuda:  # CUDA graphs replay the whole forward and backward: no per-kernel launch cost
            graphed = torch.compile(clf, mode="reduce-overhead")
            out.append((f"hrvlm PGD, {name}, CUDA graphs (reduce-overhead)", lambda: ours(graphed, x, y),
                        pgd_eval_forwards(steps)))
    out += [("reference loop, fp32 (plain)", reference, 2 * steps),
            ("torchattacks PGD, fp32", theirs, 2 * steps)]
    return out


def _batchnorm_unfolded(clf):
    """A copy of ``clf`` whose conv towers run conv, BatchNorm and ReLU one by one (``None`` without one)."""
    from hrvlm.models.clip import ConvTower

    if not any(isinstance(m, ConvTower) for m in clf.modules()):
        return None
    unfolded = copy.deepcopy(clf)
    for m in unfolded.modules():
        if isinstance(m, ConvTower):
            m.fold_batchnorm = False
    return unfolded


def measure(args: argparse.Namespace) -> dict:
    work = setup(args)
    clf = work.classifier()
    size = clf.model.image_size
    x, y = work.batch_tensors(size)
    prec = precision_policy(work.device, args.precision)
    env = environment(work.device)
    ceiling, gflop = ceilings(work.device), work.gflop(clf.model)
    results = []
    for label, fn, forwards in rows(clf, x, y, args.steps, args.eps, prec, args.channels_last, args.compile):
        t = seconds(fn, work.device, args.repeats, args.warmup)
        row = {"label": label, "seconds": t, "images_per_s": work.batch / t}
        if forwards is not None:
            row["tflop_s"] = work.batch * forwards * gflop / t / 1e3
            row["percent_of_ceiling"] = 100 * row["tflop_s"] / ceiling.matmul_tflop_s
        results.append(row)
    return {"benchmark": "attacks", "environment": env, "workload": work.describe(size), "steps": args.steps,
            "eps": args.eps, "precision": prec.to_dict(), "ceilings": vars(ceiling), "forward_gflop": gflop,
            "vit_b32": work.is_vit_b32,
            "rows": results, "host_syncs": host_syncs(clf, x, y, args.steps, args.eps, prec.attack_dtype),
            "stopping_early": stopping_early_agreement(clf, x, y, args.steps, args.eps, prec.attack_dtype)}


def stopping_early_agreement(clf, x, y, steps: int, eps: float, dtype) -> dict:
    """Robust accuracy of the batch under hrvlm's PGD with and without stopping early, and how many
    images' outcomes differ (by construction none, up to float round-off in smaller batches)."""
    attack = PGD(ThreatModel("linf", eps), steps=steps, step_size=eps / 4, autocast=dtype)
    with torch.no_grad():
        full, early = (clf(a(clf, x, y)).argmax(1) == y for a in (attack, attack.stopping_early()))
    return {"robust_full": float(full.float().mean()), "robust_early": float(early.float().mean()),
            "differ": int((full != early).sum()), "n": int(y.numel())}


def host_syncs(clf, x, y, steps: int, eps: float, dtype) -> str:
    """On a GPU, run hrvlm's PGD with CUDA's sync debug mode set to "error": "none", or what synchronised."""
    if x.device.type != "cuda":
        return "not checked (CPU; tests/test_attacks.py checks the ops on the CPU)"
    attack = PGD(ThreatModel("linf", eps), steps=steps, step_size=eps / 4, autocast=dtype)
    torch.cuda.synchronize()
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        attack(clf, x, y)
        return "none"
    except RuntimeError as error:
        return f"synchronised: {error}"
    finally:
        torch.cuda.set_sync_debug_mode(previous)


def report(fig: dict) -> None:
    print_environment(fig["environment"])
    steps = fig["steps"]
    print(f"PGD-{steps} evaluation, {fig['workload']}, precision {fig['precision']['precision']}")
    ceiling, gflop, vit = fig["ceilings"], fig["forward_gflop"], fig["vit_b32"]
    rate = "TFLOP/s" if vit else "GFLOP/s"
    print(f"  ceilings: copy {ceiling['copy_gb_s']:.0f} GB/s, {ceiling['matmul_dtype']} matmul "
          f"{ceiling['matmul_tflop_s'] * (1 if vit else 1e3):.3g} {rate} → PGD-{steps} ceiling "
          f"{Ceilings(**ceiling).images_per_s(pgd_eval_forwards(steps), gflop):.0f} images/s "
          f"({'FLOP model' if vit else 'counted'} {gflop:.3g} GFLOP/forward, step = 2 forwards)")
    reference = next(r for r in fig["rows"] if r["label"].startswith("reference loop"))
    for r in fig["rows"]:
        extra = "" if "tflop_s" not in r else (f"  {r['tflop_s'] * (1 if vit else 1e3):6.1f} {rate}  "
                                                f"{r['percent_of_ceiling']:5.1f} % of the matmul rate")
        print(f"  {r['label']:42s} {r['images_per_s']:9.1f} {rate_unit(fig['environment']['device'])}  "
              f"{reference['seconds'] / r['seconds']:5.2f}x the reference loop{extra}")
    print(f"  host synchronisations inside hrvlm's PGD: {fig['host_syncs']}")
    agree = fig["stopping_early"]
    print(f"  stopping early: robust {100 * agree['robust_early']:.1f} % against {100 * agree['robust_full']:.1f} % "
          f"without; {agree['differ']} of {agree['n']} images' outcomes differ (its speed-up grows as robust "
          f"accuracy falls)")
    if vit:
        best = fig["rows"][0]
        print(f"  15-dataset evaluation ({EVAL_IMAGES:,} images) at the first row's rate: "
              f"{EVAL_IMAGES / best['images_per_s'] / 60:.1f} min")
        print("  goals: ≥ 40 % of the ceiling, ≥ 5x the reference loop, 15 datasets in ≤ 10 min")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hrvlm bench attacks", description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--eps", type=eps_argument(), default=1 / 255,
                        help="L∞ radius: an explicit fraction of the pixel range (2/255) or a multiple of 1/255 "
                             "(2), as --eps in every verb; default 1/255")
    parser.add_argument("--channels-last", action="store_true", help="add a channels-last row")
    parser.add_argument("--compile", action="store_true",
                        help="add torch.compile rows (default mode; on a GPU also CUDA graphs; compile time excluded)")
    return parser


def main(argv: list[str] | None = None) -> int:
    return run(sys.modules[__name__], argv)


if __name__ == "__main__":
    raise SystemExit(main())
