"""``hrvlm doctor``: can this machine run a profile?  A checklist, in seconds, that downloads nothing.

    hrvlm doctor [--profile full] [--root DIR] [--json]

Each line is one check, ``ok`` or ``MISSING`` with the exact step that fixes it:

* **versions**: Python and every runtime dependency against the ranges of ``pyproject.toml`` (their one
  home: read from the source checkout's file, else from the installed distribution's metadata), and
  whether torchvision and open_clip import beside the installed torch (a torchvision built for another
  torch fails at import with ``operator torchvision::nms does not exist``);
* **accelerator**: the device and its precision policy (:func:`hrvlm.core.precision.precision_policy`); the
  ``full`` profile needs a CUDA GPU;
* **weights**: the profile's pretrained weights in open_clip's cache (:func:`hrvlm.models.clip.cached_weights`)
  or the mini world's in the hrvlm cache (:func:`hrvlm.training.pretrain.load_record`), else the command that gets them;
* **datasets**: each split the profile reads (the fine-tuning set's ``train`` split and every evaluation
  set's :func:`~hrvlm.evaluation.evaluate.default_split`) checked with the loader's own file list
  (:meth:`hrvlm.data.real.RealDataset.missing`), else ``hrvlm data fetch NAME`` and its download size;
* **disk and memory**: free space ≥ ``disk_factor`` × the missing downloads + the profile's working space,
  available RAM and GPU memory ≥ the profile's estimates (``resources/requirements.json``, each with its basis);
* **WordNet**: where it comes from (:func:`hrvlm.hierarchy.wordnet.locate`) and whether the built corpus is intact.

Exit code 0 only when every check passes, 1 otherwise (2: a bad request).  Nothing here opens a socket:
weights are looked up in the caches' files, never on the hub.
"""
from __future__ import annotations

import argparse
import functools
import importlib
import importlib.metadata
import json
import os
import platform
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from hrvlm.core.resources import RESOURCES

REQUIREMENTS_FILE = RESOURCES / "requirements.json"
PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
GB = 1e9
# Distributions whose import is checked, not only their version: the ones built against torch.
IMPORTS = {"torchvision": "torchvision", "open_clip_torch": "open_clip"}


@dataclass(frozen=True)
class Check:
    """One line of the checklist: what was checked, whether it passes, what was found, and how to fix it."""

    area: str
    name: str
    ok: bool
    found: str
    fix: str = ""


@functools.lru_cache(maxsize=1)
def requirements() -> dict:
    return json.loads(REQUIREMENTS_FILE.read_text())


def supported_ranges() -> tuple[SpecifierSet, dict[str, Requirement]]:
    """``(python range, {distribution: requirement})`` of hrvlm's runtime dependencies (no extras).

    Read from ``pyproject.toml`` beside the package when it runs from a source checkout (the tree's own
    ranges), else from the installed distribution's metadata, which pip built from the same file.
    """
    import tomllib

    project = tomllib.loads(PYPROJECT.read_text()).get("project", {}) if PYPROJECT.is_file() else {}
    if project.get("name") == "hrvlm":
        python, deps = project["requires-python"], project["dependencies"]
    else:
        meta = importlib.metadata.metadata("hrvlm")
        python = meta["Requires-Python"]
        deps = [d for d in importlib.metadata.requires("hrvlm") or [] if "extra ==" not in d]
    reqs = [Requirement(d) for d in deps]
    return SpecifierSet(python), {r.name: r for r in reqs}


def check_versions() -> list[Check]:
    python_range, reqs = supported_ranges()
    here = platform.python_version()
    checks = [Check("versions", "python", python_range.contains(here), f"{here} (supported: {python_range})",
                    "" if python_range.contains(here) else f"use a Python {python_range}")]
    for name, req in reqs.items():
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            checks.append(Check("versions", name, False, f"not installed (supported: {req.specifier})",
                                f'pip install "{req}"'))
            continue
        ok = req.specifier.contains(version, prereleases=True)
        checks.append(Check("versions", name, ok, f"{version} (supported: {req.specifier})",
                            "" if ok else f'pip install "{req}"'))
    return checks


def check_imports() -> list[Check]:
    """torchvision and open_clip must load beside the installed torch (their wheels are built against one)."""
    import torch

    checks = []
    for dist, module in IMPORTS.items():
        try:
            importlib.import_module(module)
            checks.append(Check("versions", f"import {module}", True, f"loads beside torch {torch.__version__}"))
        except Exception as err:  # any failure to import is the finding, reported as one line
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
            checks.append(Check("versions", f"import {module}", False, f"fails beside torch {torch.__version__}: {reason}",
                                f"install the {dist} release built for torch {torch.__version__.split('+')[0]} "
                                f"(its release notes pair each version with one torch)"))
    return checks


def check_accelerator(profile) -> list[Check]:
    import torch

    from hrvlm.core.environment import default_device, device_name
    from hrvlm.core.precision import precision_policy

    device = default_device()
    policy = precision_policy(device).to_dict()
    found = (f"{device_name(device)}; precision {policy['precision']}, attacks {policy['attacks']}"
             f"{', GradScaler' if policy['grad_scaler'] else ''} ({policy['reason']})")
    need = requirements()["profiles"][profile.name]["accelerator"]
    ok = need is None or device.type == need
    fix = "" if ok else (f"the {profile.name} profile needs a CUDA GPU (torch {torch.__version__} sees none): "
                         f"on Colab, Runtime > Change runtime type > GPU")
    return [Check("accelerator", "device", ok, found, fix)]


def weights_status(profile) -> Check:
    """Whether the profile's pretrained weights are on this machine, without building or downloading them."""
    from hrvlm.training.train import RANDOM_INIT

    label = f"{profile.model}/{profile.pretrained}"
    if profile.pretrained in (None, RANDOM_INIT):
        return Check("weights", label, True, "random initialisation: no weights needed")
    if profile.pretrain is not None:  # the mini world's tiny CLIP, pretrained by hrvlm pretrain
        from hrvlm.training.pretrain import PretrainConfig, load_record, run_dir

        config = PretrainConfig.profile(profile.name)
        if load_record(config) is not None:
            return Check("weights", label, True, f"cached: {run_dir(config) / 'model.safetensors'}")
        return Check("weights", label, False, f"not in the hrvlm cache ({run_dir(config)})",
                     f"hrvlm pretrain --profile {profile.name}")
    from huggingface_hub import constants

    from hrvlm.models.clip import cached_weights

    path = cached_weights(profile.model, profile.pretrained)
    if path is not None:
        return Check("weights", label, True, f"cached: {path}")
    size = requirements()["weights"].get(label, {}).get("download_mb")
    return Check("weights", label, False,
                 f"not in open_clip's caches ({constants.HF_HUB_CACHE}, ~/.cache/clip)",
                 f"download them once ({f'{size:,} MB' if size else 'size unknown'}) with network access: "
                 f"python -c \"from hrvlm.models.clip import load_clip; load_clip('{profile.model}', '{profile.pretrained}')\"")


def needed_splits(profile) -> dict[str, list[str]]:
    """Dataset -> the splits a profile's runs read: the fine-tuning split, then each evaluation split."""
    from hrvlm.data import get_spec
    from hrvlm.evaluation.evaluate import default_split
    from hrvlm.training.train import TrainConfig

    needed = {profile.train_dataset: [TrainConfig.split]}
    for name in profile.eval_datasets:
        split = default_split(get_spec(name))
        if split not in needed.setdefault(name, []):
            needed[name].append(split)
    return needed


def download_mb(name: str, splits) -> float | None:
    """The download size of ``splits`` of real dataset ``name`` (MB), None where unknown."""
    entry = requirements()["datasets"].get(name)
    if entry is None:
        return None
    size = entry["download_mb"]
    return float(size) if not isinstance(size, dict) else float(sum(size.get(s, 0) for s in splits))


def check_datasets(profile, root) -> tuple[list[Check], float]:
    """One check per dataset, and the MB that the missing ones download."""
    from hrvlm.data.real import REAL, data_root

    root = data_root(root)
    checks, missing_mb = [], 0.0
    for name, splits in needed_splits(profile).items():
        if name not in REAL:
            checks.append(Check("datasets", name, True, "generated on first use (the mini world)"))
            continue
        info = REAL[name]
        absent = [s for s in splits if info.missing(root, s)]
        if not absent:
            checks.append(Check("datasets", name, True, f"present under {root} ({', '.join(splits)})"))
            continue
        mb = download_mb(name, absent)
        missing_mb += mb or 0.0
        size = f"{mb:,.0f} MB" if mb is not None else "size unknown"
        if info.fetch_note:  # no automatic download (licence, dead URL): the loader's own manual steps
            fix = f"({size}) {info.fetch_note.replace('ROOT', str(root))}"
        else:
            fix = " && ".join(f"hrvlm data fetch {name} --root {root} --split {s}" for s in absent) + f"   ({size})"
        checks.append(Check("datasets", name, False, f"split {', '.join(absent)} not under {root}", fix))
    return checks, missing_mb


def _existing(path: Path) -> Path:
    """The nearest folder of ``path`` that exists (a data root need not exist before its first fetch)."""
    path = path.expanduser().absolute()
    while not path.exists():
        path = path.parent
    return path


def check_disk(profile, root, missing_mb: float) -> list[Check]:
    """Free space where the data and the hrvlm cache live, against what the profile still has to write.

    Need = ``disk_factor`` × the missing downloads (on the data root's disk) + the profile's
    ``work_disk_gb`` (runs, checkpoints and records, on the cache's disk); added up when both are on one disk.
    """
    from hrvlm.data.real import data_root
    from hrvlm.core.storage import cache_dir

    table = requirements()
    factor, work = table["disk_factor"], float(table["profiles"][profile.name]["work_disk_gb"])
    places = [(cache_dir(), work, f"{work:g} GB of runs and records")]
    if missing_mb:
        places.insert(0, (_existing(data_root(root)), factor * missing_mb * 1e6 / GB,
                          f"{factor} x {missing_mb / 1000:,.1f} GB of missing downloads"))
    disks: dict[int, list] = {}
    for place in places:
        disks.setdefault(place[0].stat().st_dev, []).append(place)
    checks = []
    for group in disks.values():
        path, need = group[0][0], sum(place[1] for place in group)
        free = shutil.disk_usage(path).free / GB
        ok = free >= need
        checks.append(Check("disk", str(path), ok, f"{free:,.1f} GB free; needs {need:,.1f} GB "
                            f"({' + '.join(place[2] for place in group)})",
                            "" if ok else f"free {need - free:,.1f} GB, or put the data root (--root, $HRVLM_DATA) "
                                          f"or the cache ($HRVLM_CACHE) on a larger disk"))
    return checks


def available_ram_gb() -> float | None:
    """Available memory (Linux ``MemAvailable``, else physical pages), None where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024 / GB
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / GB
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(profile) -> list[Check]:
    import torch

    entry = requirements()["profiles"][profile.name]
    checks = []
    ram = available_ram_gb()
    need = float(entry["ram_gb"])
    ok = ram is None or ram >= need
    checks.append(Check("memory", "RAM", ok, f"{'unknown' if ram is None else f'{ram:,.1f} GB'} available; "
                        f"needs {need:g} GB", "" if ok else "close other programs or use a machine with more memory"))
    if entry["gpu_memory_gb"] is not None and torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        need = float(entry["gpu_memory_gb"])
        ok = total / GB >= need
        checks.append(Check("memory", "GPU memory", ok, f"{total / GB:,.1f} GB ({free / GB:,.1f} GB free); needs {need:g} GB",
                            "" if ok else f"use a GPU with at least {need:g} GB"))
    return checks


def check_wordnet() -> list[Check]:
    from hrvlm.hierarchy import wordnet

    kind, path = wordnet.locate()
    if kind == "missing":
        return [Check("wordnet", "WordNet 3.0", False, "not found (NLTK data, hrvlm cache, /usr/share/wordnet)",
                      "hrvlm wordnet download   (or apt-get install wordnet-base, then hrvlm wordnet build)")]
    if kind == "hrvlm-cache":
        problems = wordnet.verify_corpus(path)
        if problems:
            return [Check("wordnet", "WordNet 3.0", False, f"damaged at {path}: {'; '.join(problems[:2])}",
                          "hrvlm wordnet build   (or hrvlm wordnet download)")]
    if kind == "debian":
        return [Check("wordnet", "WordNet 3.0", True, f"Debian's files at {path} (built into the hrvlm cache on first use)")]
    return [Check("wordnet", "WordNet 3.0", True, f"{kind}: {path}")]


def diagnose(profile: str = "full", root=None) -> list[Check]:
    """Every check of ``profile`` on this machine, in checklist order (raises on a bad request)."""
    from hrvlm.profiles import get_profile

    prof = get_profile(profile)
    if root is not None and Path(root).expanduser().exists() and not Path(root).expanduser().is_dir():
        raise NotADirectoryError(f"--root {root} is a file; give the folder that holds (or will hold) the datasets")
    checks = check_versions() + check_imports()
    known = profile in requirements()["profiles"]
    if not known:  # a profile added without its estimates: say so, and check what needs none
        checks.append(Check("requirements", profile, False, f"no machine requirements in {REQUIREMENTS_FILE.name}: "
                            f"accelerator, disk and memory unchecked",
                            f"add profiles.{profile} (accelerator, ram_gb, gpu_memory_gb, work_disk_gb, basis) "
                            f"to hrvlm/resources/{REQUIREMENTS_FILE.name}"))
    checks += (check_accelerator(prof) if known else []) + [weights_status(prof)]
    datasets, missing_mb = check_datasets(prof, root)
    checks += datasets
    if known:
        checks += check_disk(prof, root, missing_mb) + check_memory(prof)
    return checks + check_wordnet()


def summary(checks: list[Check]) -> str:
    """One line: ready, or how many checks fail and which."""
    failed = [c for c in checks if not c.ok]
    if not failed:
        return f"ready: every one of the {len(checks)} checks passes"
    return (f"not ready: {len(failed)} of {len(checks)} checks fail "
            f"({', '.join(f'{c.area} {c.name}' for c in failed)})")


def format_checklist(profile: str, checks: list[Check]) -> str:
    lines = [f"hrvlm doctor: can this machine run the {profile} profile?"]
    for c in checks:
        lines.append(f"  [{'ok' if c.ok else 'MISSING'}] {c.area:11s} {c.name}: {c.found}")
        if c.fix:
            lines.append(f"      -> {c.fix}")
    ending = "" if all(c.ok for c in checks) else "; each line marked MISSING says what to do"
    return "\n".join(lines + [summary(checks) + ending])


# ----------------------------------------------------------------------------- command line
def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default="full", help="the profile to check (default full)")
    parser.add_argument("--root", default=None, help="data root (default $HRVLM_DATA or ~/.cache/hrvlm/datasets)")
    parser.add_argument("--json", action="store_true", help="print the checks as JSON instead of a checklist")


def run(args: argparse.Namespace) -> int:
    checks = diagnose(args.profile, args.root)
    if args.json:
        print(json.dumps([asdict(c) for c in checks], indent=2))
    else:
        print(format_checklist(args.profile, checks))
    sys.stdout.flush()
    return 0 if all(c.ok for c in checks) else 1
