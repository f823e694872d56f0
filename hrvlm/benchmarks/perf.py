"""``hrvlm bench perf``: every speed figure of issue 13 in one command, printed and kept as JSON.

Runs, in order, on the best device present (a GPU if any): the machine's ceilings (a large
device-to-device copy and a large bf16 matrix product), ``hrvlm bench attacks`` (PGD-20 evaluation,
hrvlm against the plain float32 loop), ``hrvlm bench step`` (PGD-k + one training step for the
papers' k) and ``hrvlm bench jpeg`` (JPEG decoding), each with its defaults unless options are passed
through: ``--attacks="--batch 128"`` (the ``=`` keeps them from being read as perf's own options).
On the CPU the same sections run the mini world's tiny CLIP.

On a GPU machine (see ``benchmarks/NOTES.md``)::

    hrvlm bench perf --json benchmarks/results/h100.json
"""
from __future__ import annotations

import argparse
import shlex

from hrvlm.benchmarks import attacks, jpeg, step
from hrvlm.benchmarks._measure import ceilings, check_model, device_of, environment, print_environment, write_json

SECTIONS = {"attacks": attacks, "step": step, "jpeg": jpeg}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hrvlm bench perf", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--json", default=None, help="write all figures to this JSON file")
    parser.add_argument("--copy-mib", type=int, default=None, help="copy size for the bandwidth ceiling")
    parser.add_argument("--matmul-n", type=int, default=None, help="matrix size for the matmul ceiling")
    for name in SECTIONS:
        parser.add_argument(f"--{name}", default="", metavar="OPTIONS",
                            help=f'options for the {name} section, e.g. --{name}="--repeats 3" '
                                 f'(see hrvlm bench {name} --help)')
    args = parser.parse_args(argv)
    device = device_of(args.device)
    # parse every section's options first, so a typo fails before minutes of measuring
    section_args = {}
    for name, module in SECTIONS.items():
        options = shlex.split(getattr(args, name))
        if args.device and "--device" not in options:
            options += ["--device", args.device]
        section_args[name] = module.build_parser().parse_args(options)
        check_model(getattr(section_args[name], "model", None))

    env = environment(device)
    print_environment(env)
    ceiling = ceilings(device, args.copy_mib, args.matmul_n)
    print(f"ceilings on {device.type}: copy {ceiling.copy_gb_s:.1f} GB/s (read + write), "
          f"{ceiling.matmul_dtype} matmul {ceiling.matmul_tflop_s:.2f} TFLOP/s")
    figures = {"environment": env, "ceilings": vars(ceiling)}
    for name, module in SECTIONS.items():
        print()
        figures[name] = module.measure(section_args[name])
        module.report(figures[name])
    figures["pipeline"] = pipeline(figures, device)
    report_pipeline(figures["pipeline"])
    write_json(args.json, figures)
    return 0


def pipeline(figures: dict, device) -> list[dict]:
    """Training images/s with ``decode="device"`` in the loop: decoding the batch and the step run one
    after the other on the same device, so per image their times add (``1 / (1/decode + 1/step)``); one row
    per measured k, against hrvlm's own step (the first row of each k).  GPU only: on the CPU the step is
    the tiny model's, on 32-px images, while the decoder makes 224-px ones for ViT-B/32."""
    if device.type != "cuda":
        return []
    decode = next((r for r in figures["jpeg"]["rows"]
                   if r["label"].startswith("decode='device'") and r["device"] == device.type), None)
    if decode is None:
        return []
    rows = []
    for k in sorted({r["attack_steps"] for r in figures["step"]["rows"]}):
        step_row = next(r for r in figures["step"]["rows"] if r["attack_steps"] == k)
        both = 1 / (1 / decode["images_per_s"] + 1 / step_row["images_per_s"])
        rows.append({"attack_steps": k, "step_images_per_s": step_row["images_per_s"],
                     "decode_images_per_s": decode["images_per_s"], "images_per_s": both,
                     "share_of_step": both / step_row["images_per_s"]})
    return rows


def report_pipeline(rows: list[dict]) -> None:
    if not rows:
        return
    print(f"\ntraining with decode='device' (decoding {rows[0]['decode_images_per_s']:.1f} images/s on the GPU, "
          f"then the step):")
    for r in rows:
        print(f"  k = {r['attack_steps']:2d}: {r['images_per_s']:9.1f} images/s = {100 * r['share_of_step']:5.1f} % "
              f"of the step alone ({r['step_images_per_s']:.1f})")


if __name__ == "__main__":
    raise SystemExit(main())
