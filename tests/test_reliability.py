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
from hrvlm.data.real import DatasetMissing, fetch
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
]


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

        from hrvlm.storage import content_checksum

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

    import hrvlm.models

    root, _ = finished_run
    shutil.copy(root / "start.safetensors", tmp_path)
    shutil.copytree(root / "run", tmp_path / "run")
    if tamper is not None:
        tamper(tmp_path / "run")
    monkeypatch.setattr(hrvlm.models.PixelCLIP, "encode_image", lambda *a, **k: pytest.fail("work started"))
    capsys.readouterr()
    assert main(_run_args(argv, tmp_path, tmp_path / "run")) == 2
    _one_error_line(capsys.readouterr().err, argv[0], message)


def test_other_starting_weights_under_the_same_name_are_another_run(finished_run, tmp_path, tmp_cache):
    """Overwriting the --pretrained file and re-running the command trains anew (the run is named by the
    weights' digest, not their path)."""
    import shutil

    from hrvlm import train as tr

    root, _ = finished_run
    shutil.copy(root / "start.safetensors", tmp_path)
    config = tr.config_from_profile("clip", "smoke", pretrained=str(tmp_path / "start.safetensors"))
    first = tr.train(config, progress=False)
    assert tr.train(config, progress=False) == first  # the same bytes: the finished run
    _other_start_weights(tmp_path / "run")
    second = tr.train(config, progress=False)
    assert second != first and second.parent == first.parent
    from hrvlm.runs import read_record

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
    from hrvlm.storage import atomic_write_bytes

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
    from hrvlm.checkpoints import load_checkpoint

    marker = tmp_path / "pwned"
    _crafted_checkpoint(tmp_path / "pretraining", marker)
    with pytest.warns(UserWarning, match="holds objects other than tensors and plain data"):
        assert load_checkpoint(tmp_path / "pretraining") is None
    assert not marker.exists()


def test_resuming_a_shared_run_with_a_crafted_checkpoint_runs_no_code(tmp_path, capsys):
    """An unfinished run folder received from someone: its checkpoint is refused, training starts over."""
    import dataclasses
    import json

    from hrvlm import train as tr

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

    from hrvlm.provenance import profile_runs
    from hrvlm.runs import runs_root

    root, _ = finished_run
    shutil.copytree(root / "run", runs_root() / "good")
    shutil.copytree(root / "run", runs_root() / "edited")
    _edit_record(lambda r: {**r, "steps": 100})(runs_root() / "edited")
    with pytest.warns(UserWarning, match=r"runs/edited: run.json has no valid checksum.*; not listed"):
        assert [Path(r["path"]).name for r in profile_runs("smoke")] == ["good"]
