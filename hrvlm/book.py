"""Build the book: execute every chapter with papermill, then run Jupyter Book (1.x) with ``-W``.

The repository's ``_config.yml``, ``_toc.yml`` and ``book/`` are copied into a staging folder,
``_build/<profile>/source``, next to the executed copies of the notebooks (so the repository tree
is never modified and each profile builds in its own folder).  The HTML ends up in
``_build/<profile>/html``.  Each chapter receives ``profile`` (and any extra parameters) through
its papermill ``parameters`` cell.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from .profiles import profile_names

PROFILES = tuple(profile_names())
NOTEBOOK_DIR = "notebooks"


class BookError(RuntimeError):
    """A chapter failed to execute or the book failed to build; the message names which and where."""


def repo_root() -> Path:
    """The folder holding ``_toc.yml`` (the source checkout)."""
    for folder in (Path.cwd(), *Path.cwd().parents, Path(__file__).resolve().parent.parent):
        if (folder / "_toc.yml").is_file() and (folder / NOTEBOOK_DIR).is_dir():
            return folder
    raise BookError("no _toc.yml found: run `hrvlm book` inside the hrvlm source checkout")


def toc_files(toc: dict) -> list[str]:
    """Every ``file:`` entry of a Jupyter Book table of contents, in order."""
    found = [toc["root"]] if "root" in toc else []
    for key in ("chapters", "sections", "parts"):
        for entry in toc.get(key, []):
            found.extend(toc_files({"root": entry["file"], **entry} if "file" in entry else entry))
    return found


def chapter_notebooks(root: Path) -> list[str]:
    """Stems of the toc's notebook chapters (``notebooks/NN_name``), in book order."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    return [f for f in toc_files(toc) if f.startswith(NOTEBOOK_DIR + "/")]


def execute_notebook(root: Path, stem: str, out: Path, parameters: dict, timeout: int) -> float:
    """Run ``<root>/<stem>.py`` (the jupytext source) with papermill into ``out``; returns seconds."""
    import jupytext
    import papermill
    from papermill.exceptions import PapermillExecutionError

    source = root / f"{stem}.py"
    if not source.is_file():
        raise BookError(f"{stem}: listed in _toc.yml but {source} does not exist")
    staged_input = out.with_suffix(".input.ipynb")
    jupytext.write(jupytext.read(source), staged_input)
    start = time.perf_counter()
    # A non-interactive MPLBACKEND (e.g. Agg, set by test runners) would stop the kernel's inline
    # backend from showing figures: the kernel must not inherit it.
    backend = os.environ.pop("MPLBACKEND", None)
    try:
        papermill.execute_notebook(str(staged_input), str(out), parameters=parameters, kernel_name="python3",
                                   cwd=str(out.parent), execution_timeout=timeout, progress_bar=False)
    except PapermillExecutionError as err:
        raise BookError(f"chapter {stem}.py failed in cell {err.cell_index} (execution count {err.exec_count}): "
                        f"{err.ename}: {err.evalue}\n  executed copy with the traceback: {out}") from None
    finally:
        staged_input.unlink(missing_ok=True)
        if backend is not None:
            os.environ["MPLBACKEND"] = backend
    return time.perf_counter() - start


def build(profile: str = "mini", only: list[str] | None = None, parameters: dict | None = None,
          root: Path | None = None, output: Path | None = None, timeout: int = 3600) -> Path:
    """Execute the chapters and build the HTML book; returns the path of ``index.html``."""
    if profile not in PROFILES:
        raise BookError(f"unknown profile {profile!r}; choose one of {PROFILES}")
    root = Path(root) if root else repo_root()
    output = Path(output) if output else root / "_build" / profile
    source = output / "source"
    chapters = chapter_notebooks(root)
    unknown = [o for o in only or [] if not any(Path(c).name.startswith(o) or c == o for c in chapters)]
    if unknown:
        raise BookError(f"--only {unknown}: no such chapter; chapters are {chapters}")

    source.mkdir(parents=True, exist_ok=True)
    for item in ("_config.yml", "_toc.yml", "book"):
        target = source / item
        if target.is_dir():
            shutil.rmtree(target)
        (shutil.copytree if (root / item).is_dir() else shutil.copyfile)(root / item, target)
    (source / NOTEBOOK_DIR).mkdir(parents=True, exist_ok=True)

    params = {"profile": profile, **(parameters or {})}
    for stem in chapters:
        out = source / f"{stem}.ipynb"
        selected = not only or any(Path(stem).name.startswith(o) or stem == o for o in only)
        if selected:
            print(f"[hrvlm book] executing {stem} (profile={profile}) ...", flush=True)
            seconds = execute_notebook(root, stem, out, params, timeout)
            print(f"[hrvlm book]   done in {seconds:.1f} s", flush=True)
        elif not out.is_file():
            raise BookError(f"{stem} has never been executed for profile {profile}; run without --only first")

    html = output / "html"
    print("[hrvlm book] building HTML with jupyter-book (-W: warnings are errors) ...", flush=True)
    cmd = [sys.executable, "-c", "from jupyter_book.cli.main import main; main()", "build", str(source), "--path-output", str(output),
           "-W", "-n", "--keep-going"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYDEVD_DISABLE_FILE_VALIDATION": "1"})
    if proc.returncode != 0:
        raise BookError(f"jupyter-book build failed (exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-4000:]}")
    if html.exists():
        shutil.rmtree(html)
    os.replace(output / "_build" / "html", html)
    shutil.rmtree(output / "_build", ignore_errors=True)
    return html / "index.html"


# ---------------------------------------------------------------- command line
def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default="mini", choices=PROFILES,
                        help="smoke: seconds, for CI; mini (default): the offline mini world; full: GPU + real data")
    parser.add_argument("--only", nargs="+", metavar="CHAPTER",
                        help="execute only these chapters (e.g. 00_environment); others reuse earlier executed copies")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="extra papermill parameter for every chapter (value parsed as YAML)")
    parser.add_argument("--output", type=Path, help="build folder (default: _build/<profile>)")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds allowed per notebook cell")


def run(args: argparse.Namespace) -> int:
    extra = {name: yaml.safe_load(value) for name, value in args.parameter}
    try:
        index = build(args.profile, args.only, extra, output=args.output, timeout=args.timeout)
    except BookError as err:
        print(f"hrvlm book: {err}", file=sys.stderr)
        return 1
    print(f"[hrvlm book] the book is at {index}")
    return 0
