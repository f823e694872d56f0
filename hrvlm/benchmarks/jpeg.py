"""``hrvlm bench jpeg``: JPEG decoding throughput, the data pipeline's first limit.

Synthetic JPEGs of ImageNet sizes are made on the machine itself (no dataset needed): smooth random
colour fields with fine noise, which compress to about ImageNet's mean file size (≈ 110 kB) at
quality 90, at sizes drawn from ImageNet's common ones (500×375, 375×500, 500×333, 500×500, …).
Timed side by side, what a training batch costs to get to 224 px:

* ``decode="workers"``: PIL decode + resize + centre crop per image (``hrvlm.data.real.image_transform``),
  one process — a loader multiplies it by its workers;
* ``torchvision.io.decode_jpeg`` alone on the CPU, and, on a GPU, batched on the device (nvJPEG);
* ``decode="device"``: :func:`hrvlm.data.jpeg.decode_batch` (decode, then resize and crop per size group)
  on the CPU and, on a GPU, on the device — what the training loop runs.

Compare the images/s with the training step's (``hrvlm bench step``).
"""
from __future__ import annotations

import argparse
import io
import sys

import torch
import torch.nn.functional as F

from hrvlm.data.jpeg import decode_batch, quiet_codecs
from hrvlm.benchmarks._measure import device_of, environment, print_environment, rate_unit, run, seconds

# (height, width) of frequent ImageNet train images
IMAGENET_SIZES = ((375, 500), (500, 375), (333, 500), (500, 500), (500, 333), (400, 500), (281, 500))
SIZE = 224


def synthetic_jpegs(n: int, seed: int = 0, quality: int = 90) -> list[torch.Tensor]:
    """``n`` JPEG byte tensors (uint8, 1-D, on the CPU) of ImageNet sizes with natural-image-like content."""
    from torchvision.io import encode_jpeg

    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        h, w = IMAGENET_SIZES[i % len(IMAGENET_SIZES)]
        coarse = torch.rand(1, 3, h // 16 + 1, w // 16 + 1, generator=g)
        image = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)[0]
        image = image + 0.08 * torch.randn(3, h, w, generator=g)
        with quiet_codecs():
            out.append(encode_jpeg((image.clamp(0, 1) * 255).to(torch.uint8), quality=quality))
    return out


def pil_workers_path(data: list[torch.Tensor], size: int = SIZE) -> torch.Tensor:
    """What ``decode="workers"`` does per image (PIL decode, resize, crop, to tensor), for a whole batch."""
    from PIL import Image

    from hrvlm.data.real import image_transform

    transform = image_transform(size, None, "resize-first")
    return torch.stack([transform(Image.open(io.BytesIO(d.numpy().tobytes()))) for d in data])


def measure(args: argparse.Namespace) -> dict:
    if args.images < 1 or args.repeats < 1:
        raise SystemExit("--images and --repeats must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = device_of(args.device)
    with quiet_codecs():
        return _measure_decoding(args, device)


def _measure_decoding(args: argparse.Namespace, device: torch.device) -> dict:
    from torchvision.io import decode_jpeg

    data = synthetic_jpegs(args.images)
    megabytes = sum(d.numel() for d in data) / 1e6
    cpu = torch.device("cpu")
    cases = [("decode='workers' (PIL) on cpu", cpu, lambda: pil_workers_path(data))]
    for target in [cpu] + ([device] if device.type == "cuda" else []):
        cases += [(f"decode_jpeg on {target.type}", target, lambda t=target: decode_jpeg(data, device=t)),
                  (f"decode='device' on {target.type}", target, lambda t=target: decode_batch(data, t, SIZE))]
    rows = []
    for label, target, fn in cases:
        t = seconds(fn, target, args.repeats, args.warmup)
        rows.append({"label": label, "device": target.type, "seconds": t, "images_per_s": len(data) / t,
                     "mb_per_s": megabytes / t})
    return {"benchmark": "jpeg", "environment": environment(device), "images": len(data),
            "mean_kb": 1e3 * megabytes / len(data), "rows": rows}


def report(fig: dict) -> None:
    print_environment(fig["environment"])
    print(f"JPEG decoding, {fig['images']} synthetic ImageNet-size JPEGs (mean {fig['mean_kb']:.0f} kB)")
    for r in fig["rows"]:
        unit = rate_unit(r["device"])
        mb_unit = unit.replace("images", "MB")
        print(f"  {r['label']:38s} {r['images_per_s']:9.1f} {unit}  {r['mb_per_s']:8.1f} {mb_unit}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hrvlm bench jpeg", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--images", type=int, default=256, help="JPEGs per decoded batch")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    return parser


def main(argv: list[str] | None = None) -> int:
    return run(sys.modules[__name__], argv)


if __name__ == "__main__":
    raise SystemExit(main())
