"""The `rehearsal` profile: `full`'s names with random-init weights, tiny sizes and fabricated datasets,
so that `full`'s code path runs on a CPU; its numbers are labelled fabricated everywhere."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hrvlm.data import fabricate, marker
from hrvlm.profiles import get_profile
from hrvlm.models.weights import RANDOM_INIT

ROOT = Path(__file__).resolve().parent.parent
# what a rehearsal may change: sizes, and where the weights and the data come from
SIZES = {"eval_n", "eval_batch_size", "train.steps", "train.batch_size", "train.warmup", "train.num_workers",
         "train.checkpoint_every", "train.checkpoint_seconds"}
METHOD_SIZES = {"steps", "text_steps"}
BOOK_SIZES = {"mini_world", "margin_attack_steps", "margin_grid", "disk_tree_depth", "disk_tree_children", "train_steps", "eval_n",
              "focus_datasets", "focus_eval_n", "autoattack_steps", "pgd_steps", "embedding_n", "curve_n",
              "ablation_datasets"}


def test_rehearsal_is_the_full_profile_with_random_init_weights_and_tiny_sizes():
    full, rehearsal = get_profile("full"), get_profile("rehearsal")
    assert rehearsal.pretrained == RANDOM_INIT and full.fabricated_root is None and rehearsal.fabricated_root
    for field in ("model", "train_dataset", "eval_datasets", "eps_unit", "pretrain", "base_options"):
        assert getattr(rehearsal, field) == getattr(full, field), field
    differs = {f"train.{k}" for k in full.train if full.train[k] != rehearsal.train.get(k)}
    differs |= {k for k in ("eval_n", "eval_batch_size") if getattr(full, k) != getattr(rehearsal, k)}
    assert set(rehearsal.train) == set(full.train) and differs <= SIZES, differs - SIZES
    assert rehearsal.train["steps"] <= 2 and rehearsal.eval_n <= 4
    assert set(rehearsal.methods) == set(full.methods)
    for name, settings in full.methods.items():
        mine = rehearsal.methods[name]
        assert {k: v for k, v in mine.items() if k not in METHOD_SIZES} == settings, name
    assert set(rehearsal.book) == set(full.book)
    assert {k for k in full.book if full.book[k] != rehearsal.book[k]} <= BOOK_SIZES


def test_random_init_is_one_set_of_weights_and_leaves_the_rng_alone():
    from hrvlm.models.clip import load_clip
    from hrvlm.models.weights import state_digest

    torch.manual_seed(1)
    state = torch.get_rng_state()
    a, _, _ = load_clip("hrvlm-tiny", RANDOM_INIT)
    assert torch.equal(torch.get_rng_state(), state)  # drawn under its own seed
    torch.manual_seed(2)
    b, _, _ = load_clip("hrvlm-tiny", RANDOM_INIT)
    c, _, _ = load_clip("hrvlm-tiny", None)  # None: whatever the global rng gives
    assert state_digest(a.clip) == state_digest(b.clip) != state_digest(c.clip)
    assert a.pretrained == RANDOM_INIT


_PROFILE_NAME_TEST = re.compile(r"""(?<![.\w])profile\s*(==|!=|\bin\b|\bnot in\b)\s*[("'\[]|MINI_PROFILES|["'](full|rehearsal|mini|smoke)["']\s*(==|!=)""")


@pytest.mark.parametrize("path", sorted((ROOT / "notebooks").glob("*.py")) + [
    ROOT / "hrvlm" / f for f in ("results/tables.py", "book/experiments.py", "book/provenance.py", "book/ablations.py",
                                 "book/findings.py")],
    ids=lambda p: p.name)
def test_no_chapter_or_table_branches_on_a_profile_name(path):
    """Chapters and the modules that label their numbers branch on profile data (its datasets, its
    fabricated root), never on its name, so `rehearsal` takes `full`'s branches."""
    code = [line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")]
    hits = [line for line in code if _PROFILE_NAME_TEST.search(line.split("  #")[0])]
    assert not hits, hits


@pytest.fixture(scope="module")
def fabricated_root(tmp_path_factory):
    return fabricate.fabricate(tmp_path_factory.mktemp("fab") / "root", per_class=1,
                               names=["cifar10", "imagenet"])


def test_fabricated_numbers_are_never_shown_as_real_ones(fabricated_root, tmp_path, clip):
    from hrvlm.book import experiments, provenance
    from hrvlm.evaluation.evaluate import EvalRequest, evaluate
    from hrvlm.evaluation.records import load_table, record_key
    from hrvlm.results.tables import compare

    model, tokenizer = clip
    store = tmp_path / "records.jsonl"
    record, = evaluate(model, tokenizer, EvalRequest("cifar10", n=4, dataset_options={"root": str(fabricated_root)}),
                       store=store, progress=False)
    assert record["fabricated"] is True and record["dataset_options"] == {"fabricated": True}
    frame = load_table(store)
    table = compare(experiments.MAIN_TABLE, frame.assign(method="clip"), "full")
    columns = table.frame.columns
    ours = columns[columns.get_level_values("kind") == "ours"]
    assert list(ours.get_level_values("column").unique()) == ["cifar10 (fabricated)"]  # never the paper's column
    assert "fabricated test data" in table.caption
    assert len(provenance.profile_records(frame, "full")) == 0
    assert len(provenance.profile_records(frame, "rehearsal")) == 1
    real = {**record, "dataset_options": {}}
    assert record_key(real) != record_key(record)  # a fabricated record never stands for a real one


def test_a_run_on_a_fabricated_root_is_labelled_and_named_apart(fabricated_root, tmp_path, tmp_cache):
    """Rehearsal training settings (decode on the device, tiny sizes) on fabricated ImageNet, with the
    tiny CLIP: the run carries the label, and its identity is not a real-data run's."""
    from hrvlm.models import runs
    from hrvlm.training.train import config_from_profile, train

    config = config_from_profile("tecoa", "rehearsal", model="hrvlm-tiny",
                                 dataset_options={"root": str(fabricated_root)})
    run = train(config, progress=False, device="cpu")
    record = runs.read_record(run)
    assert record["fabricated"] is True and record["config"]["dataset_options"]["fabricated"] is True
    assert record["steps"] == 1 and record["config"]["decode"] == "device"
    real = config_from_profile("tecoa", "rehearsal", model="hrvlm-tiny", dataset_options={"root": str(tmp_path)})
    assert real.resolved().name() != config.resolved().name()


def test_the_rehearsal_profile_fabricates_its_root_on_first_use(tmp_cache):
    options = get_profile("rehearsal").dataset_options
    root = Path(options["root"])
    assert root.is_relative_to(tmp_cache) and marker.is_fabricated(root)
    assert set(marker.read_marker(root)["datasets"]) == set(get_profile("rehearsal").eval_datasets) | {"tinyimagenet"}


@pytest.mark.slow
def test_the_rehearsal_book_runs_every_chapter(tmp_path):
    """`hrvlm book --profile rehearsal`: every chapter's full code path executes end to end, on an empty
    cache, with the two worker processes of this 2-core machine (full's one process is for its one GPU;
    the records are the same either way, tests/test_workers.py)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HRVLM_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": "1", "HRVLM_WORKERS": "2"}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "hrvlm.cli", "book", "--profile", "rehearsal",
                           "--output", str(tmp_path / "build")], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=3600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (tmp_path / "build" / "html" / "index.html").is_file()
    log = (done.stdout + done.stderr).splitlines()  # the build prints its chapter lines on stdout
    timed = [line for line in log if line.startswith("[hrvlm book]") and (" done in " in line or "whole build" in line)]
    print("".join(line + "\n" for line in timed))
    print(f"rehearsal book: {time.perf_counter() - start:.0f} s")
