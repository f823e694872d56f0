"""The ``hrvlm`` command: one entry point, one subcommand per module.

Each subcommand lives in the module that does the work, as two functions:
``configure_parser(parser)`` and ``run(args) -> int``.  Modules are imported only when their
subcommand runs, so ``hrvlm --help`` stays fast.

**Errors.**  A request the user can fix (an unknown name, a level the tree does not have, a missing
file) is reported here, once for every subcommand, as one line ``hrvlm CMD: error: ...`` with exit
code 2 and no traceback (:func:`user_error`); ``--debug`` (before or after ``CMD``) shows the traceback.  Any
other exception is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "wordnet": ("hrvlm.hierarchy.wordnet", "WordNet 3.0 status, build from Debian's files, or explicit download"),
    "hierarchy": ("hrvlm.hierarchy.cli", "show class trees and forests, and WordNet coverage per dataset"),
    "data": ("hrvlm.data.cli", "list datasets, or fetch a real one (the only command that downloads data)"),
    "pretrain": ("hrvlm.training.pretrain", "pretrain the tiny CLIP of the mini world (cached, resumable)"),
    "train": ("hrvlm.training.train", "fine-tune with a registered method (resumable; torchrun for several processes)"),
    "export": ("hrvlm.export", "write a fine-tuned run as a checkpoint plain open_clip loads"),
    "eval": ("hrvlm.evaluation.evaluate", "clean and robust zero-shot accuracy at every level of a hierarchy"),
    "records": ("hrvlm.evaluation.records", "check the integrity of a records store (checksums, torn lines)"),
    "book": ("hrvlm.book.build", "execute the notebooks with papermill and build the Jupyter Book"),
    "bench": ("hrvlm.benchmarks", "print speed and quality figures (never timed tests)"),
    "doctor": ("hrvlm.doctor", "can this machine run a profile? a checklist (versions, GPU, weights, data, disk, WordNet)"),
}

USAGE_EXIT = 2
_PACKAGE = Path(__file__).resolve().parent
# Built-in exception types that mean "bad request" when hrvlm's own code raises them.  Exception
# classes defined in hrvlm (HierarchyError, PretrainedUnavailable, DatasetMissing, ...) always do.
_USER_ERROR_TYPES = (ValueError, LookupError, FileNotFoundError, FileExistsError, IsADirectoryError,
                     NotADirectoryError, PermissionError)


class Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line naming the subcommand and where to get help."""

    def error(self, message: str):
        self.exit(USAGE_EXIT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def user_error(err: BaseException) -> str | None:
    """The one-line message of an error the user caused, or ``None`` for a bug (keeps its traceback).

    User errors are the exceptions hrvlm defines, and built-in ones (:data:`_USER_ERROR_TYPES`) raised
    by hrvlm's own code, which words them; the same type raised inside a library hrvlm calls is a bug.
    """
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    raised_here = tb is not None and Path(tb.tb_frame.f_code.co_filename).resolve().is_relative_to(_PACKAGE)
    ours = type(err).__module__.split(".")[0] == "hrvlm"
    if not raised_here or not (ours or isinstance(err, _USER_ERROR_TYPES)):
        return None
    text = err.args[0] if isinstance(err, KeyError) and len(err.args) == 1 else str(err)
    return str(text).strip() or type(err).__name__


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="hrvlm", description="hrvlm: hierarchy-aware robust zero-shot CLIP, reproducibly.")
    parser.add_argument("--debug", action="store_true", help="show the traceback of every error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        if name == chosen:
            importlib.import_module(module).configure_parser(p)
    args = parser.parse_args(argv)
    try:
        return int(importlib.import_module(COMMANDS[args.command][0]).run(args) or 0)
    except KeyboardInterrupt:
        print(f"hrvlm {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        message = None if args.debug else user_error(err)
        if message is None:
            raise
        print(f"hrvlm {args.command}: error: {message}", file=sys.stderr)
        return USAGE_EXIT


if __name__ == "__main__":
    sys.exit(main())
