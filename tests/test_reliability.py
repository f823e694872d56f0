"""The table of bad inputs: what the CLI and the API are tested against, each with its expected message.

Rules (DEVELOPING.md, "Errors"): a request the user can fix fails before any expensive work with one
line that says what to do; the CLI prints it as ``hrvlm CMD: error: ...`` with exit code 2 and no
traceback (``hrvlm --debug CMD`` shows it).  Add a row here for every new check.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hrvlm.book import claims
from hrvlm.hierarchy import trees as hierarchy
from hrvlm.attacks import build_attack
from hrvlm.attacks.threat import check_eps_budget, eps_argument, read_eps
from hrvlm.cli import COMMANDS, main
from hrvlm.data import marker as fab
from hrvlm.data import get_dataset
from hrvlm.data.real import DatasetMissing, build, fetch
from hrvlm.core.environment import check_device
from hrvlm.evaluation.evaluate import build_attacks, check_attacks
from hrvlm.evaluation.request import EvalRequest, check_store
from hrvlm.models.clip import load_clip
from hrvlm.evaluation.records import RecordStore, StaleRecord, check_record, record_checksum
from hrvlm.data.templates import check_templates, load_templates

ROOT = Path(__file__).resolve().parent.parent
TREE = '{"format": "hrvlm-tree/1", "name": "t", "leaves": LEAVES, "parents": {"a": "x", "b": "x"}NAMES}'


def _tree_file(tmp_path: Path, leaves='["a", "b"]', names="", raw: bytes | None = None) -> Path:
    path = tmp_path / "tree.json"
    path.write_bytes(raw if raw is not None else TREE.replace("LEAVES", leaves).replace("NAMES", names).encode())
    return path


def _claims_file(tmp_path: Path, **change) -> Path:
    """The shipped claims file with its first claim changed (``table=``: its source's paper table)."""
    import json

    spec = json.loads(claims.CLAIMS_FILE.read_text())
    first = spec["claims"][0]
    first["source"]["table"] = change.pop("table", first["source"]["table"])
    first.update(change)
    path = tmp_path / "claims.json"
    path.write_text(json.dumps(spec))
    return path


def _images(model, fill=None, batch=2, dtype=torch.float32):
    x = torch.rand(batch, 3, model.image_size, model.image_size, dtype=dtype)
    if fill is not None:
        x[-1, 0, 0, 0] = fill
    return x


# (id, call(ctx) that must raise, exception type, message regex).  ctx.tmp: an empty folder, ctx.model: a tiny CLIP.
API = [
    # models
    ("model-none", lambda c: load_clip(None), TypeError, "model name must be a non-empty string"),
    ("model-unknown", lambda c: load_clip("nosuch"), KeyError, "unknown model 'nosuch'"),
    ("pretrained-folder", lambda c: load_clip("hrvlm-tiny", c.tmp), FileNotFoundError, "neither a folder with run.json"),
    ("pretrained-dot", lambda c: load_clip("hrvlm-tiny", "."), ValueError,
     "is a folder that is not a hrvlm run/checkpoint"),
    ("pretrained-missing-file", lambda c: load_clip("hrvlm-tiny", c.tmp / "w.safetensors"), FileNotFoundError,
     "does not exist"),
    ("images-nan", lambda c: c.model.encode_image(_images(c.model, float("nan"))), ValueError, "NaN or inf"),
    ("images-inf", lambda c: c.model.encode_image(_images(c.model, float("inf"))), ValueError, "NaN or inf"),
    ("images-empty-batch", lambda c: c.model.encode_image(_images(c.model, batch=0)), ValueError,
     "the batch is empty"),
    ("images-255", lambda c: c.model.encode_image(_images(c.model) * 255), ValueError, r"\[0, 1\] pixel space"),
    # evaluation requests (checked before a model loads)
    ("eval-no-dataset", lambda c: EvalRequest("").check(), ValueError, "no dataset named"),
    ("eval-unknown-dataset", lambda c: EvalRequest("mini-heldot").check(), KeyError, "Did you mean"),
    ("eval-split", lambda c: EvalRequest("mini-heldout", split="val").check(), ValueError, "has no split 'val'"),
    ("eval-negative-level", lambda c: EvalRequest("mini-heldout", levels=[-1]).check(), ValueError,
     "non-negative integers"),
    ("eval-level-beyond-depth", lambda c: EvalRequest("mini-heldout", levels=[0, 9]).check(), ValueError,
     r"level 9 exceeds the depth 5 .*use levels 0..5"),
    ("eval-attacked-single-class-level", lambda c: EvalRequest(
        "mini-heldout", [build_attack("pgd", 1 / 255)], range(6)).check(), ValueError,
     r"level 5 .* has a single class.*use levels 0..4"),
    ("eval-tree-index", lambda c: EvalRequest("mini-heldout", levels=[1], tree=9).check(), ValueError,
     r"no tree 9.*give 0"),
    ("eval-n-zero", lambda c: EvalRequest("mini-heldout", n=0).check(), ValueError, "n must be a positive integer"),
    ("eval-batch-size", lambda c: EvalRequest("mini-heldout", batch_size=0).check(), ValueError, "batch_size must be"),
    ("eval-templates", lambda c: EvalRequest("mini-heldout", templates="nosuch").check(), KeyError, "no template set"),
    ("eval-resolution", lambda c: EvalRequest("mini-heldout", resolution="x").check(), ValueError, "resolution policy"),
    ("eval-precision", lambda c: EvalRequest("mini-heldout", precision="half").check(), ValueError,
     "unknown precision 'half'; choose one of auto"),
    ("eval-store-folder", lambda c: check_store(c.tmp), IsADirectoryError,
     "is a folder; give a file such as"),
    ("eval-mini-option", lambda c: EvalRequest("mini-heldout", dataset_options={"size": "nosuch"}).check(),
     ValueError,
     "unknown size 'nosuch' for mini-heldout"),
    ("eval-real-dataset-absent", lambda c: EvalRequest("cifar10", dataset_options={"root": c.tmp}).check(),
     DatasetMissing, "hrvlm data fetch cifar10"),
    ("digits-split", lambda c: EvalRequest("uci-digits", split="train").check(), ValueError, "has no split 'train'"),
    ("digits-image-size", lambda c: get_dataset("uci-digits", image_size=8), ValueError, "image_size must be >= 16"),
    ("eval-not-an-attack", lambda c: EvalRequest("mini-heldout", ["pgd"]).check(), TypeError, "is not an attack"),
    ("attack-none-named", lambda c: build_attacks([], [1 / 255]), ValueError, "no attack named"),
    ("attack-no-eps", lambda c: build_attacks(["pgd"], []), ValueError, "no eps given"),
    ("attack-negative-steps", lambda c: check_attacks([build_attack("pgd", 1 / 255, steps=-5)]), ValueError,
     "need steps >= 0"),
    ("attack-zero-restarts", lambda c: check_attacks([build_attack("apgd-ce", 1 / 255, restarts=0)]), ValueError,
     "restarts >= 1"),
    # records
    ("records-store-folder", lambda c: RecordStore(c.tmp), IsADirectoryError, "is a folder"),
    ("records-old-schema", lambda c: check_record({"key": "k", "checksum": record_checksum({"key": "k", "schema": 1}),
                                                   "schema": 1}), StaleRecord, r"record k has schema 1, not this hrvlm's 2"),
    # tree files
    ("tree-list-leaf", lambda c: hierarchy.read_tree_file(_tree_file(c.tmp, leaves='["a", ["b"]]')),
     hierarchy.HierarchyError, "list of class names"),
    ("tree-list-names", lambda c: hierarchy.read_tree_file(_tree_file(c.tmp, names=', "names": ["x"]')),
     hierarchy.HierarchyError, "'names' must be a JSON object"),
    ("tree-names-not-strings", lambda c: hierarchy.read_tree_file(_tree_file(c.tmp, names=', "names": {"x": 1}')),
     hierarchy.HierarchyError, "readable names"),
    ("tree-binary", lambda c: hierarchy.read_tree_file(_tree_file(c.tmp, raw=bytes(range(256)))),
     hierarchy.HierarchyError, "not a UTF-8 text file"),
    ("tree-missing", lambda c: hierarchy.read_tree_file(c.tmp / "none.json"), FileNotFoundError, "does not exist"),
    # claims files (hrvlm.book.claims)
    ("claims-unknown-table", lambda c: claims.load_claims(_claims_file(c.tmp, table="nosuch")), ValueError,
     "claim 'main-hrvlm-1tree-vs-tecoa': unknown paper table 'nosuch'"),
    ("claims-unknown-metric", lambda c: claims.load_claims(_claims_file(c.tmp, metric="accuracy")), ValueError,
     "unknown metric 'accuracy'"),
    ("claims-unknown-variant", lambda c: claims.check_claims(claims.load_claims(_claims_file(c.tmp, a="HRVLM+")),
                                                             "smoke"), ValueError, "unknown variant 'HRVLM\\+'"),
    ("claims-unknown-protocol", lambda c: claims.load_claims(_claims_file(c.tmp, protocol="nosuch")), ValueError,
     "unknown protocol 'nosuch'"),
    ("claims-unknown-direction", lambda c: claims.load_claims(_claims_file(c.tmp, direction="up")), ValueError,
     "unknown direction 'up'"),
    ("claims-level", lambda c: claims.load_claims(_claims_file(c.tmp, level=3)), ValueError, "level must be 0 or"),
    ("claims-not-json", lambda c: claims.load_claims(_tree_file(c.tmp, raw=b"{")), ValueError, "is not JSON text"),
    # downloads, offline (the test's socket guard refuses the connection as an offline machine would)
    ("fetch-offline", lambda c: fetch("cifar10", c.tmp), DatasetMissing,
     r"downloading cifar10 .* from https://www.cs.toronto.edu/\S+ failed .* extract it under"),
    ("fetch-root-file", lambda c: fetch("cifar10", _a_file(c.tmp)), NotADirectoryError, "is a file, not a folder"),
    # attacks and budgets (issue 24)
    ("attack-repeated", lambda c: build_attacks(["pgd", "pgd"], [1 / 255]), ValueError, "repeat pgd"),
    ("attack-repeated-eps", lambda c: build_attacks(["pgd"], [1 / 255, 1 / 255]), ValueError, "repeat pgd"),
    ("eps-budget", lambda c: check_eps_budget(read_eps("1e9"), 3 / 255, "the mini profile's unit"), ValueError,
     r"exceeds 1, the whole \[0, 1\] pixel range: .* --eps 1 \(= 3/255\)"),
    # devices (a GPU machine has cuda, never cuda:99, meta or nosuch)
    ("device-nosuch", lambda c: check_device("nosuch"), ValueError, "unknown device 'nosuch'"),
    ("device-meta", lambda c: check_device("meta"), ValueError, "not meta"),
    ("device-cuda-99", lambda c: check_device("cuda:99"), ValueError, r"no CUDA GPU|has \d+ GPU\(s\)"),
    # templates: exactly one {c} and no other field, before any model loads
    *[(f"template-{t}", lambda c, t=t: check_templates([t]), ValueError, "exactly one {c} placeholder")
      for t in ("{x} {c}", "{0} {c}", "{c.__class__} {c}", "{c} and {c}", "{c!r}", "no field")],
    ("template-brace", lambda c: check_templates(["a {c"]), ValueError, "is not a format string"),
    ("template-file-empty", lambda c: load_templates(str(_template_file(c.tmp, b""))), ValueError, "is not JSON"),
    ("template-file-binary", lambda c: load_templates(str(_template_file(c.tmp, bytes(range(256))))), ValueError,
     "not a UTF-8 text file"),
    ("template-file-field", lambda c: load_templates(str(_template_file(c.tmp, b'["{x} {c}"]'))), ValueError,
     r"template file .*: template '\{x\} \{c\}' must have exactly one"),
    # fabricated data roots (hrvlm data fabricate)
    ("fabricated-marker-corrupt", lambda c: (c.tmp / fab.MARKER).write_text("{") and fab.read_marker(c.tmp),
     fab.FabricatedRootError, "not a readable fabrication marker"),
    ("fetch-into-fabricated", lambda c: _fabricated_marker(c.tmp) and fetch("cifar10", c.tmp), ValueError,
     "is a fabricated root .* fetch real datasets into another data root"),
    ("real-data-asked-fabricated", lambda c: build("cifar10", root=c.tmp, fabricated=True), ValueError,
     "is not a fabricated root, but the request was made for fabricated data"),
]


def _a_file(tmp: Path) -> Path:
    path = tmp / "a-file"
    path.write_text("not a folder")
    return path


def _template_file(tmp: Path, data: bytes) -> Path:
    path = tmp / "templates.json"
    path.write_bytes(data)
    return path


def _fabricated_marker(root: Path) -> int:
    return (root / fab.MARKER).write_text('{"format": "%s", "md5": {}, "datasets": [], "per_class": 1}' % fab.FORMAT)


class Ctx:
    def __init__(self, tmp: Path, model):
        self.tmp, self.model = tmp, model


@pytest.mark.parametrize("name, call, error, message", API, ids=[row[0] for row in API])
def test_api_bad_input(name, call, error, message, tmp_path, clip):
    with pytest.raises(error, match=message) as raised:
        call(Ctx(tmp_path, clip[0]))
    text = raised.value.args[0] if isinstance(raised.value, KeyError) else str(raised.value)
    assert "\n" not in text, f"{name}: the message is not one line"


# (argv, message regex): one bad argument per verb of hrvlm.cli.COMMANDS, each run as its own process.
VERBS = [
    (["wordnet", "status", "--download"], "conflicting actions"),
    (["hierarchy", "check", "BINARY"], "not a UTF-8 text file"),
    (["data", "fetch", "mini-heldout"], "generated, not fetched"),
    (["pretrain", "--profile", "nosuch"], "invalid choice: 'nosuch'"),
    (["train", "--method", "nosuch", "--profile", "smoke"], "unknown method 'nosuch'"),
    (["export", "nosuchrun", "FOLDER/x.safetensors"], "no run 'nosuchrun'"),
    (["eval", "--datasets", ","], "--datasets names no dataset"),
    (["records", "verify", "FOLDER"], "is a folder"),
    (["book", "--only"], "expected at least one argument"),
    (["bench", "nosuch"], "invalid choice: 'nosuch'"),
    (["doctor", "--profile", "nosuch"], r"unknown profile 'nosuch'; choose one of \["),
]
# More CLI cases (issue 14), run in this process through hrvlm.cli.main.
CLI = [
    (["hierarchy", "show", "mini-heldout", "--level=-1"], r"--level -1: .* levels 0..5"),
    (["hierarchy", "show", "mini-heldout", "--tree", "99"], r"--tree 99: mini-heldout has \d+ trees?, give 0\.\.\d"),
    (["hierarchy", "export", "mini-heldout", "--out", "FOLDER"], "is a folder; give a file name"),
    (["hierarchy", "draw", "mini-heldout", "--out", "FOLDER/x.png", "--leaves", "0"], "draw at least one leaf"),
    (["eval", "--model", "hrvlm-tiny-cnn", "--pretrained", "mini", "--datasets", "mini-heldout",
      "--levels", "0,1,2,3,4,5", "--n", "50"], "use levels 0..4"),
    (["eval", "--datasets", "mini-heldout", "--store", "FOLDER"], "is a folder"),
    (["eval", "--datasets", "mini-heldout", "--steps", "-5"], "need steps >= 0"),
    (["eval", "--datasets", "mini-heldout", "--attack", "pgd", "--eps", ","], "no eps given"),
    (["eval", "--model", "ViT-B-32-quickgelu", "--pretrained", "openai", "--datasets", "mini-heldout",
      "--attack", "none", "--n", "10"], "not cached and HF_HUB_OFFLINE is set"),
    (["eval", "--model", "hrvlm-tiny", "--pretrained", ".", "--datasets", "mini-heldout"],
     "folder that is not a hrvlm run/checkpoint"),
    (["data", "fetch", "imagenet", "--root", "FOLDER"], "cannot be downloaded automatically"),
    (["data", "fetch", "uci-digits"], "ships with scikit-learn: nothing to fetch"),
    (["data", "fabricate", "--root", "FOLDER/new", "--per-class", "0"], "--per-class must be an integer >= 1"),
    (["data", "fabricate", "--root", "FOLDER/new", "--dataset", "cifar11"], "unknown real dataset"),
    (["data", "fabricate", "--root", "BINARY"], "is a file; give a folder"),
    (["data", "fabricate", "--root", "FOLDER"], "already holds files and is not a fabricated root"),
    (["records", "verify", "FOLDER/none.jsonl"], "no records store at"),
    (["doctor", "--root", "BINARY"], "is a file; give the folder that holds"),
    # issue 24: one meaning of --eps, its advice accepted by the same verb; repeats; files on the way
    (["eval", "--datasets", "mini-heldout", "--eps", "1e9"], r"exceeds 1, the whole .* --eps 1 \(= 1/255\)"),
    (["eval", "--datasets", "mini-heldout", "--profile", "smoke", "--eps", "1e9"], r"--eps 1 \(= 3/255\)"),
    (["eval", "--datasets", "mini-heldout", "--attack", "pgd,pgd"], "repeat pgd"),
    (["eval", "--datasets", "mini-heldout", "--profile", "smoke", "--eps", "1,3/255"], "repeat pgd"),
    (["eval", "--datasets", "mini-heldout,mini-heldout"], "names mini-heldout more than once"),
    (["train", "--method", "tecoa", "--profile", "smoke", "--eps", "1e9"],
     r"--eps 1e\+09 = .* exceeds 1, the whole .* --eps 1 \(= 3/255\) .* --eps 4/255"),
    (["train", "--method", "tecoa", "--profile", "smoke", "--batch-size", "1000000000", "--out", "FOLDER/run"],
     r"batch_size 1000000000 exceeds the \d+ training images of mini-finetune; give --batch-size \d+ or less"),
    *[(["eval", "--model", "hrvlm-tiny-cnn", "--pretrained", "mini-smoke", "--datasets", "mini-heldout",
        "--templates", f"TEMPLATES_{name}"], message) for name, message in (
        ("empty", "is not JSON"), ("binary", "not a UTF-8 text file"), ("x", "exactly one {c}"), ("0", "exactly one {c}"),
        ("class", "exactly one {c}"), ("twice", "exactly one {c}"))],
    (["hierarchy", "draw", "mini-heldout", "--out", "AFILE/x.png"], "AFILE is a file, not a folder"),
    (["hierarchy", "export", "mini-heldout", "--out", "AFILE/x.json"], "AFILE is a file, not a folder"),
    (["data", "fetch", "cifar10", "--root", "AFILE"], "data root .*AFILE is a file, not a folder"),
    (["data", "fetch", "cifar10", "--root", "AFILE/sub"], "AFILE is a file, not a folder"),
    (["export", "nosuchrun", "AFILE/x.safetensors"], "AFILE is a file, not a folder"),
    (["eval", "--datasets", "mini-heldout", "--store", "AFILE/r.jsonl"], "AFILE is a file, not a folder"),
    (["bench", "jpeg", "--device", "cuda:99"], r"device 'cuda:99': this machine has (no CUDA GPU|\d+ GPU\(s\))"),
    (["bench", "jpeg", "--device", "meta"], "not meta"),
]
TEMPLATE_FILES = {"empty": b"", "binary": bytes(range(256)), "x": b'["{x} {c}"]', "0": b'["{0} {c}"]',
                  "class": b'["{c.__class__} {c}"]', "twice": b'["{c} and {c}"]'}


def _fill(argv: list[str], tmp_path: Path) -> list[str]:
    (tmp_path / "binary.json").write_bytes(bytes(range(256)))
    (tmp_path / "AFILE").write_text("a file where a folder is expected")
    for name, data in TEMPLATE_FILES.items():
        (tmp_path / f"templates-{name}.json").write_bytes(data)
    argv = [str(tmp_path / f"templates-{a.removeprefix('TEMPLATES_')}.json") if a.startswith("TEMPLATES_") else a
            for a in argv]
    return [a.replace("BINARY", str(tmp_path / "binary.json")).replace("AFILE", str(tmp_path / "AFILE"))
            .replace("FOLDER", str(tmp_path)) for a in argv]


def _one_error_line(stderr: str, verb: str, message: str) -> None:
    import re

    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith(f"hrvlm {verb}: error: ") and re.search(message, lines[0]), lines[0]


def test_the_table_covers_every_verb():
    assert [argv[0] for argv, _ in VERBS] == list(COMMANDS)


@pytest.mark.parametrize("argv, message", VERBS, ids=[argv[0] for argv, _ in VERBS])
def test_every_verb_exits_2_at_once_with_one_line(argv, message, tmp_path):
    # HF_HUB_OFFLINE: a child process has no socket guard, so it must not even try the network
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "hrvlm.cli", *_fill(argv, tmp_path)], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=120)
    elapsed = time.perf_counter() - start
    assert done.returncode == 2, done.stderr
    _one_error_line(done.stderr, argv[0], message)
    assert elapsed < 30, f"{argv}: {elapsed:.1f} s before the error"


@pytest.mark.parametrize("argv, message", CLI, ids=[" ".join(a)[:50] for a, _ in CLI])
def test_cli_bad_request_fails_before_work_with_one_line(argv, message, tmp_path, capsys, monkeypatch):
    import hrvlm.models.clip

    monkeypatch.setattr(hrvlm.models.clip.PixelCLIP, "encode_image", lambda *a, **k: pytest.fail("work started"))
    assert main(_fill(argv, tmp_path)) == 2
    _one_error_line(capsys.readouterr().err, argv[0], message)


@pytest.mark.parametrize("argv", [["--debug", "wordnet", "status", "--download"],
                                  ["wordnet", "status", "--download", "--debug"]])
def test_debug_shows_the_traceback(argv):
    with pytest.raises(ValueError, match="conflicting actions"):
        main(argv)


def test_a_bug_keeps_its_traceback(monkeypatch):
    """A built-in error raised inside a library hrvlm calls is not the user's: it propagates."""
    import hrvlm.hierarchy.wordnet as wordnet

    monkeypatch.setattr(wordnet, "locate", lambda: {}["boom"])  # KeyError raised here, in the test's code
    with pytest.raises(KeyError, match="boom"):
        main(["wordnet", "status"])


# ------------------------------------------------------------------ issue 24: one line for every bad input
@pytest.fixture
def cpu_only(monkeypatch):
    """This machine as a CPU-only one (also on a GPU machine): no CUDA device, no MPS."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


@pytest.fixture
def read_only(monkeypatch):
    """Make a folder read-only.  root ignores permission bits, so under root ``os.access`` answers as it
    would for the folder's owner without root's override (what a user of a shared read-only cache sees)."""
    def make(path: Path) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o555)
        return path

    if os.geteuid() == 0:
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: real(p, mode, **kw) and not (
            mode & os.W_OK and not os.stat(p).st_mode & 0o200))
    yield make


@pytest.mark.parametrize("device", ["cuda", "cuda:7", "mps", "nosuch", "meta"])
@pytest.mark.parametrize("verb", ["train", "eval"])
def test_an_absent_device_is_one_line_before_any_folder(verb, device, cpu_only, tmp_path, capsys, monkeypatch):
    import hrvlm.models.clip

    monkeypatch.setattr(hrvlm.models.clip, "load_clip", lambda *a, **k: pytest.fail("the model loaded"))
    out = tmp_path / "run"
    argv = (["train", "--method", "tecoa", "--profile", "smoke", "--out", str(out)] if verb == "train" else
            ["eval", "--datasets", "mini-heldout", "--store", str(out / "r.jsonl")]) + ["--device", device]
    assert main(argv) == 2
    _one_error_line(capsys.readouterr().err, verb, rf"device '{device}'|unknown device '{device}'")
    assert not out.exists()


def test_a_huge_batch_size_leaves_no_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--method", "tecoa", "--profile", "smoke", "--batch-size", "1000000000", "--out",
                 str(out)]) == 2
    _one_error_line(capsys.readouterr().err, "train", "exceeds the")
    assert not out.exists()


def test_train_eps_advice_is_accepted_by_train(capsys):
    """The advice of `train --eps 1e9` is something train's --eps reads, and reads as the same ε."""
    import re

    from hrvlm.profiles import get_profile
    from hrvlm.training.train import config_from_profile

    assert main(["train", "--method", "tecoa", "--profile", "smoke", "--eps", "1e9"]) == 2
    advised = re.findall(r"--eps (\S+)", capsys.readouterr().err)[1:]
    assert advised == ["1", "4/255"]
    unit = get_profile("smoke").eps_unit
    for text in advised:
        config = config_from_profile("tecoa", "smoke", eps=read_eps(text).multiple(unit))
        assert get_profile("smoke").eps(config.eps) == pytest.approx(read_eps(text).pixels(unit), rel=1e-12)


def test_eps_means_one_thing_in_every_verb():
    """A bare number counts ε units (the profile's, else 1/255); a fraction is explicit; `eval --eps 1` is
    never 255/255."""
    from hrvlm.evaluation.evaluate import eps_unit_for

    assert eps_unit_for(None, {}) == (1 / 255, "the paper's unit, with no --profile")
    assert eps_unit_for(None, {"profile": "smoke"})[0] == eps_unit_for("smoke", {})[0] == 3 / 255
    assert read_eps("1").pixels(eps_unit_for(None, {})[0]) == 1 / 255
    assert read_eps("1").pixels(3 / 255) == 3 / 255 and read_eps("2/255").pixels(3 / 255) == 2 / 255
    assert read_eps("2/255").multiple(3 / 255) == pytest.approx(2 / 3) and read_eps("2").multiple(3 / 255) == 2
    from hrvlm.benchmarks import attacks, step

    for bench in (attacks, step):  # the benches' unit is 1/255
        assert [bench.build_parser().parse_args(["--eps", t]).eps for t in ("2", "2/255")] == [2 / 255] * 2
    with pytest.raises(argparse.ArgumentTypeError, match=r"--eps 300 = 300 × 1/255 .* exceeds 1"):
        eps_argument()("300")
    for verb in ("train", "eval"):
        text = subprocess.run([sys.executable, "-m", "hrvlm.cli", verb, "--help"], capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "2000"}).stdout
        assert "multiple of the" in text and "2/255" in text, text


def test_eval_n_above_a_set_is_a_note_and_the_records_say_the_true_n(tmp_path, capsys):
    store = tmp_path / "r.jsonl"
    assert main(["eval", "--model", "hrvlm-tiny-cnn", "--pretrained", "mini-smoke", "--profile", "smoke",
                 "--datasets", "mini-heldout", "--attack", "none", "--n", "100000", "--store", str(store)]) == 0
    (record,) = RecordStore(store).records()
    assert record["n"] == record["dataset_size"] < 100000
    assert (f"note: --n 100000 exceeds the {record['dataset_size']} images of mini-heldout/test: all "
            f"{record['n']} were evaluated") in capsys.readouterr().out


def test_train_help_lists_the_methods_and_the_eval_hint_is_shell_quoted(tmp_path, capsys):
    import shlex

    from hrvlm.methods import METHODS

    help_text = subprocess.run([sys.executable, "-m", "hrvlm.cli", "train", "--help"], capture_output=True,
                               text=True, env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "2000"}).stdout
    assert ", ".join(sorted(METHODS)) in help_text
    out = tmp_path / "a run's folder"  # clip trains nothing: the run finishes at once
    assert main(["train", "--method", "clip", "--profile", "smoke", "--pretrained", "random-init", "--out",
                 str(out), "--no-progress"]) == 0
    hint = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("evaluate: "))
    words = shlex.split(hint.removeprefix("evaluate: "))
    assert words[:4] == ["hrvlm", "eval", "--pretrained", str(out)] and "--datasets" in words


def test_the_no_run_error_is_short(tmp_cache, capsys):
    for i in range(40):
        folder = tmp_cache / "runs" / f"tecoa-smoke-s{i}-{i:010d}"
        folder.mkdir(parents=True)
        (folder / "run.json").write_text("{}")
    assert main(["export", "tecoa-smoke-s1-000000001x", str(tmp_cache / "x.safetensors")]) == 2
    line = capsys.readouterr().err.strip()
    _one_error_line(line, "export", r"40 finished run\(s\) there, listed one per line by `ls .*`; closest: "
                                    r"tecoa-smoke-s1-0000000001")
    assert line.count("tecoa-smoke-s") == 1 + 3, "the name asked for and three close ones, not all 40"


def test_cache_variable_empty_or_a_file_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HRVLM_CACHE", "")
    assert main(["eval", "--datasets", "mini-heldout"]) == 2
    _one_error_line(capsys.readouterr().err, "eval", "HRVLM_CACHE is set but empty: unset it")
    assert not any(tmp_path.iterdir())
    monkeypatch.setenv("HRVLM_CACHE", str(_a_file(tmp_path)))
    assert main(["train", "--method", "tecoa", "--profile", "smoke"]) == 2
    _one_error_line(capsys.readouterr().err, "train", "a-file is a file, not a folder; set HRVLM_CACHE to a writable")


def test_read_only_places_fail_before_work_with_a_hint(tmp_path, read_only, capsys, monkeypatch):
    import hrvlm.models.clip

    monkeypatch.setattr(hrvlm.models.clip.PixelCLIP, "encode_image", lambda *a, **k: pytest.fail("work started"))
    # a read-only default records store: the hint names --store
    cache = tmp_path / "cache"
    monkeypatch.setenv("HRVLM_CACHE", str(cache))
    read_only(cache / "records")
    assert main(["eval", "--datasets", "mini-heldout", "--attack", "none"]) == 2
    _one_error_line(capsys.readouterr().err, "eval", r"records store folder .*\(read-only\); give .*--store FILE")
    # a read-only cache: train fails before its run folder exists
    read_only(cache / "runs")
    assert main(["train", "--method", "tecoa", "--profile", "smoke", "--pretrained", "random-init"]) == 2
    _one_error_line(capsys.readouterr().err, "train", r"run folder .*\(read-only\); choose another --out")
    assert not any((cache / "runs").iterdir())
    # exporting into a read-only folder, drawing into one
    shut = read_only(tmp_path / "shut")
    assert main(["export", "nosuchrun", str(shut / "x.safetensors")]) == 2
    _one_error_line(capsys.readouterr().err, "export", r"export folder .*\(read-only\)")
    assert main(["hierarchy", "draw", "mini-heldout", "--out", str(shut / "x.png")]) == 2
    _one_error_line(capsys.readouterr().err, "hierarchy", r"\(read-only\); give a file in a writable folder")
    assert main(["data", "fetch", "cifar10", "--root", str(shut)]) == 2
    _one_error_line(capsys.readouterr().err, "data", r"data root .*\(read-only\)")


# ------------------------------------------------------------------ issue 24: archives extract inside the target only
def _tar(path: Path, members: list[tuple[str, str, str]]) -> Path:
    """A .tar.gz of (name, kind, payload) members: kind file (payload = text), symlink or hardlink (payload = target)."""
    import io
    import tarfile

    with tarfile.open(path, "w:gz") as tar:
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                data = payload.encode()
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                info.type, info.linkname = (tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE), payload
                tar.addfile(info)
    return path


def _zip(path: Path, members: list[tuple[str, str]], symlink: str | None = None) -> Path:
    import stat
    import zipfile

    with zipfile.ZipFile(path, "w") as zf:
        for name, text in members:
            zf.writestr(zipfile.ZipInfo(name), text)  # ZipInfo keeps the name as given (writestr(str) would too)
        if symlink is not None:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/tmp")
    return path


def _crafted(tmp_path: Path) -> dict:
    outside = tmp_path / "outside"
    marker = str(outside / "marker")
    return {
        "tar-absolute": (_tar(tmp_path / "abs.tar.gz", [("ok.txt", "file", "x"), (marker, "file", "pwned")]),
                         "absolute path"),
        "tar-dotdot": (_tar(tmp_path / "dd.tar.gz", [("a/../../outside/marker", "file", "pwned")]), "'..'"),
        "tar-symlink-out": (_tar(tmp_path / "sl.tar.gz", [("link", "symlink", str(outside)),
                                                          ("link/marker", "file", "pwned")]), "symlink"),
        "tar-symlink-relative": (_tar(tmp_path / "sr.tar.gz", [("link", "symlink", "../outside"),
                                                               ("link/marker", "file", "pwned")]), "symlink"),
        "tar-hardlink-out": (_tar(tmp_path / "hl.tar.gz", [("h", "hardlink", marker)]), "hard link"),
        "zip-absolute": (_zip(tmp_path / "abs.zip", [(marker, "pwned")]), "absolute path"),
        "zip-dotdot": (_zip(tmp_path / "dd.zip", [("../outside/marker", "pwned")]), "'..'"),
        "zip-symlink": (_zip(tmp_path / "sl.zip", [("ok.txt", "x")], symlink="link"), "symlink"),
    }


CRAFTED = ["tar-absolute", "tar-dotdot", "tar-symlink-out", "tar-symlink-relative", "tar-hardlink-out",
           "zip-absolute", "zip-dotdot", "zip-symlink"]


@pytest.mark.parametrize("case", CRAFTED)
def test_a_crafted_archive_writes_nothing_outside_the_target(case, tmp_path):
    from torchvision.datasets.utils import extract_archive

    from hrvlm.data.archives import UnsafeArchive, safe_extract, safe_extractors

    archive, message = _crafted(tmp_path)[case]
    (tmp_path / "outside").mkdir()
    target = tmp_path / "root"
    with pytest.raises(UnsafeArchive, match=message):
        safe_extract(archive, target)
    with safe_extractors(), pytest.raises(UnsafeArchive, match=message):  # torchvision's own extraction path
        extract_archive(str(archive), str(target))
    assert not (tmp_path / "outside" / "marker").exists()
    assert not any(target.iterdir()), "the archive was refused before anything was written"


def test_fetch_refuses_a_crafted_download_in_one_line(tmp_path, monkeypatch, capsys):
    """`hrvlm data fetch` with the download replaced by a crafted archive (no network): refused, nothing outside."""
    import shutil

    import torchvision.datasets.utils as tv

    archive, _ = _crafted(tmp_path)["tar-dotdot"]
    (tmp_path / "outside").mkdir()

    def download(url, root, filename=None, md5=None, **kw):
        shutil.copy(archive, Path(root) / (filename or os.path.basename(url)))

    monkeypatch.setattr(tv, "download_url", download)
    assert main(["data", "fetch", "fgvc_aircraft", "--root", str(tmp_path / "root")]) == 2
    _one_error_line(capsys.readouterr().err, "data", "climbs out of the target with '..'")
    assert not (tmp_path / "outside" / "marker").exists()


def test_a_plain_archive_extracts_and_downloads_are_checked(tmp_path):
    from torchvision.datasets.utils import extract_archive

    from hrvlm.data.archives import safe_extract, safe_extractors
    from hrvlm.data.real import REAL, TORCHVISION_MD5

    archive = _tar(tmp_path / "ok.tar.gz", [("d/a.txt", "file", "a"), ("d/l", "symlink", "a.txt"),
                                            ("d/h", "hardlink", "d/a.txt")])
    out = safe_extract(archive, tmp_path / "root")
    assert (out / "d" / "a.txt").read_text() == "a" and (out / "d" / "l").read_text() == "a"
    with safe_extractors():
        extract_archive(str(_zip(tmp_path / "ok.zip", [("z/b.txt", "b")])), str(tmp_path / "root"))
    assert (tmp_path / "root" / "z" / "b.txt").read_text() == "b"
    # every download is verified: an md5 of hrvlm's own (https) or the one torchvision pins, else manual
    for info in REAL.values():
        if info.archive is not None:
            assert info.archive[0].startswith("https://") and len(info.archive[1]) == 32
        assert info.checksum == "manual download" if info.fetch_note else info.checksum
    assert REAL["cifar10"].checksum == TORCHVISION_MD5 and REAL["fgvc_aircraft"].archive is not None


# ------------------------------------------------------------------ issue 24: export says what open_clip builds
def test_export_load_line_is_what_a_fresh_process_needs(tmp_path):
    """Plain open_clip cannot build hrvlm-tiny-cnn (its tower is hrvlm code); the printed line can."""
    from hrvlm.export import export
    from hrvlm.training.train import config_from_profile, train

    run = train(config_from_profile("clip", "smoke", pretrained="random-init"), tmp_path / "run", progress=False)
    out = export(run, tmp_path / "robust.safetensors")  # a cosine head: nothing to drop, nothing measured
    sidecar = json.loads(out.with_name(out.name + ".json").read_text())
    assert not sidecar["head_dropped"] and sidecar["cosine_top1_agreement"] is None
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    plain = subprocess.run([sys.executable, "-c", "import open_clip; open_clip.create_model_and_transforms("
                            "'hrvlm-tiny-cnn')"], capture_output=True, text=True, env=env)
    assert plain.returncode != 0 and "hrvlm-tiny-cnn" in plain.stderr
    assert sidecar["load"].startswith("import hrvlm.models.clip; hrvlm.models.clip.register_configs(); ")
    loaded = subprocess.run([sys.executable, "-c", f"import open_clip; {sidecar['load']}"], capture_output=True,
                            text=True, env=env)
    assert loaded.returncode == 0, loaded.stderr


def test_exporting_a_poincare_head_needs_drop_head_and_measures_agreement(tmp_path, capsys):
    from hrvlm.export import export
    from hrvlm.training.train import config_from_profile, train

    run = train(config_from_profile("hrvlm", "smoke", pretrained="random-init", steps=1, batch_size=8),
                tmp_path / "run", progress=False)
    out = tmp_path / "robust.safetensors"
    assert main(["export", str(run), str(out)]) == 2
    _one_error_line(capsys.readouterr().err, "export", "'poincare' head, which plain open_clip does not have .* "
                                                       "pass --drop-head")
    assert not out.exists()
    assert main(["export", str(run), str(out), "--drop-head", "--agreement-n", "16"]) == 0
    printed = capsys.readouterr().out
    agreement = json.loads(out.with_name(out.name + ".json").read_text())["cosine_top1_agreement"]
    assert agreement["n"] == 16 and 0 <= agreement["agree"] <= 16 and agreement["dataset"] == "mini-finetune"
    assert f"agree with it on {agreement['agree']} of 16 top-1 decisions" in printed
    with pytest.raises(ValueError, match="agreement_n must be"):
        export(run, out, drop_head=True, agreement_n=-1)


def test_a_dropped_head_without_its_data_says_how_to_skip_the_measurement(tmp_path):
    from hrvlm.export import head_agreement

    record = {"config": {"dataset": "tinyimagenet", "dataset_options": {}}, "model": "hrvlm-tiny",
              "path": str(tmp_path), "head": {"kind": "poincare"}}
    with pytest.raises(DatasetMissing, match=r"hrvlm data fetch tinyimagenet .* pass --agreement-n 0\.$"):
        head_agreement(record, 8, root=str(tmp_path))


# ---------------------------------------------------------------- stale, mislabelled or forged results (issue 24)
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished run folder of method ``clip`` (nothing to train: seconds) that starts from a weights
    file, and the ``hrvlm train`` arguments that made it."""
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("finished")
    torch.manual_seed(0)
    model, _, _ = load_clip("hrvlm-tiny-cnn")
    save_file({k: v.contiguous() for k, v in model.clip.state_dict().items()}, str(root / "start.safetensors"))
    argv = ["train", "--method", "clip", "--profile", "smoke", "--pretrained", "W", "--out", "RUN", "--no-progress"]
    assert main(_run_args(argv, root, root / "run")) == 0
    return root, argv


def _run_args(argv: list[str], root: Path, run: Path) -> list[str]:
    return [a.replace("RUN", str(run)).replace("W", str(root / "start.safetensors")) if a in ("RUN", "W") else a
            for a in argv]


def _edit_record(edit, resign: bool = False):
    def tamper(run: Path) -> None:
        import json

        from hrvlm.core.storage import content_checksum

        record = edit(json.loads((run / "run.json").read_text()))
        if resign:  # a sender who recomputes the checksum after the edit
            record["checksum"] = content_checksum(record)
        (run / "run.json").write_text(json.dumps(record))
    return tamper


def _truncate_weights(run: Path) -> None:
    data = (run / "model.safetensors").read_bytes()
    (run / "model.safetensors").write_bytes(data[: len(data) // 2])


def _other_start_weights(run: Path) -> None:
    from safetensors.torch import load_file, save_file

    path = run.parent / "start.safetensors"
    state = load_file(str(path))
    save_file({k: v + 1 if v.is_floating_point() else v for k, v in state.items()}, str(path))


TRAIN = ["train", "--method", "clip", "--profile", "smoke", "--pretrained", "W", "--no-progress", "--out", "RUN"]
EVAL = ["eval", "--pretrained", "RUN", "--datasets", "mini-heldout", "--profile", "smoke", "--attack", "none"]
# (id, what is done to a copy of the finished run first, argv, message regex)
RUNS = [
    ("finished-run-other-method", None, ["train", "--method", "tecoa", *TRAIN[3:]],
     r"holds a finished run of another configuration \(differs in \['method'"),
    ("finished-run-other-lr", None, [*TRAIN, "--lr", "0.5"], r"another configuration \(differs in \['lr'\]\)"),
    ("finished-run-other-start-weights", _other_start_weights, TRAIN, r"differs in \['start_weights'\]"),
    ("eval-method-not-the-runs", None, [*EVAL, "--method", "hrvlm"], "was trained with 'clip'; omit --method"),
    ("eval-method-unknown", None, [*EVAL, "--method", "nosuch"], "'nosuch' is not a registered method"),
    ("run-json-edited", _edit_record(lambda r: {**r, "method": {"name": "hrvlm"}}), EVAL,
     "run.json has no valid checksum .* delete the run folder"),
    ("run-json-edited-train", _edit_record(lambda r: {**r, "steps": 9}), TRAIN, "run.json has no valid checksum"),
    ("run-json-invalid", lambda run: (run / "run.json").write_text("{"), EVAL, "run.json is not valid JSON"),
    ("run-json-binary", lambda run: (run / "run.json").write_bytes(bytes(range(256))), EVAL,
     "run.json is not valid JSON"),
    ("run-json-empty-object", lambda run: (run / "run.json").write_text("{}"), EVAL, "run.json has no valid checksum"),
    ("run-json-resigned-empty", _edit_record(lambda r: {}, resign=True), EVAL, r"run.json lacks \['model', 'method'"),
    ("run-json-no-sha256-truncated", lambda run: (_edit_record(lambda r: {k: v for k, v in r.items() if k != "sha256"})(run),
                                                  _truncate_weights(run)), EVAL, "run.json has no valid checksum"),
    ("run-json-resigned-no-sha256", _edit_record(lambda r: {k: v for k, v in r.items() if k != "sha256"}, resign=True),
     EVAL, r"run.json lacks \['sha256'\]"),
    ("run-weights-truncated", _truncate_weights, EVAL, "model.safetensors is missing or does not match its recorded sha256"),
]


@pytest.mark.parametrize("tamper, argv, message", [row[1:] for row in RUNS], ids=[row[0] for row in RUNS])
def test_a_run_is_what_its_identity_and_verified_record_say(finished_run, tamper, argv, message, tmp_path, capsys,
                                                            monkeypatch):
    import shutil

    import hrvlm.models.clip

    root, _ = finished_run
    shutil.copy(root / "start.safetensors", tmp_path)
    shutil.copytree(root / "run", tmp_path / "run")
    if tamper is not None:
        tamper(tmp_path / "run")
    monkeypatch.setattr(hrvlm.models.clip.PixelCLIP, "encode_image", lambda *a, **k: pytest.fail("work started"))
    capsys.readouterr()
    assert main(_run_args(argv, tmp_path, tmp_path / "run")) == 2
    _one_error_line(capsys.readouterr().err, argv[0], message)


def test_other_starting_weights_under_the_same_name_are_another_run(finished_run, tmp_path, tmp_cache):
    """Overwriting the --pretrained file and re-running the command trains anew (the run is named by the
    weights' digest, not their path)."""
    import shutil

    from hrvlm.training import train as tr

    root, _ = finished_run
    shutil.copy(root / "start.safetensors", tmp_path)
    config = tr.config_from_profile("clip", "smoke", pretrained=str(tmp_path / "start.safetensors"))
    first = tr.train(config, progress=False)
    assert tr.train(config, progress=False) == first  # the same bytes: the finished run
    _other_start_weights(tmp_path / "run")
    second = tr.train(config, progress=False)
    assert second != first and second.parent == first.parent
    from hrvlm.models.runs import read_record

    assert read_record(second)["config"]["start_weights"] != read_record(first)["config"]["start_weights"]


def test_leftovers_of_a_kill_are_removed_at_the_next_start(finished_run, tmp_path, capsys):
    """A temporary of an atomic write killed before its rename, and a finished run's checkpoint (a kill
    between the record and its removal), are removed when the run is opened again."""
    import shutil

    root, argv = finished_run
    shutil.copy(root / "start.safetensors", tmp_path)
    run = tmp_path / "run"
    shutil.copytree(root / "run", run)
    for name in (".model.safetensors.k1ll3d.tmp", "checkpoint.pt", "checkpoint.json"):
        (run / name).write_bytes(b"x" * 1000)
    assert main(_run_args(argv, tmp_path, run)) == 0
    assert sorted(p.name for p in run.iterdir()) == [".lock", "config.json", "model.safetensors", "run.json"]


def test_files_written_honour_the_umask(finished_run, tmp_path):
    from hrvlm.core.storage import atomic_write_bytes

    root, _ = finished_run
    assert all((root / "run" / name).stat().st_mode & 0o777 == 0o644 for name in ("run.json", "model.safetensors"))
    old = os.umask(0o027)
    try:
        assert atomic_write_bytes(tmp_path / "x.bin", b"x").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)


def test_eval_never_prints_a_forged_record(finished_run, tmp_path, capsys):
    """A stored record whose checksum was deleted and whose accuracy was edited is not a result: eval
    warns, computes the chunk again and prints the true number."""
    import json

    root, _ = finished_run
    store = tmp_path / "r.jsonl"
    argv = ["eval", "--model", "hrvlm-tiny-cnn", "--pretrained", str(root / "start.safetensors"), "--datasets",
            "mini-heldout", "--profile", "smoke", "--attack", "none", "--n", "8", "--store", str(store)]
    assert main(argv) == 0
    true = json.loads(store.read_text())["clean_acc"]
    forged = {k: v for k, v in json.loads(store.read_text()).items() if k != "checksum"}
    forged["clean_acc"] = 0.875 if true != 0.875 else 0.125
    store.write_text(json.dumps(forged) + "\n")
    capsys.readouterr()
    with pytest.warns(UserWarning, match="has no checksum"):
        assert main(argv) == 0
    out = capsys.readouterr().out
    assert str(forged["clean_acc"]) not in out.split("records:")[0]  # the printed table holds the true number
    assert [json.loads(line).get("clean_acc") for line in store.read_text().splitlines()] == [forged["clean_acc"], true]


# ---------------------------------------------------------------- security: code from a received file (issue 24)
class _Payload:
    """Unpickling this creates the marker file: what a crafted checkpoint would run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _crafted_checkpoint(folder: Path, marker: Path) -> None:
    import hashlib
    import io
    import json

    buf = io.BytesIO()
    torch.save({"step": 1, "payload": _Payload(marker)}, buf)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "checkpoint.pt").write_bytes(buf.getvalue())  # with a matching sha256: the sender writes it too
    (folder / "checkpoint.json").write_text(json.dumps({"step": 1, "sha256": hashlib.sha256(buf.getvalue()).hexdigest()}))


def test_a_crafted_checkpoint_runs_no_code(tmp_path):
    from hrvlm.training.checkpoints import load_checkpoint

    marker = tmp_path / "pwned"
    _crafted_checkpoint(tmp_path / "pretraining", marker)
    with pytest.warns(UserWarning, match="holds objects other than tensors and plain data"):
        assert load_checkpoint(tmp_path / "pretraining") is None
    assert not marker.exists()


def test_resuming_a_shared_run_with_a_crafted_checkpoint_runs_no_code(tmp_path, capsys):
    """An unfinished run folder received from someone: its checkpoint is refused, training starts over."""
    import dataclasses
    import json

    from hrvlm.training import train as tr

    marker = tmp_path / "pwned"
    config = tr.config_from_profile("tecoa", "smoke", pretrained=tr.RANDOM_INIT, steps=1, batch_size=8)
    run = tmp_path / "run"
    _crafted_checkpoint(run, marker)
    (run / "config.json").write_text(json.dumps(dataclasses.asdict(config.identified())))
    with pytest.warns(UserWarning, match="holds objects other than tensors"):
        tr.train(config, run, progress=False)
    assert not marker.exists() and (run / "run.json").is_file()


def test_the_provenance_table_lists_verified_runs_only(finished_run, tmp_cache):
    import shutil

    from hrvlm.book.provenance import profile_runs
    from hrvlm.models.runs import runs_root

    root, _ = finished_run
    shutil.copytree(root / "run", runs_root() / "good")
    shutil.copytree(root / "run", runs_root() / "edited")
    _edit_record(lambda r: {**r, "steps": 100})(runs_root() / "edited")
    with pytest.warns(UserWarning, match=r"runs/edited: run.json has no valid checksum.*; not listed"):
        assert [Path(r["path"]).name for r in profile_runs("smoke")] == ["good"]
