"""The one-way flow, enforced: every module of hrvlm belongs to a layer, imports only from its own layer or
the layers before it (module-level and function-local imports alike), the library never imports the book,
and no import circle exists.  The same import graph decides which chapters a code change re-executes."""
from pathlib import Path

import pytest

from hrvlm.book import build

# The declared order (DEVELOPING.md draws it): a module may import from its own layer and the ones before.
# Evaluation sits before training because training reuses it (the mini CLIP's zero-shot report, the
# evaluation options of a training set); the book and the command line come last and no library layer
# may import them.
LAYERS = [
    ("hrvlm",),  # the package itself: its version
    ("hrvlm.core",),
    ("hrvlm.data",),
    ("hrvlm.profiles",),
    ("hrvlm.hierarchy",),
    ("hrvlm.miniworld",),
    ("hrvlm.geometry",),
    ("hrvlm.models",),
    ("hrvlm.text",),
    ("hrvlm.heads",),
    ("hrvlm.attacks",),
    ("hrvlm.methods",),
    ("hrvlm.evaluation",),
    ("hrvlm.training",),
    ("hrvlm.results",),
    ("hrvlm.benchmarks",),
    ("hrvlm.doctor", "hrvlm.export"),
    ("hrvlm.zeroshot", "hrvlm.evaluate"),  # one-release aliases of the old module paths
    ("hrvlm.book",),
    ("hrvlm.cli",),
]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}
LIBRARY_END = RANK["hrvlm.book"]


def layer(module: str) -> str:
    name = module
    while name not in RANK:
        name = name.rpartition(".")[0]
        assert name, f"{module} belongs to no declared layer: add it to LAYERS and to DEVELOPING.md"
    return name


def ancestors(module: str) -> set[str]:
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


@pytest.fixture(scope="module")
def graph():
    # import statements only; a package's own parents are already importing when its modules run
    return {m: targets - ancestors(m) for m, targets in build.import_graph(strings=False).items()}


def test_every_module_has_a_layer(graph):
    assert len(graph) > 80
    for module in graph:
        layer(module)


def test_no_import_points_up_the_layers(graph):
    upward = sorted(f"{m} -> {t}" for m, targets in graph.items() for t in targets
                    if RANK[layer(t)] > RANK[layer(m)])
    assert upward == []


def test_the_library_never_imports_the_book(graph):
    into_book = sorted(f"{m} -> {t}" for m, targets in graph.items() if RANK[layer(m)] < LIBRARY_END
                       for t in targets if layer(t) in ("hrvlm.book", "hrvlm.cli"))
    assert into_book == []


def test_no_import_circles(graph):
    # Tarjan's strongly connected components: any component of more than one module is a circle
    index, low, stack, on, circles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert circles == []


def test_the_checker_sees_local_imports_and_upward_edges():
    # the parser itself: a function-local import counts, and an upward edge would be reported
    source = "def f():\n    from hrvlm.book.experiments import main_variants\n"
    modules = build._module_files()
    assert "hrvlm.book.experiments" in build.imported_modules(source, modules)
    assert RANK[layer("hrvlm.book.experiments")] > RANK[layer("hrvlm.training.train")]


def test_a_chapter_depends_on_the_code_it_reaches_only():
    root = Path(__file__).resolve().parent.parent / "notebooks"
    package = Path(build.__file__).resolve().parent.parent
    hierarchies = build.chapter_code(root / "02_hierarchies.py")
    main_table = build.chapter_code(root / "04_main_table.py")
    findings = package / "book" / "findings.py"
    assert findings in main_table and findings not in hierarchies
    assert package / "hierarchy" / "trees.py" in hierarchies
    # followed through imports: chapter 04 imports the book's experiments, which train through the loop
    assert package / "training" / "train.py" in main_table
    assert Path(build.__file__).resolve() not in main_table  # the builder is versioned by STAMP_VERSION


def test_the_library_imports_without_the_book_extras():
    # matplotlib, networkx, PyYAML and the Jupyter stack are the book's extras: every library module imports
    # without them (a tree drawing says what to install, in one line)
    import subprocess
    import sys

    blocked = ["matplotlib", "networkx", "yaml", "papermill", "jupytext", "IPython", "nbformat", "jupyter_book",
               "seaborn"]
    code = f"""
import importlib, importlib.abc, pkgutil, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)")
sys.meta_path.insert(0, Block())
import hrvlm
for m in pkgutil.walk_packages(hrvlm.__path__, 'hrvlm.'):
    if not m.name.startswith('hrvlm.book'):
        importlib.import_module(m.name)
from hrvlm.hierarchy.draw import require_plotting
try:
    require_plotting()
except ModuleNotFoundError as err:
    print(err)
"""
    out = subprocess.run([sys.executable, "-W", "ignore::DeprecationWarning", "-c", code], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "pip install 'hrvlm[book]'" in out.stdout
