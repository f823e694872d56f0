"""The table of bad inputs: what the CLI and the API are tested against, each with its expected message.

Rules (DEVELOPING.md, "Errors"): a request the user can fix fails before any expensive work with one
line that says what to do; the CLI prints it as ``hrvlm CMD: error: ...`` with exit code 2 and no
traceback (``hrvlm --debug CMD`` shows it).  Add a row here for every new check.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hrvlm import hierarchy
from hrvlm.attacks import build_attack
from hrvlm.cli import COMMANDS, main
from hrvlm.data import fabricate as fab
from hrvlm.data.real import DatasetMissing, build, fetch
from hrvlm.evaluate import build_attacks, check_attacks, check_request
from hrvlm.models import load_clip
from hrvlm.records import RecordStore

ROOT = Path(__file__).resolve().parent.parent
TREE = '{"format": "hrvlm-tree/1", "name": "t", "leaves": LEAVES, "parents": {"a": "x", "b": "x"}NAMES}'


def _tree_file(tmp_path: Path, leaves='["a", "b"]', names="", raw: bytes | None = None) -> Path:
    path = tmp_path / "tree.json"
    path.write_bytes(raw if raw is not None else TREE.replace("LEAVES", leaves).replace("NAMES", names).encode())
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
    ("eval-no-dataset", lambda c: check_request(""), ValueError, "no dataset named"),
    ("eval-unknown-dataset", lambda c: check_request("mini-heldot"), KeyError, "Did you mean"),
    ("eval-split", lambda c: check_request("mini-heldout", split="val"), ValueError, "has no split 'val'"),
    ("eval-negative-level", lambda c: check_request("mini-heldout", [-1]), ValueError, "non-negative integers"),
    ("eval-level-beyond-depth", lambda c: check_request("mini-heldout", [0, 9]), ValueError,
     r"level 9 exceeds the depth 5 .*use levels 0..5"),
    ("eval-attacked-single-class-level", lambda c: check_request(
        "mini-heldout", range(6), [build_attack("pgd", 1 / 255)]), ValueError,
     r"level 5 .* has a single class.*use levels 0..4"),
    ("eval-tree-index", lambda c: check_request("mini-heldout", [1], tree=9), ValueError, r"no tree 9.*give 0"),
    ("eval-n-zero", lambda c: check_request("mini-heldout", n=0), ValueError, "n must be a positive integer"),
    ("eval-batch-size", lambda c: check_request("mini-heldout", batch_size=0), ValueError, "batch_size must be"),
    ("eval-templates", lambda c: check_request("mini-heldout", templates="nosuch"), KeyError, "no template set"),
    ("eval-resolution", lambda c: check_request("mini-heldout", resolution="x"), ValueError, "resolution policy"),
    ("eval-store-folder", lambda c: check_request("mini-heldout", store=c.tmp), IsADirectoryError,
     "is a folder; give a file such as"),
    ("eval-mini-option", lambda c: check_request("mini-heldout", dataset_options={"profile": "nosuch"}), ValueError,
     "unknown profile 'nosuch' for mini-heldout"),
    ("eval-real-dataset-absent", lambda c: check_request("cifar10", dataset_options={"root": c.tmp}),
     DatasetMissing, "hrvlm data fetch cifar10"),
    ("eval-not-an-attack", lambda c: check_request("mini-heldout", attacks=["pgd"]), TypeError, "is not an attack"),
    ("attack-none-named", lambda c: build_attacks([], [1 / 255]), ValueError, "no attack named"),
    ("attack-no-eps", lambda c: build_attacks(["pgd"], []), ValueError, "no eps given"),
    ("attack-negative-steps", lambda c: check_attacks([build_attack("pgd", 1 / 255, steps=-5)]), ValueError,
     "need steps >= 0"),
    ("attack-zero-restarts", lambda c: check_attacks([build_attack("apgd-ce", 1 / 255, restarts=0)]), ValueError,
     "restarts >= 1"),
    # records
    ("records-store-folder", lambda c: RecordStore(c.tmp), IsADirectoryError, "is a folder"),
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
    # downloads, offline (the test's socket guard refuses the connection as an offline machine would)
    ("fetch-offline", lambda c: fetch("cifar10", c.tmp), DatasetMissing,
     r"downloading cifar10 .* from https://www.cs.toronto.edu/\S+ failed .* extract it under"),
    # fabricated data roots (hrvlm data fabricate)
    ("fabricated-marker-corrupt", lambda c: (c.tmp / fab.MARKER).write_text("{") and fab.marker(c.tmp),
     fab.FabricatedRootError, "not a readable fabrication marker"),
    ("fetch-into-fabricated", lambda c: _fabricated_marker(c.tmp) and fetch("cifar10", c.tmp), ValueError,
     "is a fabricated root .* fetch real datasets into another data root"),
    ("real-data-asked-fabricated", lambda c: build("cifar10", root=c.tmp, fabricated=True), ValueError,
     "is not a fabricated root, but the request was made for fabricated data"),
]


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
    (["data", "fabricate", "--root", "FOLDER/new", "--per-class", "0"], "--per-class must be an integer >= 1"),
    (["data", "fabricate", "--root", "FOLDER/new", "--dataset", "cifar11"], "unknown real dataset"),
    (["data", "fabricate", "--root", "BINARY"], "is a file; give a folder"),
    (["data", "fabricate", "--root", "FOLDER"], "already holds files and is not a fabricated root"),
    (["records", "verify", "FOLDER/none.jsonl"], "no records store at"),
]


def _fill(argv: list[str], tmp_path: Path) -> list[str]:
    (tmp_path / "binary.json").write_bytes(bytes(range(256)))
    return [a.replace("BINARY", str(tmp_path / "binary.json")).replace("FOLDER", str(tmp_path)) for a in argv]


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
    import hrvlm.models

    monkeypatch.setattr(hrvlm.models.PixelCLIP, "encode_image", lambda *a, **k: pytest.fail("work started"))
    assert main(_fill(argv, tmp_path)) == 2
    _one_error_line(capsys.readouterr().err, argv[0], message)


@pytest.mark.parametrize("argv", [["--debug", "wordnet", "status", "--download"],
                                  ["wordnet", "status", "--download", "--debug"]])
def test_debug_shows_the_traceback(argv):
    with pytest.raises(ValueError, match="conflicting actions"):
        main(argv)


def test_a_bug_keeps_its_traceback(monkeypatch):
    """A built-in error raised inside a library hrvlm calls is not the user's: it propagates."""
    import hrvlm.wordnet as wordnet

    monkeypatch.setattr(wordnet, "locate", lambda: {}["boom"])  # KeyError raised here, in the test's code
    with pytest.raises(KeyError, match="boom"):
        main(["wordnet", "status"])
