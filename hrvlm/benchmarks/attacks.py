"""``hrvlm bench attacks``: PGD-20 throughput, ours against torchattacks, CPU and (if present) GPU.

CPU: the tiny random-init CLIP (32 px), hrvlm's PGD vs ``torchattacks.PGD`` in the same run (same
batch, steps, step size, random start), images/s and their ratio.

GPU (when ``torch.cuda.is_available()``): ViT-B-32 at 224 px, random init (same cost as pretrained),
a 1,000-class zero-shot head; hrvlm's PGD under bf16 autocast and in float32, and torchattacks' plain
float32 loop.  Achieved TFLOP/s use a stated FLOP model: a ViT-B/32 forward at 224 px is ≈ 8.8 GFLOP
per image (4.4 GMAC), and an attack step (forward + input-only backward, no weight gradients) ≈ 2
forwards.  hrvlm's PGD-k runs k steps plus one scoring forward of the last iterate; torchattacks' k steps.
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from hrvlm.attacks import PGD, ThreatModel

VIT_B32_GFLOP = 8.8  # forward, per 224-px image


def _classifier(name: str, classes: int, device: str):
    from hrvlm.models import load_clip
    from hrvlm.zeroshot import ZeroShotClassifier

    torch.manual_seed(0)
    model, _, _ = load_clip(name, device=device)
    weights = F.normalize(torch.randn(classes, model.embed_dim, device=device), dim=-1)
    return ZeroShotClassifier(model, weights, logit_scale=100.0)


def _seconds(fn, repeats: int, device: str) -> float:
    """Best wall time of ``repeats`` runs after one warm-up (synchronising the GPU around each)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def _runners(clf, x, y, steps: int, eps: float, autocast=None):
    import torchattacks

    ours = PGD(ThreatModel("linf", eps), steps=steps, step_size=eps / 4, autocast=autocast)
    theirs = torchattacks.PGD(clf, eps=eps, alpha=eps / 4, steps=steps, random_start=True)
    return (lambda: ours(clf, x, y)), (lambda: theirs(x, y))


def cpu_section(batch: int, steps: int, eps: float, repeats: int) -> None:
    clf = _classifier("hrvlm-tiny", 10, "cpu")
    x = torch.rand(batch, 3, clf.model.image_size, clf.model.image_size, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 10, (batch,), generator=torch.Generator().manual_seed(1))
    ours, theirs = _runners(clf, x, y, steps, eps)
    t_ours, t_theirs = _seconds(ours, repeats, "cpu"), _seconds(theirs, repeats, "cpu")
    print(f"CPU, hrvlm-tiny (32 px), batch {batch}, PGD-{steps}, {torch.get_num_threads()} thread(s)")
    print(f"  hrvlm PGD        {batch / t_ours:9.1f} images/s")
    print(f"  torchattacks PGD {batch / t_theirs:9.1f} images/s")
    print(f"  ratio hrvlm / torchattacks: {t_theirs / t_ours:.2f}x")


def gpu_section(batch: int, steps: int, eps: float, repeats: int) -> None:
    clf = _classifier("ViT-B-32", 1000, "cuda")
    x = torch.rand(batch, 3, 224, 224, device="cuda")
    y = torch.randint(0, 1000, (batch,), device="cuda")
    ours_bf16, _ = _runners(clf, x, y, steps, eps, autocast=torch.bfloat16)
    ours_fp32, plain = _runners(clf, x, y, steps, eps)
    print(f"GPU {torch.cuda.get_device_name()}, ViT-B-32 random init (224 px), batch {batch}, PGD-{steps}; "
          f"FLOP model {VIT_B32_GFLOP} GFLOP/forward, step = 2 forwards")
    rows = [("hrvlm PGD, bf16 autocast", ours_bf16, 2 * steps + 1), ("hrvlm PGD, float32", ours_fp32, 2 * steps + 1),
            ("torchattacks PGD, float32 (plain loop)", plain, 2 * steps)]
    times = {}
    for label, fn, forwards in rows:
        t = _seconds(fn, repeats, "cuda")
        times[label] = t
        tflops = batch * forwards * VIT_B32_GFLOP / t / 1e3
        print(f"  {label:40s} {batch / t:9.1f} images/s  {tflops:6.1f} TFLOP/s")
    print(f"  speed-up bf16 vs plain float32 loop: {times[rows[2][0]] / times[rows[0][0]]:.2f}x "
          f"(TF32 matmul: {torch.backends.cuda.matmul.allow_tf32})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hrvlm bench attacks", description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--eps", type=float, default=1 / 255)
    parser.add_argument("--cpu-batch", type=int, default=64)
    parser.add_argument("--gpu-batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--skip-gpu", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cpu_section(args.cpu_batch, args.steps, args.eps, args.repeats)
    if torch.cuda.is_available() and not args.skip_gpu:
        gpu_section(args.gpu_batch, args.steps, args.eps, args.repeats)
    else:
        print("GPU: not available (or --skip-gpu); section skipped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
