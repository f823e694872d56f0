"""``hrvlm doctor``: what it reports missing for ``full`` here, ready for ``mini`` once its weights exist, no
socket ever; and the Colab install cell of the introduction and of every chapter (it cannot replace torch)."""
from __future__ import annotations

import importlib.metadata
import json
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hrvlm.book import build as book
from hrvlm import doctor
from hrvlm.hierarchy import wordnet
from hrvlm.cli import main
from hrvlm.data.real import REAL
from hrvlm.profiles import get_profile, profile_names

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def machine(tmp_path, tmp_cache, monkeypatch):
    """An empty hrvlm cache, an empty Hugging Face hub cache and home (no open_clip weights), a data root
    that does not exist yet, and WordNet (the real corpus, linked into the empty cache)."""
    source, found = wordnet.locate()
    if found is None:
        pytest.skip("WordNet 3.0 is not on this machine")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    if source == "hrvlm-cache":
        target = tmp_cache / "nltk_data" / "corpora" / "wordnet"
        target.parent.mkdir(parents=True)
        target.symlink_to(found, target_is_directory=True)
    return tmp_path / "data"


def _by(checks, area):
    return {c.name: c for c in checks if c.area == area}


def test_full_lists_exactly_what_is_missing_with_the_commands_and_exits_1(machine, capsys):
    checks = doctor.diagnose("full", machine)
    prof = get_profile("full")
    assert all(c.ok for c in _by(checks, "versions").values()), [c for c in checks if c.area == "versions" and not c.ok]

    (device,) = _by(checks, "accelerator").values()
    assert device.ok == torch.cuda.is_available()
    assert ("precision fp32" in device.found) != torch.cuda.is_available()

    (weights,) = _by(checks, "weights").values()
    assert not weights.ok and "605 MB" in weights.fix
    assert f"load_clip('{prof.model}', '{prof.pretrained}')" in weights.fix

    datasets = _by(checks, "datasets")
    assert list(datasets) == list(prof.eval_datasets)  # the fine-tuning set first, each set once
    assert not any(c.ok for c in datasets.values())
    assert datasets["imagenet"].found.startswith("split train, val not under")  # fine-tuning + evaluation split
    for name, check in datasets.items():
        if REAL[name].fetch_note:  # ImageNet, Stanford Cars: the loader's manual steps, no fetch command
            assert "cannot be downloaded automatically" in check.fix and "hrvlm data fetch" not in check.fix
        else:
            assert check.fix.startswith(f"hrvlm data fetch {name} --root {machine} --split test")
        mb = doctor.download_mb(name, ["train", "val"] if name == "imagenet" else ["test"])
        assert f"{mb:,.0f} MB" in check.fix

    (wn,) = _by(checks, "wordnet").values()
    assert wn.ok
    failed = {(c.area, c.name) for c in checks if not c.ok}
    expected = {("weights", weights.name)} | {("datasets", n) for n in datasets}
    expected |= set() if torch.cuda.is_available() else {("accelerator", "device")}
    # disk: 2 x the 208 GB of downloads does not fit on most disks; memory depends on the machine
    assert failed - {(c.area, c.name) for c in checks if c.area in ("disk", "memory")} == expected

    assert main(["doctor", "--profile", "full", "--root", str(machine)]) == 1
    out = capsys.readouterr().out
    assert "not ready:" in out and out.count("[MISSING]") == len(failed)
    assert f"hrvlm data fetch cifar10 --root {machine} --split test" in out


def test_a_dataset_counts_as_present_by_the_loaders_own_files(machine):
    for path in REAL["cifar10"].files["test"]:
        (machine / path).parent.mkdir(parents=True, exist_ok=True)
        (machine / path).write_bytes(b"")
    datasets = _by(doctor.diagnose("full", machine), "datasets")
    assert datasets["cifar10"].ok and "present under" in datasets["cifar10"].found
    assert not datasets["cifar100"].ok


def test_the_disk_need_adds_the_missing_downloads(machine, monkeypatch):
    need = doctor.requirements()["disk_factor"] * sum(
        doctor.download_mb(n, s) for n, s in doctor.needed_splits(get_profile("full")).items()) / 1000
    checks = _by(doctor.diagnose("full", machine), "disk")
    total = sum(float(re.search(r"needs ([\d,.]+) GB", c.found).group(1).replace(",", "")) for c in checks.values())
    assert total == pytest.approx(need + doctor.requirements()["profiles"]["full"]["work_disk_gb"], abs=0.2)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: type("Usage", (), {"free": 10**15}))
    assert all(c.ok for c in _by(doctor.diagnose("full", machine), "disk").values())


def test_mini_is_ready_once_its_weights_exist(machine, capsys):
    from safetensors.torch import save

    from hrvlm.models.clip import load_clip
    from hrvlm.training.pretrain import PretrainConfig, load_record, run_dir
    from hrvlm.core.storage import atomic_write_bytes, atomic_write_json, file_sha256

    checks = doctor.diagnose("mini", machine)
    assert [(c.area, c.fix) for c in checks if not c.ok] == [("weights", "hrvlm pretrain --profile mini")]
    assert main(["doctor", "--profile", "mini"]) == 1

    # The mini weights as `hrvlm pretrain` leaves them (a finished run: weights + record with their sha256),
    # here of a random-init model: pretraining the mini profile takes minutes.
    config = PretrainConfig.profile("mini")
    model, _, _ = load_clip(config.model)
    weights = run_dir(config) / "model.safetensors"
    atomic_write_bytes(weights, save({k: v.contiguous() for k, v in model.clip.state_dict().items()}))
    atomic_write_json(run_dir(config) / "record.json", {"weights": weights.name, "sha256": file_sha256(weights)})
    assert load_record(config) is not None
    load_clip(config.model, pretrained="mini")  # the file is real weights: the mini tag loads them, no pretraining

    checks = doctor.diagnose("mini", machine)
    assert all(c.ok for c in checks), [c for c in checks if not c.ok]
    assert _by(checks, "weights")[f"{config.model}/mini"].found == f"cached: {weights}"
    capsys.readouterr()
    assert main(["doctor", "--profile", "mini", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["area"] for r in rows} == {"versions", "accelerator", "weights", "datasets", "disk", "memory", "wordnet"}


def test_doctor_never_opens_a_socket(machine, monkeypatch):
    opened = []

    def refuse(*args, **kwargs):
        opened.append(args)
        raise OSError("hrvlm doctor opened a socket")

    for name in ("__init__", "connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    for profile in ("full", "mini"):
        main(["doctor", "--profile", profile, "--root", str(machine)])
    assert opened == []


def test_a_version_outside_the_supported_range_is_reported_with_the_pip_command(monkeypatch):
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "2.0.0" if name == "torch" else real(name))
    checks = _by(doctor.check_versions(), "versions")
    assert not checks["torch"].ok and checks["torch"].fix == 'pip install "torch>=2.4"'
    assert checks["torchvision"].ok


def test_a_torchvision_built_for_another_torch_is_caught_at_import(monkeypatch):
    import importlib

    real = importlib.import_module

    def broken(name, *args, **kwargs):
        if name == "torchvision":  # what torchvision 0.28 from PyPI does beside torch 2.13.0+cpu
            raise RuntimeError("operator torchvision::nms does not exist")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", broken)
    checks = _by(doctor.check_imports(), "versions")
    assert not checks["import torchvision"].ok and "torchvision::nms does not exist" in checks["import torchvision"].found
    assert "install the torchvision release built for torch" in checks["import torchvision"].fix
    assert checks["import open_clip"].ok


def test_the_ranges_are_pyprojects():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    python, reqs = doctor.supported_ranges()
    assert str(python) == project["requires-python"]
    assert sorted(str(r) for r in reqs.values()) == sorted(str(doctor.Requirement(d)) for d in project["dependencies"])


def test_a_profile_without_requirements_is_reported_not_crashed(machine, monkeypatch):
    table = json.loads(doctor.REQUIREMENTS_FILE.read_text())
    del table["profiles"]["mini"]
    monkeypatch.setattr(doctor, "requirements", lambda: table)
    checks = doctor.diagnose("mini", machine)
    missing = [c for c in checks if c.area == "requirements"]
    assert len(missing) == 1 and not missing[0].ok and "add profiles.mini (accelerator" in missing[0].fix
    assert not {"accelerator", "disk", "memory"} & {c.area for c in checks}


def test_an_installed_hrvlm_reads_the_ranges_from_its_metadata(tmp_path, monkeypatch):
    """Installed from git (Colab), there is no pyproject.toml beside the package: pip's metadata has the ranges."""
    monkeypatch.setattr(doctor, "PYPROJECT", tmp_path / "pyproject.toml")
    monkeypatch.setattr(importlib.metadata, "metadata", lambda name: {"Requires-Python": ">=3.10"})
    monkeypatch.setattr(importlib.metadata, "requires",
                        lambda name: ["torch>=2.4", "open_clip_torch<4,>=3.0", 'pytest>=8.0; extra == "test"'])
    python, reqs = doctor.supported_ranges()
    assert str(python) == ">=3.10" and sorted(reqs) == ["open_clip_torch", "torch"]
    assert reqs["open_clip_torch"].specifier.contains("3.3.0") and not reqs["torch"].specifier.contains("2.3.1")


def test_every_profile_has_machine_requirements_with_a_basis():
    table = doctor.requirements()
    for name in profile_names():
        entry = table["profiles"][name]
        assert {"accelerator", "ram_gb", "gpu_memory_gb", "work_disk_gb", "basis"} <= set(entry) and entry["basis"]
    assert set(table["datasets"]) == set(REAL)


# ----------------------------------------------------------------------------- the Colab install cell
def intro_cell() -> list[str]:
    """The shell lines (``!...``) of the introduction's Colab install cell."""
    text = (ROOT / "book" / "intro.md").read_text()
    block = re.search(r"```text\n(!pip .*?)```", text, re.S).group(1)
    return [line.strip() for line in block.splitlines() if line.startswith("!")]


def test_the_install_cell_cannot_replace_torch(tmp_path):
    """The first line pins the installed torch and torchvision as pip constraints; every install obeys them.

    Tried for real on 2026-12-02 in a clean venv (Python 3.11) with torch 2.13.0 and torchvision 0.28.0
    from PyPI, older than the CI pins 2.14.1/0.29.1: the cell's lines, with hrvlm installed from a copy of
    the checkout instead of git+https, installed hrvlm[book] (open_clip_torch 3.3.0 and the book's extras)
    and left torch 2.13.0 / torchvision 0.28.0 in place; `hrvlm doctor --profile mini` then ran there.
    With the same constraints, asking for torchvision>=0.29 (which needs a newer torch) fails with
    ResolutionImpossible instead of replacing torch.
    """
    lines = intro_cell()
    pin = next(line for line in lines if "--format=freeze" in line)
    constraints = re.search(r"> (\S+)$", pin).group(1)
    installs = [line for line in lines if re.match(r"!pip install ", line)]
    assert installs
    for line in installs:
        assert f"-c {constraints}" in line or "--no-deps" in line, line
        named = [token.strip("'\"") for token in line.split()[2:] if not token.startswith("-")]
        assert not [t for t in named if re.match(r"(torch|torchvision)\b(?!_)", t)], line  # never asks for torch itself
    # The pin line, run here, writes the installed torch and torchvision as exact constraints.
    pip = Path(sys.executable).parent / "pip"
    subprocess.run(["bash", "-c", pin[1:].replace("pip ", f"{pip} ", 1).replace(constraints, str(tmp_path / "c.txt"))],
                   check=True, timeout=120)
    pinned = (tmp_path / "c.txt").read_text().split()
    assert sorted(pinned) == [f"torch=={importlib.metadata.version('torch')}",
                              f"torchvision=={importlib.metadata.version('torchvision')}"]
    assert lines[-1] == "!hrvlm doctor --profile full"


@pytest.mark.parametrize("stem", book.chapter_notebooks(ROOT))
def test_every_chapter_runs_the_intro_cell_and_the_doctor_first_on_colab(stem):
    import nbformat

    nb = nbformat.read(ROOT / f"{stem}.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", []) and "colab" in code[1].metadata.get("tags", []), stem
    commands = [line.strip() for line in code[1].source.splitlines() if line.strip().startswith("!")]
    expected = [line.replace("--profile full", "--profile {profile}") for line in intro_cell()]
    assert commands == expected, stem
    assert 'if "google.colab" in sys.modules:' in code[1].source  # a no-op in the book's own builds
