"""The result chapters' library: variants from the forest, cached training and evaluation, records → tables."""
import json

import pytest

from hrvlm.book import experiments as ex
from hrvlm.models import runs
from hrvlm.hierarchy.trees import forest_for_dataset
from hrvlm.profiles import get_profile
from hrvlm.results.tables import AVERAGE
from hrvlm.training.train import RANDOM_INIT

TINY = {"pretrained": RANDOM_INIT, "steps": 2, "batch_size": 8}  # a run in seconds, no pretrained weights


def test_hrvlm_rows_follow_the_forest_size_read_from_the_hierarchy(monkeypatch):
    assert ex.forest_size("smoke") == len(forest_for_dataset("mini-finetune", depth=5, max_trees=5))
    monkeypatch.setattr(ex, "forest_size", lambda profile: 2)
    rows = {v.label: v for v in ex.main_variants("smoke")}
    assert list(rows) == ["CLIP", "TeCoA", "PMG-AFT", "FARE", "QT-AFT", "HRVLM (1 tree)", "HRVLM (2 trees)"]
    assert dict(rows["HRVLM (2 trees)"].settings) == {"trees": 2} and rows["HRVLM (2 trees)"].paper is None
    assert rows["HRVLM (1 tree)"].paper == "hrvlm-1tree" and "AoS" not in rows  # AoS is reported only
    monkeypatch.setattr(ex, "forest_size", lambda profile: 7)
    five = ex.main_variants("smoke")[-1]
    assert five.label == "HRVLM (5 trees)" and five.paper == "hrvlm-5trees" and dict(five.settings) == {"trees": 5}


def test_training_configuration_takes_the_book_steps_then_the_variant_loop():
    tecoa = ex.Variant.of("TeCoA", "tecoa")
    assert ex.train_config(tecoa, "mini").steps == get_profile("mini").book["train_steps"]
    assert ex.train_config(tecoa, "mini", steps=3).steps == 3
    assert ex.train_config(ex.Variant.of("t", "tecoa", loop={"steps": 5}), "mini").steps == 5
    fare = ex.train_config(ex.Variant.of("F", "fare", {"steps": 1}), "mini")
    assert fare.method_settings["steps"] == 1 and fare.method_settings["step_size"] == 0.75  # over the profile's
    with pytest.raises(ValueError, match="unknown method"):
        ex.train_config(ex.Variant.of("x", "nope"), "mini")


def test_chapter_setting_sizes_come_from_the_profile_and_unknown_rows_are_refused():
    book = get_profile("mini").book
    main, focus = ex.chapter_setting("mini"), ex.chapter_setting("mini", focus=True, methods=["CLIP", "TeCoA"])
    assert main.datasets == get_profile("mini").eval_datasets and main.n == book["eval_n"]
    assert focus.datasets == tuple(book["focus_datasets"]) and focus.n == book["focus_eval_n"]
    assert [v.label for v in focus.variants] == ["CLIP", "TeCoA"] and focus.unavailable is None
    assert "mini world" in focus.note() and "Not run" not in focus.note()
    assert f"up to {50 / book['eval_n'] ** 0.5:.1f} points" in main.precision_note()
    assert "average over the 6 sets" in main.precision_note() and "average" not in focus.precision_note()
    assert "add the spread over seeds" in main.precision_note()
    assert "images only (one seed)" in ex.chapter_setting("mini", seeds=[0]).precision_note()
    with pytest.raises(ValueError, match="not rows"):
        ex.chapter_setting("mini", methods=["AoS"])
    assert main.seeds == tuple(book["seeds"]) and len(main.seeds) >= 3 and f"{len(main.seeds)} seeds" in main.note()
    assert ex.chapter_setting("mini", seeds=[2, 0, 2]).seeds == (0, 2)
    for bad in ([], 1, [0.5], [True]):
        with pytest.raises(ValueError, match="non-empty list of integers"):
            ex.chapter_setting("mini", seeds=bad)


def test_every_seed_is_its_own_run_evaluated_with_its_own_seed_on_the_same_images(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "runs_root", lambda: tmp_path / "runs")
    variant = ex.Variant.of("TeCoA", "tecoa", {"steps": 1}, paper="tecoa", loop=TINY)
    trained = ex.train_runs([variant], "smoke", seeds=[1, 0], workers=1)
    assert list(trained[variant]) == [0, 1] and trained[variant][0] != trained[variant][1]
    assert [runs.read_record(trained[variant][s])["config"]["seed"] for s in (0, 1)] == [0, 1]
    pgd = ex.attack("pgd", "smoke", 2, steps=2)
    store = tmp_path / "records.jsonl"
    records = ex.evaluate_runs(trained, "smoke", [pgd], ["mini-heldout"], n=8, store=store, progress=False,
                               workers=1)[variant]
    assert [r["seed"] for r in records] == [0, 1] and len({r["subset_ids_hash"] for r in records}) == 1
    with pytest.raises(TypeError, match="own training seed"):
        ex.evaluate_runs(trained, "smoke", [pgd], ["mini-heldout"], n=8, store=store, seed=3)
    table = ex.accuracy_table(ex.results_frame({variant: records}), "smoke")
    assert table.loc["TeCoA", ("mini-heldout", "PGD-2 @ 2×")] == pytest.approx(
        100 * (records[0]["robust_acc"] + records[1]["robust_acc"]) / 2)


def test_full_profile_says_in_one_line_why_it_cannot_run_here(monkeypatch, tmp_path):
    monkeypatch.setenv("HRVLM_DATA", str(tmp_path))
    reason = ex.unavailable("full")
    assert reason is not None and "imagenet" in reason and "\n" not in reason
    setting = ex.chapter_setting("full")
    assert setting.unavailable == reason and ex.train_variants(setting) == {}
    assert "Not run on this machine" in setting.note()
    assert ex.unavailable("smoke") is None


def test_attackable_levels_leave_out_single_class_levels():
    tree = ex.dataset_tree("mini-finetune")
    levels = ex.attackable_levels("mini-finetune")
    assert levels == [lv for lv in range(tree.depth + 1) if tree.num_classes(lv) >= 2] and levels[0] == 0
    assert all(f"level {lv}" in ex.level_classes(["mini-finetune"]).index for lv in levels)


@pytest.fixture
def tiny_run(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "runs_root", lambda: tmp_path / "runs")
    variant = ex.Variant.of("TeCoA", "tecoa", {"steps": 1}, paper="tecoa", loop=TINY)
    return variant, ex.train_run(variant, "smoke")


def test_a_finished_run_is_reused_not_retrained(tiny_run):
    variant, run = tiny_run
    stamp = (run / runs.RECORD).stat().st_mtime_ns
    assert ex.train_run(variant, "smoke") == run and (run / runs.RECORD).stat().st_mtime_ns == stamp
    assert run.name == ex.train_config(variant, "smoke").identified().name()
    summary = ex.run_summary({variant: {0: run}})
    assert summary.loc[("TeCoA", 0), "steps"] == 2 and summary.loc[("TeCoA", 0), "run"] == run.name


def test_evaluation_goes_to_the_store_once_and_tabulates(tiny_run, tmp_path):
    variant, run = tiny_run
    store = tmp_path / "records.jsonl"
    pgd = ex.attack("pgd", "smoke", 2, steps=2)
    assert pgd.config()["eps"] == pytest.approx(2 * get_profile("smoke").eps_unit)
    records = ex.evaluate_run(run, "smoke", [pgd], ["mini-heldout", "mini-colours"], n=8, store=store, progress=False)
    assert len(records) == 2 and len(store.read_text().splitlines()) == 2
    again = ex.evaluate_run(run, "smoke", [pgd], ["mini-heldout", "mini-colours"], n=8, store=store, progress=False)
    assert [r["key"] for r in again] == [r["key"] for r in records] and len(store.read_text().splitlines()) == 2
    assert all(r["method"] == "tecoa" and r["n"] == 8 for r in records)

    frame = ex.results_frame({variant: records})
    table = ex.accuracy_table(frame, "smoke")
    assert list(table.index) == ["TeCoA"]
    assert table.loc["TeCoA", ("mini-heldout", "PGD-2 @ 2×")] == pytest.approx(100 * records[0]["robust_acc"])
    assert AVERAGE not in table.columns.get_level_values(0)  # two of six sets: no average
    assert "`mini`" in ex.templates_note(frame) and "`mini-colours`" in ex.templates_note(frame)
    both = ex.accuracy_table(frame, "smoke", sets=["mini-heldout", "mini-colours"])  # an ablation's own sets
    assert both.loc["TeCoA", (AVERAGE, "PGD-2 @ 2×")] == pytest.approx(50 * (records[0]["robust_acc"]
                                                                          + records[1]["robust_acc"]))


def test_an_ablation_study_evaluates_and_averages_over_the_sets_it_is_given(tiny_run, tmp_cache, monkeypatch):
    """The rehearsal's ablations run on two of the 15 sets (book.ablation_datasets): what the study
    evaluates, tabulates and bounds is those sets; the paper's average (every set) leaves ours out."""
    from hrvlm.book import ablations

    monkeypatch.setenv("HRVLM_WORKERS", "1")
    variant, _ = tiny_run
    sets = ["mini-heldout", "mini-colours"]
    pgd = ex.attack("pgd", "smoke", 2, steps=2)
    study = ablations.study([variant], "smoke", [pgd], 8, [0], sets=sets, title="t", paper="hrvlm-table10")
    assert sorted(study.frame["dataset"].unique()) == sorted(sets)
    per_set = [study.table.loc["TeCoA", (d, "PGD-2 @ 2×")] for d in sets]
    assert study.table.loc["TeCoA", (AVERAGE, "PGD-2 @ 2×")] == pytest.approx(sum(per_set) / 2)
    bounded = study.intervals.loc["TeCoA", "PGD-2 @ 2×"]
    assert 100 * bounded.value == pytest.approx(sum(per_set) / 2) and bounded.images == 16
    assert not any(column.startswith("average (") for column, *_ in study.comparison.frame.columns)
    assert ablations.sets_note(sets, "smoke") == " on mini-heldout, mini-colours only (book.ablation_datasets; " \
                                                 "the averages are over these)"
    assert ablations.sets_note(get_profile("smoke").eval_datasets, "smoke") == ""


def record(dataset, clean, robust, level=0, eps_multiple=1.0, steps=20, name="pgd", transfer=None, profile="mini"):
    eps = eps_multiple * get_profile(profile).eps_unit
    return {"method": "hrvlm", "dataset": dataset, "level": level, "n": 10, "templates": "mini",
            "attack": {"name": name, "eps": eps, "steps": steps}, "clean_acc": clean, "robust_acc": robust,
            "leaf_robust_acc": None if transfer is None else 0.1, "transfer_success_rate": transfer}


def test_tables_average_every_set_and_mini_numbers_stay_in_mini_columns():
    sets = get_profile("mini").eval_datasets
    one = ex.Variant.of("HRVLM (1 tree)", "hrvlm", {"trees": 1}, paper="hrvlm-1tree")
    two = ex.Variant.of("HRVLM (2 trees)", "hrvlm", {"trees": 2})
    frame = ex.results_frame({one: [record(d, 0.5, 0.25) for d in sets],
                              two: [record(d, 0.6, 0.3 + 0.1 * (i == 0)) for i, d in enumerate(sets)]})
    table = ex.accuracy_table(frame, "mini")
    assert list(table.index) == ["HRVLM (1 tree)", "HRVLM (2 trees)"]
    assert table.loc["HRVLM (1 tree)", (AVERAGE, "clean")] == pytest.approx(50)
    assert table.loc["HRVLM (2 trees)", (AVERAGE, "PGD-20 @ 1×")] == pytest.approx(30 + 10 / len(sets))
    comparison = ex.paper_comparison(frame, "mini").frame
    assert comparison.loc["HRVLM (1 tree)", ("average (mini world)", "PGD-20", "ours")] == pytest.approx(25)
    assert comparison.loc["HRVLM (2 trees)", ("average (mini world)", "clean", "ours")] == pytest.approx(60)
    paper_columns = [c for c in comparison.columns if c[0] in ("average", "imagenet")]
    assert all(kind == "reported" for _, _, kind in paper_columns)  # no mini number in a paper column
    assert comparison.loc["HRVLM (1 tree)", ("average", "PGD-20", "reported")] == pytest.approx(44.34)


def test_tables_show_the_mean_over_seeds_and_refuse_two_values_within_one_seed():
    sets = get_profile("mini").eval_datasets
    v = ex.Variant.of("TeCoA", "tecoa", paper="tecoa")
    seeded = [{**record(d, 0.4 + 0.2 * seed, 0.1 * seed), "seed": seed} for seed in (0, 1, 2) for d in sets]
    frame = ex.results_frame({v: seeded})
    table = ex.accuracy_table(frame, "mini")
    assert table.loc["TeCoA", (AVERAGE, "clean")] == pytest.approx(60)
    assert table.loc["TeCoA", (sets[0], "PGD-20 @ 1×")] == pytest.approx(10)
    assert ex.paper_comparison(frame, "mini").frame.loc["TeCoA", ("average (mini world)", "clean", "ours")] == \
        pytest.approx(60)
    clash = ex.results_frame({v: seeded + [{**record(sets[0], 0.9, 0.1), "seed": 1}]})
    with pytest.raises(ValueError, match="records disagree on clean for TeCoA"):
        ex.accuracy_table(clash, "mini")


def test_long_results_give_levels_transfer_and_eps_multiples():
    v = ex.Variant.of("TeCoA", "tecoa")
    frame = ex.results_frame({v: [record("mini-finetune", 0.5, 0.2),
                                  record("mini-finetune", 0.7, 0.4, level=1, transfer=0.3),
                                  record("mini-finetune", 0.5, 0.1, eps_multiple=4, name="cw")]})
    long = ex.long_results(frame, "mini").set_index(["level", "attack", "eps"])
    assert long.loc[(1, "PGD-20", 1.0), "transfer_success"] == pytest.approx(30)
    assert long.loc[(0, "CW-20", 4.0), "robust"] == pytest.approx(10)
    with pytest.raises(ValueError, match="disagree on clean"):
        ex.accuracy_table(ex.results_frame({v: [record("mini-finetune", 0.5, 0.2),
                                                 record("mini-finetune", 0.6, 0.1, eps_multiple=2)]}), "mini")


def test_figures_draw_bars_and_lines_and_say_when_there_is_nothing():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    fig, (a, b, c) = plt.subplots(1, 3)
    bars = pd.DataFrame({"clean": [50.0, 60.0], "PGD-20": [10.0, float("nan")]}, index=["CLIP", "TeCoA"])
    ex.plot_grouped_bars(a, bars, "average")
    assert len(a.patches) == 4 and "not run" in [t.get_text() for t in a.texts]
    from matplotlib.container import ErrorbarContainer

    from hrvlm.results.evidence import Estimate

    fig2, d = plt.subplots()
    intervals = pd.DataFrame({"clean": [Estimate(0.5, 0.4, 0.62, 1, 100, 10), Estimate(0.6, 0.5, 0.7, 1, 100, 10)],
                              "PGD-20": [Estimate(0.1, 0.05, 0.2, 1, 100, 10), None]}, index=["CLIP", "TeCoA"])
    ex.plot_grouped_bars(d, bars, "average", intervals=intervals)
    errors = [c for c in d.containers if isinstance(c, ErrorbarContainer)]
    assert len(errors) == 2  # one per metric; CLIP's clean bar spans 40..62 %
    segments = errors[0].lines[2][0].get_segments()
    assert [tuple(round(float(y), 6) for y in seg[:, 1]) for seg in segments][0] == (40.0, 62.0)
    v = ex.Variant.of("TeCoA", "tecoa")
    long = ex.long_results(ex.results_frame({v: [record("mini-finetune", 0.5, 0.2, eps_multiple=m) for m in (1, 2)]}),
                           "mini")
    long = long.assign(clean=50.0)
    ex.plot_against(b, long, "eps", "robust", "ε", "robust")
    assert [tuple(line.get_xdata()) for line in b.lines] == [(1.0, 2.0)]
    ex.plot_against(c, long.iloc[0:0], "eps", "robust", "ε", "robust")
    assert [t.get_text() for t in c.texts] == ["no results"]
    plt.close(fig)
    json.dumps(ex.book_settings("smoke"))  # the book sizes are plain data


@pytest.mark.parametrize("profile", ["smoke", "mini", "full"])
def test_the_profile_note_states_eps_in_255ths(profile):
    # the field writes budgets as k/255: a unit of 3/255 must not read as the reduced 1/85
    import re

    k = re.search(r"at ε = (\d+)/255", ex.mini_world_note(profile))
    assert k and int(k[1]) / 255 == pytest.approx(get_profile(profile).eps_unit)
