"""A chapter's independent variants in two worker processes: the same runs and records as one by one."""
import json
import os
import shutil
import time
from pathlib import Path

import pytest

from hrvlm.book import experiments as ex
from hrvlm.book import workers
from hrvlm.models import runs
from hrvlm.models.weights import RANDOM_INIT

TINY = {"pretrained": RANDOM_INIT, "steps": 2, "batch_size": 8}  # runs in seconds, no pretrained weights


def _pid_and_threads(item):
    import torch

    return item, os.getpid(), torch.get_num_threads()


def test_items_are_mapped_in_order_in_other_processes_with_one_thread():
    here = workers.map_in_workers(_pid_and_threads, range(4), 1)
    assert [r[0] for r in here] == [0, 1, 2, 3] and {r[1] for r in here} == {os.getpid()} and {r[2] for r in here} == {1}
    there = workers.map_in_workers(_pid_and_threads, range(4), 2)
    assert [r[0] for r in there] == [0, 1, 2, 3]
    assert os.getpid() not in {r[1] for r in there} and {r[2] for r in there} == {1}


def test_the_worker_count_comes_from_the_call_the_environment_or_the_profile(monkeypatch):
    monkeypatch.delenv(workers.WORKERS_ENV, raising=False)
    assert workers.worker_count("mini") == 2 and workers.worker_count("full") == 1
    assert workers.worker_count("full", 3) == 3
    monkeypatch.setenv(workers.WORKERS_ENV, "1")
    assert workers.worker_count("mini") == 1
    monkeypatch.setenv(workers.WORKERS_ENV, "two")
    with pytest.raises(ValueError, match=r"\$HRVLM_WORKERS='two': give a whole number of processes >= 1"):
        workers.worker_count("mini")
    with pytest.raises(ValueError, match="workers must be an integer >= 1, got 0"):
        workers.worker_count("mini", 0)


def test_parallel_and_sequential_builds_give_identical_runs_and_records(tmp_cache, tmp_path):
    variants = [ex.Variant.of("TeCoA", "tecoa", {"steps": 1}, paper="tecoa", loop=TINY),
                ex.Variant.of("FARE", "fare", {"steps": 1}, paper="fare", loop=TINY)]
    pgd = ex.attack("pgd", "smoke", 2, steps=2)
    outcome = {}
    for count in (1, 2):
        trained = ex.train_runs(variants, "smoke", seeds=[0, 1], workers=count)
        assert list(trained) == variants and all(list(by_seed) == [0, 1] for by_seed in trained.values())
        store = tmp_path / f"records-{count}.jsonl"
        records = ex.evaluate_runs(trained, "smoke", [pgd], ["mini-heldout"], n=8, store=store, progress=False,
                                   workers=count)
        outcome[count] = (
            {(v.label, seed): json.loads((run / runs.RECORD).read_text())["weights_digest"]
             for v, by_seed in trained.items() for seed, run in by_seed.items()},
            {v.label: [(r["key"], r["seed"], r["clean_correct"], r["robust_correct"]) for r in rs]
             for v, rs in records.items()})
        for by_seed in trained.values():  # the second round trains again, in two processes
            for run in by_seed.values():
                shutil.rmtree(run)
    assert outcome[1] == outcome[2]
    assert len(set(outcome[1][0].values())) == 4  # four different runs (two variants, two seeds), not one twice


def test_learning_curves_train_each_budget_and_say_where_the_ranking_settles(tmp_cache):
    from hrvlm.book import findings

    loop = {"pretrained": RANDOM_INIT, "batch_size": 8}  # the budget sets the steps
    variants = (ex.Variant.of("TeCoA", "tecoa", {"steps": 1}, paper="tecoa", loop=loop),
                ex.Variant.of("FARE", "fare", {"steps": 1}, paper="fare", loop=loop))
    setting = ex.Setting("smoke", variants, ("mini-finetune", "mini-heldout", "mini-colours"), 8, None)
    curves = ex.learning_curves(setting, [2, 1], ex.attack("pgd", "smoke", 2, steps=1), n=8)
    assert sorted(curves["steps"].unique()) == [1, 2]
    assert set(curves["dataset"]) == {"mini-finetune", ex.ZERO_SHOT} and len(curves) == 2 * 2 * 2
    assert curves["robust"].between(0, 100).all() and (curves["robust"] <= curves["clean"] + 1e-9).all()
    for steps in (1, 2):  # each budget is its own run, of that many steps
        run = ex.train_run(variants[0], "smoke", steps=steps)
        assert json.loads((run / runs.RECORD).read_text())["steps"] == steps
    assert findings.learning_curves(curves, 2).startswith("The ranking of the rows by robust accuracy")
    with pytest.raises(ValueError, match="fix their own steps"):
        ex.learning_curves(ex.Setting("smoke", (ex.Variant.of("T", "tecoa", {}, loop=TINY),), ("mini-finetune",), 8,
                                      None), [1], None)


def test_the_settled_budget_is_where_the_ranking_stops_moving():
    import pandas as pd

    def curves(order_by_budget):
        rows = [{"variant": v, "steps": b, "dataset": ex.ZERO_SHOT, "robust": 10.0 * (len(order) - i), "clean": 50.0,
                 "n": 100} for b, order in order_by_budget.items() for i, v in enumerate(order)]
        return pd.DataFrame(rows)

    assert ex.settled_budget(curves({10: "AB", 20: "BA", 40: "BA", 80: "BA"})) == 20
    assert ex.settled_budget(curves({10: "AB", 20: "AB"})) == 10
    assert ex.settled_budget(curves({10: "AB", 20: "BA"})) == 20  # moving at the last budget
    assert ex.settled_budget(curves({10: "AB"})) is None
    from hrvlm.book import findings

    assert "still moves at the largest budget" in findings.learning_curves(curves({10: "AB", 20: "BA"}), 10)
    assert "from **20 steps** on" in findings.learning_curves(curves({10: "AB", 20: "BA", 40: "BA"}), 10)
    assert "before the ranking settles" in findings.learning_curves(curves({10: "AB", 20: "BA", 40: "BA"}), 10)
    assert "inside that settled range" in findings.learning_curves(curves({10: "AB", 20: "BA", 40: "BA"}), 20)


def test_the_processes_are_kept_between_calls_and_renewed_under_another_environment(monkeypatch):
    first = {r[1] for r in workers.map_in_workers(_pid_and_threads, range(6), 2)}
    again = {r[1] for r in workers.map_in_workers(_pid_and_threads, range(6), 2)}
    assert first & again  # the same processes answered
    monkeypatch.setenv("HRVLM_TEST_WORKERS_MARK", "1")  # e.g. another HRVLM_CACHE: they read it at their start
    renewed = {r[1] for r in workers.map_in_workers(_pid_and_threads, range(6), 2)}
    assert not renewed & (first | again)
    assert workers.map_in_workers(_pid_and_threads, [7], 2, done=lambda item: None)[0][1] == os.getpid()
    # one process: fn finds cached work itself, so done is not asked (it would repeat fn's own lookup)
    assert workers.map_in_workers(_pid_and_threads, [1, 2], 1, done=lambda item: pytest.fail("asked"))[0][0] == 1


def test_cached_work_is_answered_here_without_a_process_or_loading_weights(tmp_cache, tmp_path, monkeypatch):
    from hrvlm.evaluation.evaluate import Scored
    from hrvlm.models.clip import load_clip

    variants = [ex.Variant.of("TeCoA", "tecoa", {"steps": 1}, paper="tecoa", loop=TINY),
                ex.Variant.of("FARE", "fare", {"steps": 1}, paper="fare", loop=TINY)]
    pgd, store = ex.attack("pgd", "smoke", 2, steps=2), tmp_path / "records.jsonl"
    assert ex._finished_job((variants[0], 0), "smoke", None) is None
    trained = ex.train_runs(variants, "smoke", seeds=[0], workers=2)
    run = trained[variants[0]][0]
    assert ex._finished_job((variants[0], 0), "smoke", None) == run
    assert ex.evaluate_run(run, "smoke", [pgd], ["mini-heldout"], n=8, store=store, stored_only=True) is None
    records = ex.evaluate_runs(trained, "smoke", [pgd], ["mini-heldout"], n=8, store=store, progress=False, workers=2)
    record = runs.read_record(run)
    assert Scored.of_run(record) == Scored.of(load_clip(record["model"], run)[0])

    def refuse(*args, **kwargs):
        raise AssertionError("cached work started a process or loaded weights")

    monkeypatch.setattr(workers, "_pool", refuse)
    monkeypatch.setattr("hrvlm.models.clip.load_clip", refuse)
    monkeypatch.setattr("hrvlm.training.train._train", refuse)
    assert ex.train_runs(variants, "smoke", seeds=[0], workers=2) == trained
    assert ex.evaluate_runs(trained, "smoke", [pgd], ["mini-heldout"], n=8, store=store, progress=False,
                            workers=2) == records
    with pytest.raises(AssertionError, match="cached work"):  # a set never evaluated is computed
        ex.evaluate_runs(trained, "smoke", [pgd], ["mini-colours"], n=8, store=store, progress=False, workers=2)


def _interrupted_or_failing(item):
    import signal
    import time

    if item == "interrupt":  # what Jupyter sends a kernel's process group as it shuts the kernel down
        os.kill(os.getpid(), signal.SIGINT)
        return os.getpid()
    if item == "fail":
        raise ValueError("this job fails")
    Path(item).write_text(str(os.getpid()))
    time.sleep(300)
    return "finished"


def test_an_interrupt_reaches_the_parent_not_the_processes_and_a_failure_stops_the_other_jobs(tmp_path):
    pids = workers.map_in_workers(_interrupted_or_failing, ["interrupt", "interrupt"], 2)
    assert os.getpid() not in pids
    marker, start = tmp_path / "pid", time.monotonic()
    with pytest.raises(ValueError, match="this job fails"):
        workers.map_in_workers(_interrupted_or_failing, ["fail", str(marker)], 2)
    # the 300-s job was stopped, not waited for: its process is gone by the time the error arrives
    assert time.monotonic() - start < 150
    if marker.exists():
        pid = int(marker.read_text())
        with pytest.raises(ProcessLookupError):
            for _ in range(50):
                os.kill(pid, 0)
                time.sleep(0.1)
