"""``hrvlm bench gradients``: how much of an attack's input gradient survives each autocast dtype.

An attack steps along the input gradient of every image.  For a confidently classified image the
cross-entropy gradient at the logits is ``1 − p_y``, which can be far below float16's smallest number
once it flows back through a half-precision network; bfloat16 has float32's exponent range.  This
measures it on the model itself (default ViT-B/32 at 224 px, random init, nothing downloaded): each
image of a random batch is made its own class (its class embedding is its feature, with ``spread``
times the batch's mean feature removed, so larger spreads give more confident images), and for every
image the input gradient under each dtype is compared with float32's: the fraction of entries that
come out exactly zero, and the fraction whose sign agrees (what an L∞ step uses).

The figures behind :mod:`hrvlm.core.precision`'s rule that attacks never run in float16
(``benchmarks/NOTES.md``, v3 item 5).  On a GPU it measures its fp16 kernels; on the CPU, CPU autocast's.
"""
from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F

from hrvlm.attacks.base import attack_context
from hrvlm.core.precision import DTYPES
from hrvlm.benchmarks._measure import check_model, device_of, environment, print_environment, run

HALF = ("fp16", "bf16")


def input_gradients(clf, x: torch.Tensor, y: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """``∇_x Σ CE(clf(x), y)`` with the forward under ``dtype`` autocast (None: float32)."""
    delta = torch.zeros_like(x, requires_grad=True)
    with attack_context(clf), torch.autocast(x.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        logits = clf(x + delta).float()
    return torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), delta)[0].detach()


def measure(args: argparse.Namespace) -> dict:
    try:
        spreads = [float(s) for s in args.spreads.split(",")]
    except ValueError:
        spreads = [float("nan")]
    if args.batch < 2 or not all(0 <= s <= 1 for s in spreads):
        raise SystemExit("--batch must be >= 2 and every --spreads value in [0, 1], e.g. --spreads 0,0.6,0.9")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = device_of(args.device)
    name = args.model or "ViT-B-32"
    check_model(name)
    from hrvlm.models.clip import load_clip
    from hrvlm.heads.zeroshot import ZeroShotClassifier

    torch.manual_seed(0)
    model, _, _ = load_clip(name, device=device)
    size = model.image_size
    x = torch.rand(args.batch, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    y = torch.arange(args.batch, device=device)
    with torch.no_grad(), model.unchecked():
        features = F.normalize(model.encode_image(x).float(), dim=-1)
    rows = []
    for spread in spreads:
        weights = F.normalize(features - spread * features.mean(0, keepdim=True), dim=-1)
        clf = ZeroShotClassifier(model, weights, logit_scale=100.0).eval()
        with torch.no_grad():
            p = clf(x).float().softmax(-1).gather(1, y[:, None]).squeeze(1)
        reference = input_gradients(clf, x, y, None).flatten(1)
        half = {k: input_gradients(clf, x, y, DTYPES[k]).flatten(1) for k in HALF}
        for i in range(args.batch):
            row = {"spread": spread, "image": i, "one_minus_p": float(1 - p[i].double()),
                   "max_abs_fp32": float(reference[i].abs().max())}
            for k, g in half.items():
                row[f"zero_{k}"] = float((g[i] == 0).float().mean())
                row[f"sign_{k}"] = float((g[i].sign() == reference[i].sign()).float().mean())
            rows.append(row)
    return {"benchmark": "gradients", "environment": environment(device), "model": name, "image_size": size,
            "batch": args.batch, "rows": rows}


def report(fig: dict) -> None:
    print_environment(fig["environment"])
    print(f"Input gradients under autocast vs float32: {fig['model']} random init ({fig['image_size']} px), each "
          f"image its own class, logit scale 100")
    print(f"  {'spread':>6s} {'1 - p_y':>9s} {'max|grad| fp32':>14s} {'zero fp16':>10s} {'zero bf16':>10s} "
          f"{'sign = fp32: fp16':>18s} {'bf16':>6s}")
    for r in fig["rows"]:
        print(f"  {r['spread']:6.2f} {r['one_minus_p']:9.1e} {r['max_abs_fp32']:14.1e} {r['zero_fp16']:10.1%} "
              f"{r['zero_bf16']:10.1%} {r['sign_fp16']:18.1%} {r['sign_bf16']:6.1%}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hrvlm bench gradients", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--model", default=None, help="default: ViT-B-32 (random init)")
    parser.add_argument("--batch", type=int, default=8, help="images, each its own class (>= 2)")
    parser.add_argument("--spreads", default="0,0.6,0.9",
                        help="comma-separated shares of the mean feature removed from the class embeddings")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    return parser


def main(argv: list[str] | None = None) -> int:
    return run(sys.modules[__name__], argv)
