"""The project's promises about itself: one set of requirements, paired notebooks, CI = README."""
import json
import re
import tomllib
from pathlib import Path

import jupytext
import pytest
import yaml
from packaging.requirements import Requirement

from hrvlm.book import build as book

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.py"))


def _requirements() -> list[str]:
    extras = PYPROJECT["optional-dependencies"]
    return PYPROJECT["dependencies"] + extras["book"] + extras["test"]


def test_environment_yml_names_the_pyproject_requirements():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert any(str(d).startswith("python") for d in env["dependencies"])
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    installs_self = [p for p in pip if p.startswith("-e .")]
    assert installs_self == ["-e .[book,test]"]
    listed = {str(Requirement(p)) for p in pip if not p.startswith("-e")}
    assert listed == {str(Requirement(r)) for r in _requirements()}


def test_ci_pins_satisfy_the_pyproject_ranges():
    pins = {}
    for line in (ROOT / "requirements" / "pins.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version
    for text in _requirements():
        req = Requirement(text)
        name = req.name.lower().replace("_", "-")
        assert name in pins, f"{name} is not pinned in requirements/pins.txt"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} violates {req}"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"^(make \w+)\s+#", readme, flags=re.M)
    assert commands == ["make book", "make test"]
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith(("#", "set ", "cd "))]
    assert ci == ["make test"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_paired_in_sync_and_parametrised(path):
    text = jupytext.read(path)
    assert text.metadata["jupytext"]["formats"] == "ipynb,py:percent"
    assert text.metadata["kernelspec"]["name"] == "python3"
    paired = path.with_suffix(".ipynb")
    assert paired.is_file(), f"run `jupytext --sync {path.name}`"
    ipynb = json.loads(paired.read_text())
    assert [c["source"] if isinstance(c["source"], str) else "".join(c["source"]) for c in ipynb["cells"]] == \
        [c.source for c in text.cells], f"{paired.name} is out of sync: run `jupytext --sync {path.name}`"
    assert all(not c.get("outputs") for c in ipynb["cells"]), "commit notebooks without outputs"
    params = [c for c in text.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and re.search(r'^profile = "mini"(\s*#.*)?$', params[0].source, flags=re.M)


def test_every_notebook_is_a_chapter():
    chapters = set(book.chapter_notebooks(ROOT))
    assert chapters == {f"notebooks/{p.stem}" for p in NOTEBOOKS}
