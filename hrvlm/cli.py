"""The ``hrvlm`` command: one entry point, one subcommand per module.

Each subcommand lives in the module that does the work, as two functions:
``configure_parser(parser)`` and ``run(args) -> int``.  Modules are imported only when their
subcommand runs, so ``hrvlm --help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "wordnet": ("hrvlm.wordnet", "WordNet 3.0 status, build from Debian's files, or explicit download"),
    "hierarchy": ("hrvlm.hierarchy", "show class trees and forests, and WordNet coverage per dataset"),
    "data": ("hrvlm.data.cli", "list datasets, or fetch a real one (the only command that downloads data)"),
    "pretrain": ("hrvlm.pretrain", "pretrain the tiny CLIP of the mini world (cached, resumable)"),
    "train": ("hrvlm.train", "fine-tune with a registered method (resumable; torchrun for several processes)"),
    "export": ("hrvlm.export", "write a fine-tuned run as a checkpoint plain open_clip loads"),
    "eval": ("hrvlm.evaluate", "clean and robust zero-shot accuracy at every level of a hierarchy"),
    "book": ("hrvlm.book", "execute the notebooks with papermill and build the Jupyter Book"),
    "bench": ("hrvlm.benchmarks", "print speed and quality figures (never timed tests)"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hrvlm", description="hrvlm: hierarchy-aware robust zero-shot CLIP, reproducibly.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            importlib.import_module(module).configure_parser(p)
    args = parser.parse_args(argv)
    return int(importlib.import_module(COMMANDS[args.command][0]).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
