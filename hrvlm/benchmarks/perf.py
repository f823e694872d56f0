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

from . import attacks, jpeg, step
from ._measure import ceilings, check_model, device_of, environment, print_environment, write_json

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
    write_json(args.json, figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
