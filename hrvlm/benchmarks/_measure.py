"""What the speed benchmarks share: timing, the machine's ceilings, the FLOP model, the workload.

Timing follows the issue's honesty rules: warm-up calls first, then the median of ``repeats`` timed
calls; on a GPU each call is timed with CUDA events (device time, no host jitter), on the CPU by the
process's CPU time (``time.process_time``: the cores here are shared, and CPU time is what another
process's load disturbs least; with one torch thread it is the wall time of an idle machine).
Inputs are random, never zeros; random-init weights cost the same as trained ones.

FLOP model (ViT-B/32 at 224 px, 50 tokens, ≈ 88 M vision parameters): a forward is ≈ 8.8 GFLOP per
image (4.4 GMAC), an input-gradient step (forward + activation backward, no weight gradients) ≈ 2
forwards, a training step (forward + full backward) ≈ 3 forwards.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from hrvlm.core.environment import check_device, default_device
from hrvlm.core.precision import CHOICES
from hrvlm.core.storage import atomic_write_json

VIT_B32_GFLOP = 8.8      # forward, per 224-px image
INPUT_GRAD_FORWARDS = 2  # forward + activation backward
TRAIN_FORWARDS = 3       # forward + activation and weight backward
EVAL_IMAGES = 217_000    # the 15 zero-shot test sets (issue 13)
EPOCH_IMAGES = 1_281_167  # ImageNet-1k train


def pgd_eval_forwards(steps: int) -> int:
    """Forward-equivalents of hrvlm's PGD-k evaluation: k input-gradient steps + one scoring forward."""
    return INPUT_GRAD_FORWARDS * steps + 1


def train_forwards(attack_steps: int) -> int:
    """Forward-equivalents of PGD-k + one training step."""
    return INPUT_GRAD_FORWARDS * attack_steps + TRAIN_FORWARDS


def device_of(name: str | None) -> torch.device:
    """``name`` or the best available device (CUDA when present).  A GPU named by index (``cuda:1``)
    becomes the current one: CUDA events time the current device's stream."""
    if name:
        device = check_device(name)  # one line for a device this machine lacks, as in train and eval
        if device.type == "cuda" and device.index is not None:
            torch.cuda.set_device(device)
        return device
    return default_device()


def rate_unit(device: str | torch.device) -> str:
    """How :func:`seconds`-based rates read: device time on a GPU, CPU time on the CPU."""
    return "images/s" if torch.device(device).type == "cuda" else "images/CPU-s"


def seconds(fn, device: torch.device, repeats: int = 5, warmup: int = 2) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            start = time.process_time()
            fn()
            times.append(time.process_time() - start)
    return statistics.median(times)


@dataclass(frozen=True)
class Ceilings:
    """The machine's measured limits: copy bandwidth and dense matrix-product rate."""

    copy_gb_s: float       # device-to-device (read + write bytes per second)
    matmul_tflop_s: float  # bf16 on a GPU, float32 on the CPU
    matmul_dtype: str

    def images_per_s(self, forwards: float, gflop: float = VIT_B32_GFLOP) -> float:
        """The image rate the matmul rate allows at ``forwards`` forward-equivalents per image of ``gflop``
        each (default: ViT-B/32's)."""
        return self.matmul_tflop_s * 1e3 / (forwards * gflop)


def ceilings(device: torch.device, copy_mib: int | None = None, matmul_n: int | None = None) -> Ceilings:
    """Measure a large device-to-device copy and a large square matrix product on ``device``."""
    gpu = device.type == "cuda"
    copy_mib = copy_mib or (2048 if gpu else 256)
    src = torch.empty(copy_mib * 2 ** 20, dtype=torch.uint8, device=device).random_(0, 255)
    dst = torch.empty_like(src)
    t_copy = seconds(lambda: dst.copy_(src), device)
    dtype = torch.bfloat16 if gpu else torch.float32
    n = matmul_n or (16384 if gpu else 1024)
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    t_mm = seconds(lambda: a @ b, device)
    return Ceilings(2 * src.numel() / t_copy / 1e9, 2 * n ** 3 / t_mm / 1e12, str(dtype).removeprefix("torch."))


def forward_gflop(model, image_size: int) -> float:
    """GFLOP of one image's forward through ``model``'s image tower, as torch's FLOP counter counts the
    matrix products and convolutions of one forward (2 per multiply-add; element-wise ops not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.rand(1, 3, image_size, image_size, device=model.logit_scale.device)
    with FlopCounterMode(display=False) as counter, torch.no_grad(), model.unchecked():
        model.encode_image(x)
    return counter.get_total_flops() / 1e9


def environment(device: torch.device) -> dict:
    """The machine and software the figures were taken on."""
    import open_clip
    import torchvision

    env = {"device": str(device), "torch": torch.__version__, "torchvision": torchvision.__version__,
           "open_clip": open_clip.__version__, "python": platform.python_version(), "cpu": _cpu_name(),
           "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu_threads": torch.get_num_threads(),
           "load_average": os.getloadavg()[0]}
    if device.type == "cuda":
        env |= {"gpu": torch.cuda.get_device_name(device),
                "capability": ".".join(map(str, torch.cuda.get_device_capability(device))),
                "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                "tf32_matmul": torch.backends.cuda.matmul.allow_tf32}
    return env


def _cpu_name() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def print_environment(env: dict) -> None:
    print("machine: " + ", ".join(f"{k} {v}" for k, v in env.items()))


@dataclass
class Workload:
    """The model and sizes a benchmark runs: ViT-B/32 on a GPU, the mini world's tiny CLIP on the CPU."""

    model_name: str
    device: torch.device
    batch: int
    classes: int

    @classmethod
    def default(cls, device: torch.device, model: str | None = None, batch: int | None = None,
                classes: int | None = None) -> "Workload":
        gpu = device.type == "cuda"
        return cls(model or ("ViT-B-32" if gpu else "hrvlm-tiny-cnn"), device, batch or (256 if gpu else 32),
                   classes or (1000 if gpu else 10))

    @property
    def is_vit_b32(self) -> bool:
        return self.model_name.removesuffix("-quickgelu") == "ViT-B-32"

    def gflop(self, model) -> float:
        """Forward GFLOP per image: the issue's FLOP model for ViT-B/32, else counted (:func:`forward_gflop`)."""
        return VIT_B32_GFLOP if self.is_vit_b32 else forward_gflop(model, model.image_size)

    def classifier(self, seed: int = 0):
        """A zero-shot classifier over random class embeddings on a random-init model."""
        from hrvlm.models.clip import load_clip
        from hrvlm.heads.zeroshot import ZeroShotClassifier

        torch.manual_seed(seed)
        model, _, _ = load_clip(self.model_name, device=self.device)
        weights = F.normalize(torch.randn(self.classes, model.embed_dim, device=self.device), dim=-1)
        return ZeroShotClassifier(model, weights, logit_scale=100.0).eval()

    def batch_tensors(self, image_size: int, seed: int = 0):
        g = torch.Generator(device=self.device).manual_seed(seed)
        x = torch.rand(self.batch, 3, image_size, image_size, generator=g, device=self.device)
        y = torch.randint(0, self.classes, (self.batch,), generator=g, device=self.device)
        return x, y

    def describe(self, image_size: int) -> str:
        return f"{self.model_name} random init ({image_size} px), batch {self.batch}, {self.classes} classes"


def reference_pgd(forward, x: torch.Tensor, y: torch.Tensor, eps: float, step_size: float, steps: int,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """The plain float32 L∞ PGD loop of the peer repositories, the baseline every speed-up is measured
    against: weights left trainable, no autocast, random start, last iterate returned."""
    delta = (torch.rand(x.shape, generator=generator, device=x.device) * 2 - 1) * eps
    delta = (x + delta).clamp(0, 1) - x
    for _ in range(steps):
        delta.requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(forward(x + delta), y), delta)
        delta = (delta.detach() + step_size * grad.sign()).clamp(-eps, eps)
        delta = (x + delta).clamp(0, 1) - x
    return (x + delta).detach()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every speed benchmark takes (defaults depend on the device)."""
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--model", default=None, help="default: ViT-B-32 on a GPU, hrvlm-tiny-cnn on the CPU")
    parser.add_argument("--batch", type=int, default=None, help="default: 256 on a GPU, 32 on the CPU")
    parser.add_argument("--classes", type=int, default=None, help="zero-shot classes (default: 1000 GPU, 10 CPU)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls; the median is reported")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls first")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--precision", default="auto", choices=CHOICES, help="see hrvlm.core.precision (default: auto)")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")


def setup(args: argparse.Namespace) -> Workload:
    """Apply ``--threads`` and return the workload the options describe (checked before any work)."""
    for name in ("batch", "classes", "repeats"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise SystemExit(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Workload.default(device_of(args.device), args.model, args.batch, args.classes)
    check_model(work.model_name)
    return work


def check_model(name: str | None) -> None:
    """Exit with :func:`hrvlm.models.clip.check_model_name`'s one-line message if there is no model ``name``."""
    from hrvlm.models.clip import check_model_name

    if name is not None:
        try:
            check_model_name(name)
        except KeyError as err:
            raise SystemExit(err.args[0]) from None


def run(module, argv: list[str] | None = None) -> int:
    """A benchmark module's ``main``: parse its options, measure, print, write the JSON if asked."""
    args = module.build_parser().parse_args(argv)
    figures = module.measure(args)
    module.report(figures)
    write_json(args.json, figures)
    return 0


def write_json(path: str | None, figures: dict) -> None:
    """Write ``figures`` atomically (the file is either the old or the complete new one)."""
    if path:
        atomic_write_json(path, figures)
        print(f"figures written to {path}")
