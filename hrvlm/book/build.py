"""Build the book: execute every chapter with papermill, then run Jupyter Book (1.x) with ``-W``.

The repository's ``_config.yml``, ``_toc.yml`` and ``book/`` are copied into a staging folder,
``_build/<profile>/source``, next to the executed copies of the notebooks (so the repository tree
is never modified and each profile builds in its own folder).  The HTML ends up in
``_build/<profile>/html``.  Each chapter receives ``profile`` (and any extra parameters) through
its papermill ``parameters`` cell.

What a reader sees, and what is never published:

* **One parameters cell.**  Papermill injects the values it ran with as a second cell; the two are
  merged (:func:`merge_parameters`) so the page shows the chapter's parameters once, with the values
  that ran.
* **No progress bars.**  The kernel's stderr goes to the builder's terminal while it runs (that is
  where the progress of long steps belongs) and progress-bar output is removed from the executed
  notebook (:func:`strip_progress`).
* **No half-executed chapter.**  A chapter executes into ``_build/<profile>/partial/``; only a copy
  whose every cell ran without error (:func:`check_complete`) is moved, atomically, over the
  published one, stamped with the hash of what produced it.  A copy lacking that stamp (a build
  killed by an older version) or failing the check is refused at publication time.
* **Warm rebuilds.**  A chapter whose source, parameters and the code it uses (:func:`chapter_code`: the
  hrvlm modules it imports, followed through every import, and the packaged data files) hash equal the
  stamp of its executed copy is reused, not executed again (:func:`chapter_key`); editing one module
  re-executes only the chapters that reach it.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from hrvlm.profiles import profile_names
from hrvlm.core.progress import MODE_ENV
from hrvlm.core.progress import mode as progress_mode

PROFILES = tuple(profile_names())
NOTEBOOK_DIR = "notebooks"
STAMP = "hrvlm_book"          # notebook metadata key of a complete executed copy
STAMP_VERSION = 2             # bump when the set-up or post-processing of executed notebooks changes
PACKAGE = Path(__file__).resolve().parent.parent  # the hrvlm package
DEFAULT_REPOSITORY = "hrvlm/hrvlm"  # owner/name in the book's links; GITHUB_REPOSITORY replaces it
# A terminal progress bar's last frame: "  40%|████      | 4/10 [00:02<00:03, 2.0it/s]".
PROGRESS_LINE = re.compile(r"\d+%\|.*\|\s*\d+(\.\d+)?[kMG]?/|\|\s*\d+/\d+\s*\[\d|\d+(\.\d+)?\s*(it|s)/(s|it)\]")
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
# Arguments of every chapter's kernel: no fd capture (see execute_chapter: it doubled worker output).
KERNEL_ARGUMENTS = ["--IPKernelApp.capture_fd_output=False"]
# Run first in every chapter, hidden from the page: pandas would cut long text cells ("pairs of eve…");
# the book's CSS wraps them instead.
DISPLAY_SETUP = 'import pandas as pd\n\npd.set_option("display.max_colwidth", None)\npd.set_option("display.max_rows", 200)'
# the chapter's worker processes stopped before its kernel is (hrvlm.book.workers.stop_workers)
STOP_WORKERS = "from hrvlm.book.workers import stop_workers\n\nstop_workers()"


class BookError(RuntimeError):
    """A chapter failed to execute or the book failed to build; the message names which and where."""


class BookUsageError(BookError):
    """The request itself is wrong (a profile, a chapter, a parameter); raised before any work."""


def is_book(folder: Path) -> bool:
    return (folder / "_toc.yml").is_file() and (folder / NOTEBOOK_DIR).is_dir()


def repo_root() -> Path:
    """The book of this hrvlm: the source checkout the imported package lies in.  Never a folder found
    from the current directory: building executes the notebooks, so only this repository's own book (or
    one named explicitly, ``build(root=...)`` / ``hrvlm book --book DIR``) is run."""
    if is_book(PACKAGE.parent):
        return PACKAGE.parent
    raise BookUsageError(f"no book next to the hrvlm package ({PACKAGE.parent} holds no _toc.yml and {NOTEBOOK_DIR}/): "
                         f"install hrvlm from its source checkout, or name the book with --book DIR")


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


# ---------------------------------------------------------------- post-processing of executed notebooks
def _parameters_cell(nb, tag: str):
    return next((i for i, cell in enumerate(nb.cells) if tag in cell.get("metadata", {}).get("tags", [])), None)


def _assignments(source: str) -> dict[str, ast.Assign]:
    """Top-level ``name = value`` statements of a cell, by name."""
    return {node.targets[0].id: node for node in ast.parse(source).body
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)}


def parameter_names(source: str) -> list[str]:
    """Names assigned in a jupytext chapter's ``parameters`` cell (empty if it has none)."""
    match = re.search(r'^# %%[^\n]*tags=\[[^\]\n]*"parameters"[^\]\n]*\][^\n]*\n(.*?)(?=^# %%|\Z)', source, re.M | re.S)
    return list(_assignments(match.group(1))) if match else []


def merge_parameters(nb) -> None:
    """Fold papermill's ``injected-parameters`` cell into the chapter's ``parameters`` cell, in place.

    Each assignment the injection overrides gets the injected value (a trailing comment on its line
    is kept); injected names the chapter does not declare are appended.  The injected cell is removed,
    so a reader sees one parameters cell holding exactly the values that ran.
    """
    injected_at = _parameters_cell(nb, "injected-parameters")
    if injected_at is None:
        return
    injected_source = "".join(nb.cells[injected_at].source)
    values = {name: ast.get_source_segment(injected_source, node.value)
              for name, node in _assignments(injected_source).items()}
    target_at = _parameters_cell(nb, "parameters")
    if target_at is None:  # a chapter without a parameters cell: the injected one stands alone
        nb.cells[injected_at].metadata["tags"] = ["parameters"]
        return
    cell = nb.cells[target_at]
    lines = "".join(cell.source).split("\n")
    declared = _assignments("\n".join(lines))
    for name, node in sorted(declared.items(), key=lambda item: -item[1].lineno):
        if name in values:
            tail = lines[node.end_lineno - 1][node.end_col_offset:]
            comment = tail[tail.index("#"):] if "#" in tail else ""
            lines[node.lineno - 1:node.end_lineno] = [f"{name} = {values[name]}" + (f"  {comment}" if comment else "")]
    lines += [f"{name} = {value}" for name, value in values.items() if name not in declared]
    cell.source = "\n".join(lines)
    del nb.cells[injected_at]


def _strip_stream(text: str) -> str:
    """What a terminal would show of each line, without the lines that are progress bars."""
    kept = []
    for line in text.split("\n"):
        frames = line.split("\r")
        shown = frames[-1] if frames[-1].strip() else (frames[-2] if len(frames) > 1 else "")
        if len(frames) > 1 or PROGRESS_LINE.search(shown):
            continue  # carriage-return redraws are progress output, whatever they draw
        kept.append(line)
    return "\n".join(kept)


def strip_progress(nb) -> int:
    """Remove progress-bar output (``\\r`` redraws, tqdm lines, progress widgets) in place; returns how many outputs went."""
    removed = 0
    for cell in nb.cells:
        outputs = []
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream" and output.get("name") == "stderr":
                text = _strip_stream("".join(output.text))
                if not text.strip():
                    removed += 1
                    continue
                output.text = text
            elif WIDGET_MIME in output.get("data", {}):
                removed += 1
                continue
            outputs.append(output)
        if "outputs" in cell:
            cell.outputs = outputs
    return removed


def incomplete_reason(nb) -> str | None:
    """Why an executed notebook is not fit to publish (``None`` when every code cell ran without error)."""
    papermill = nb.metadata.get("papermill", {})
    if papermill.get("exception"):
        return "its execution raised an exception"
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or not "".join(cell.source).strip():
            continue
        if cell.get("execution_count") is None:
            return f"cell {index} never executed"
        if any(output.get("output_type") == "error" for output in cell.get("outputs", [])):
            return f"cell {index} raised an error"
        status = cell.get("metadata", {}).get("papermill", {}).get("status")
        if status not in (None, "completed"):
            return f"cell {index} has status {status!r}"
    return None


def check_complete(path: Path, key: str | None = None) -> str | None:
    """Why the executed copy at ``path`` may not be published, or ``None`` if it may.

    It must exist, carry the stamp written after a complete execution, and pass
    :func:`incomplete_reason`; with ``key``, the stamp must also match it (else it is out of date).
    """
    import nbformat

    if not path.is_file():
        return "it has never been executed"
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as err:  # a torn or garbled file
        return f"it cannot be read ({type(err).__name__})"
    stamp = nb.metadata.get(STAMP)
    if not stamp or not stamp.get("complete"):
        return "it is not stamped complete (an interrupted or foreign execution)"
    reason = incomplete_reason(nb)
    if reason:
        return reason
    if key is not None and stamp.get("key") != key:
        return "its source, parameters or the library changed since it ran"
    return None


# ---------------------------------------------------------------- what an executed chapter depends on
def _module_files() -> dict[str, Path]:
    """``{dotted name: file}`` of every module of the hrvlm package."""
    files = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def imported_modules(source: str, modules, strings: bool = True) -> set[str]:
    """The hrvlm modules a Python source imports, at module level or inside functions: ``import a.b``,
    ``from a import b`` (``a.b`` when it is a module) and, with ``strings``, names of modules written as
    strings (imported by name: the CLI's verbs, weight providers).  Every package above an imported module
    counts too, since Python runs its ``__init__``."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif strings and isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and node.value.startswith("hrvlm."):
            names = [node.value]
        else:
            continue
        for name in names:
            while name:
                if name in modules:
                    found.add(name)
                name = name.rpartition(".")[0]
    return found


def import_graph(strings: bool = True) -> dict[str, set[str]]:
    """``{module: the hrvlm modules it imports}`` for the whole package (``strings=False``: import statements
    only, what ``tests/test_layers.py`` checks the layer order on)."""
    files = _module_files()
    return {name: imported_modules(path.read_text(), files, strings) - {name} for name, path in files.items()}


def chapter_code(source: Path) -> list[Path]:
    """The files an executed chapter depends on: every hrvlm module its source reaches through imports (this
    builder left out: what it does to executed notebooks is versioned by :data:`STAMP_VERSION`), and every
    packaged data file."""
    files, graph = _module_files(), import_graph()
    todo, seen = list(imported_modules(source.read_text(), files)), set()
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(graph[name])
    seen.discard(__name__)
    data = [p for p in sorted((PACKAGE / "resources").rglob("*")) if p.is_file()]
    return sorted(files[name] for name in seen) + data


def code_hash(source: Path) -> str:
    """sha256 over the files of :func:`chapter_code`, each with its path."""
    digest = hashlib.sha256()
    for path in chapter_code(source):
        digest.update(str(path.relative_to(PACKAGE)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def chapter_key(source: Path, parameters: dict) -> str:
    """Hash of what an executed chapter depends on: its source text, its parameters, the code it uses."""
    from hrvlm.core.storage import config_hash

    return config_hash({"stamp": STAMP_VERSION, "source": hashlib.sha256(source.read_bytes()).hexdigest(),
                        "parameters": parameters, "code": code_hash(source)}, length=24)


# ---------------------------------------------------------------- execution
def _set_env(values: dict) -> None:
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@contextlib.contextmanager
def _kernel_environment():
    """The environment the kernel inherits while a chapter runs."""
    # A non-interactive MPLBACKEND (e.g. Agg, set by test runners) would stop the kernel's inline
    # backend from showing figures: the kernel must not inherit it.
    # The kernel's stderr is no terminal, the builder's may be: progress follows the builder's (bars on a
    # terminal, lines in a log; hrvlm.core.progress).
    changes = {"MPLBACKEND": None, "PYDEVD_DISABLE_FILE_VALIDATION": "1", MODE_ENV: progress_mode()}
    saved = {name: os.environ.get(name) for name in changes}
    _set_env(changes)
    try:
        yield
    finally:
        _set_env(saved)


def execute_notebook(root: Path, stem: str, out: Path, parameters: dict, timeout: int, key: str,
                     partial_dir: Path) -> float:
    """Run ``<root>/<stem>.py`` (the jupytext source) with papermill and publish it at ``out``; returns seconds.

    Papermill writes into ``partial_dir``; the result is post-processed, checked, stamped with
    ``key`` and moved over ``out`` atomically, so ``out`` is either the previous copy or a complete one.
    """
    import jupytext
    import nbformat
    import papermill
    from papermill.exceptions import PapermillExecutionError

    from hrvlm.core.storage import atomic_write_text

    source = root / f"{stem}.py"
    if not source.is_file():
        raise BookError(f"{stem}: listed in _toc.yml but {source} does not exist")
    partial_dir.mkdir(parents=True, exist_ok=True)
    staged_input = partial_dir / f"{Path(stem).name}.input.ipynb"
    partial = partial_dir / f"{Path(stem).name}.ipynb"
    notebook = jupytext.read(source)
    notebook.cells.insert(0, nbformat.v4.new_code_cell(DISPLAY_SETUP, metadata={"tags": ["remove-cell"]}))
    notebook.cells.append(nbformat.v4.new_code_cell(STOP_WORKERS, metadata={"tags": ["remove-cell"]}))
    jupytext.write(notebook, staged_input)
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        with _kernel_environment():
            # The kernel's stderr (progress of pretraining, training, evaluation) goes to the builder's. With
            # ipykernel's fd capture on, what a chapter's worker processes write to fd 2 reached the builder
            # twice (the kernel echoes it to its own stderr and sends it as a stream message, which
            # stderr_file forwards): off, the workers write to the builder's stderr directly, once.
            papermill.execute_notebook(str(staged_input), str(partial), parameters=parameters, kernel_name="python3",
                                       cwd=str(out.parent), execution_timeout=timeout,
                                       progress_bar=sys.stderr.isatty(), stderr_file=sys.stderr,
                                       extra_arguments=KERNEL_ARGUMENTS)
    except PapermillExecutionError as err:
        raise BookError(f"chapter {stem}.py failed in cell {err.cell_index} (execution count {err.exec_count}): "
                        f"{err.ename}: {err.evalue}\n  executed copy with the traceback: {partial}") from None
    except Exception as err:  # a cell timeout, a dead kernel: the chapter stopped without a cell error
        raise BookError(f"chapter {stem}.py stopped: {type(err).__name__}: {str(err).strip()[:300]}") from err
    finally:
        staged_input.unlink(missing_ok=True)
    seconds = time.perf_counter() - start
    nb = nbformat.read(partial, as_version=4)
    reason = incomplete_reason(nb)
    if reason:
        raise BookError(f"chapter {stem}.py did not complete ({reason}); see {partial}")
    merge_parameters(nb)
    strip_progress(nb)
    nb.metadata[STAMP] = {"complete": True, "key": key, "parameters": parameters, "seconds": round(seconds, 1),
                          "executed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    atomic_write_text(out, nbformat.writes(nb))
    partial.unlink(missing_ok=True)
    return seconds


def _select(chapters: list[str], only: list[str] | None) -> list[str]:
    unknown = [o for o in only or [] if not any(Path(c).name.startswith(o) or c == o for c in chapters)]
    if unknown:
        raise BookUsageError(f"--only {unknown}: no such chapter; chapters are {chapters}")
    return [c for c in chapters if not only or any(Path(c).name.startswith(o) or c == o for o in only)]


def check_parameters(root: Path, chapters: list[str], profile: str, parameters: dict) -> None:
    """Refuse a ``-p`` that contradicts ``--profile`` or that no chapter declares, before any work."""
    if "profile" in parameters and parameters["profile"] != profile:
        raise BookUsageError(f"-p profile {parameters['profile']} contradicts --profile {profile}: "
                             f"choose the profile with --profile alone")
    declared = {name for stem in chapters if (root / f"{stem}.py").is_file()
                for name in parameter_names((root / f"{stem}.py").read_text())}
    unknown = sorted(set(parameters) - declared)
    if unknown:
        raise BookUsageError(f"-p {', '.join(unknown)}: no chapter has such a parameter; "
                             f"the chapters' parameters are {sorted(declared)}")


def stage_sources(root: Path, source: Path) -> None:
    """Copy ``_config.yml``, ``_toc.yml`` and ``book/`` into the staging folder ``source``.

    Where ``GITHUB_REPOSITORY`` is set (GitHub Actions), links to :data:`DEFAULT_REPOSITORY` (the
    repository button, Colab badges and buttons, install cells) point at that repository instead.
    """
    source.mkdir(parents=True, exist_ok=True)
    for item in ("_config.yml", "_toc.yml", "book"):
        target = source / item
        if target.is_dir():
            shutil.rmtree(target)
        (shutil.copytree if (root / item).is_dir() else shutil.copyfile)(root / item, target)
    repository = os.environ.get("GITHUB_REPOSITORY", "")
    if re.fullmatch(r"[\w.-]+/[\w.-]+", repository) and repository != DEFAULT_REPOSITORY:
        for path in [source / "_config.yml", *sorted((source / "book").rglob("*.md"))]:
            text = path.read_text()
            for prefix in ("github.com/", "colab.research.google.com/github/"):
                text = re.sub(re.escape(prefix + DEFAULT_REPOSITORY) + r"(?![\w.-])", prefix + repository, text)
            path.write_text(text)


def build(profile: str = "mini", only: list[str] | None = None, parameters: dict | None = None,
          root: Path | None = None, output: Path | None = None, timeout: int = 3600, force: bool = False) -> Path:
    """Execute the chapters that changed (``only``: just these; ``force``: even unchanged ones) and build
    the HTML book; returns the path of ``index.html``."""
    if profile not in PROFILES:
        raise BookUsageError(f"unknown profile {profile!r}; choose one of {PROFILES}")
    root = Path(root) if root else repo_root()
    if not is_book(root):
        raise BookUsageError(f"{root} is not a book: it needs _toc.yml and {NOTEBOOK_DIR}/")
    output = Path(output) if output else root / "_build" / profile
    source = output / "source"
    chapters = chapter_notebooks(root)
    selected = _select(chapters, only)
    check_parameters(root, chapters, profile, parameters or {})
    params = {**(parameters or {}), "profile": profile}

    stage_sources(root, source)
    for leftover in (output / "partial").glob("*.ipynb"):  # of a build killed mid-chapter
        leftover.unlink(missing_ok=True)

    total = time.perf_counter()
    for number, stem in enumerate(chapters, 1):
        out = source / f"{stem}.ipynb"
        tag = f"[hrvlm book] [{number}/{len(chapters)}] {stem}"
        key = chapter_key(root / f"{stem}.py", params) if (root / f"{stem}.py").is_file() else ""
        if stem in selected:
            if not force and check_complete(out, key) is None:
                print(f"{tag}: unchanged, reusing its executed copy", flush=True)
                continue
            print(f"{tag}: executing (profile={profile}) ...", flush=True)
            seconds = execute_notebook(root, stem, out, params, timeout, key, output / "partial")
            print(f"{tag}: done in {seconds:.1f} s", flush=True)
        else:
            reason = check_complete(out)
            if reason:
                raise BookError(f"{stem} cannot be published: {reason}; "
                                f"run `hrvlm book --profile {profile} --only {Path(stem).name}`")
            stale = check_complete(out, key)
            print(f"{tag}: not selected, publishing its last complete executed copy"
                  + (f" (out of date: {stale})" if stale else ""), flush=True)

    print("[hrvlm book] building HTML with jupyter-book (-W: warnings are errors) ...", flush=True)
    cmd = [sys.executable, "-c", "from jupyter_book.cli.main import main; main()", "build", str(source),
           "--path-output", str(output), "-W", "-n", "--keep-going"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYDEVD_DISABLE_FILE_VALIDATION": "1"})
    if proc.returncode != 0:
        raise BookError(f"jupyter-book build failed (exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-4000:]}")
    html, old = output / "html", output / ".html.old"
    shutil.rmtree(old, ignore_errors=True)
    if html.exists():
        os.replace(html, old)
    os.replace(output / "_build" / "html", html)
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(output / "_build", ignore_errors=True)
    print(f"[hrvlm book] HTML built in {time.perf_counter() - start:.1f} s; "
          f"whole build {time.perf_counter() - total:.1f} s", flush=True)
    return html / "index.html"


# ---------------------------------------------------------------- command line
def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default="mini", choices=PROFILES,
                        help="smoke: seconds, for CI; mini (default): the offline mini world; full: GPU + real data")
    parser.add_argument("--only", nargs="+", metavar="CHAPTER",
                        help="bring only these chapters up to date (e.g. 00_environment); the others are published "
                             "from their last complete executed copies")
    parser.add_argument("--force", action="store_true",
                        help="execute the chapters even when source, parameters and library are unchanged")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="extra papermill parameter for every chapter (value parsed as YAML); "
                             "the profile is chosen with --profile")
    parser.add_argument("--book", type=Path, default=None, metavar="DIR",
                        help="the book to build (a folder with _toc.yml and notebooks/; default: the one of the "
                             "source checkout this hrvlm is installed from, never one found from the current folder)")
    parser.add_argument("--output", type=Path, help="build folder (default: <book>/_build/<profile>)")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds allowed per notebook cell")


def run(args: argparse.Namespace) -> int:
    try:
        extra = {name: yaml.safe_load(value) for name, value in args.parameter}
    except yaml.YAMLError as err:
        print(f"hrvlm book: a -p value is not valid YAML ({str(err).splitlines()[0]})", file=sys.stderr)
        return 2
    try:
        index = build(args.profile, args.only, extra, root=args.book, output=args.output, timeout=args.timeout,
                      force=args.force)
    except BookUsageError as err:
        print(f"hrvlm book: {err}", file=sys.stderr)
        return 2
    except BookError as err:
        print(f"hrvlm book: {err}", file=sys.stderr)
        return 1
    print(f"[hrvlm book] the book is at {index}")
    return 0
