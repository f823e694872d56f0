"""The result chapters' computed sentences and tables (hrvlm.book.findings, the chapter tables of hrvlm.book.experiments
and hrvlm.book.ablations), on small hand-built frames: who is named best, the gaps, the empty cases, the shapes."""
import math

import pandas as pd
import pytest

from hrvlm.book import ablations, findings
from hrvlm.book import experiments as ex
from hrvlm.results.tables import AVERAGE

# the rows' methods come from the setting's variants, never from their labels
VARIANTS = (ex.Variant.of("CLIP", "clip"), ex.Variant.of("TeCoA", "tecoa"), ex.Variant.of("FARE", "fare"),
            ex.Variant.of("HRVLM (1 tree)", "hrvlm", {"trees": 1}), ex.Variant.of("HRVLM (2 trees)", "hrvlm", {"trees": 2}))
SETTING = ex.Setting("mini", VARIANTS, ("a", "b"), 100, None)  # 2 sets of 100 images: 5.0 / 3.5 points of noise
OFF = ex.Setting("full", VARIANTS, ("a",), 100, "no data here.")


def averages(rows: dict, robust: str = "PGD-20 @ 1×") -> pd.DataFrame:
    """An accuracy table with only its averages: {variant: (clean, robust)}."""
    columns = pd.MultiIndex.from_tuples([(AVERAGE, "clean"), (AVERAGE, robust)], names=["dataset", "metric"])
    return pd.DataFrame(list(rows.values()), index=list(rows), columns=columns)


def long_rows(rows) -> pd.DataFrame:
    """``long_results`` rows from (variant, dataset, level, attack, eps, clean, robust, transfer) tuples; variants
    in the order given (a categorical, as ``results_frame`` makes them)."""
    frame = pd.DataFrame(rows, columns=["variant", "dataset", "level", "attack", "eps", "clean", "robust",
                                        "transfer_success"])
    order = list(dict.fromkeys(frame["variant"]))
    return frame.assign(variant=pd.Categorical(frame["variant"], categories=order, ordered=True),
                        leaf_robust=frame["robust"] / 2)


# ----------------------------------------------------------------------------- chapter 04
def test_main_table_names_the_best_rows_and_each_hrvlm_gap_to_the_best_fine_tuned_baseline():
    table = averages({"CLIP": (70.0, 2.0), "TeCoA": (50.0, 30.0), "FARE": (60.0, 35.5),
                      "HRVLM (1 tree)": (55.0, 38.0), "HRVLM (2 trees)": (52.0, 33.0)})
    lines = findings.main_table(table, SETTING).splitlines()
    assert lines[0] == ("* Highest average PGD-20 @ 1× accuracy: **HRVLM (1 tree)** (38.0 %); "
                        "highest clean accuracy: **CLIP** (70.0 %).")
    # the paper's CLIP averages are read from its table (64.9 / 7.21)
    assert lines[1] == "* CLIP without fine-tuning: 70.0 % clean, 2.0 % under PGD-20 @ 1× (the paper: 64.9 % and 7.2 %)."
    # CLIP's 70 % clean is no baseline: the best baseline on robust accuracy is FARE (35.5)
    assert lines[2].endswith("+2.5 points of robust accuracy against the best baseline (FARE).")
    assert lines[3] == ("* HRVLM (2 trees): 52.0 % clean, 33.0 % robust, -2.5 points of robust accuracy against "
                        "the best baseline (FARE).")
    assert "15-dataset average (62.1/44.3 with one tree, 62.5/45.4 with five)" in lines[4]
    assert lines[5] == "* " + SETTING.precision_note() and "up to 5.0 points" in lines[5]


def test_main_table_picks_rows_by_their_method_not_their_label():
    renamed = ex.Setting("mini", (ex.Variant.of("zero-shot", "clip"), ex.Variant.of("HRVLM-like baseline", "tecoa"),
                                  ex.Variant.of("ours", "hrvlm")), ("a", "b"), 100, None)
    lines = findings.main_table(averages({"zero-shot": (70.0, 2.0), "HRVLM-like baseline": (50.0, 30.0),
                                          "ours": (55.0, 38.0)}), renamed).splitlines()
    assert lines[1].startswith("* zero-shot without fine-tuning: 70.0 % clean")
    assert lines[2].startswith("* ours: 55.0 % clean") and lines[2].endswith("(HRVLM-like baseline).")
    with pytest.raises(ValueError, match=r"rows \['mine'\] are no variants of the chapter's setting"):
        findings.main_table(averages({"mine": (50.0, 30.0)}), SETTING)


def test_main_table_without_hrvlm_or_baselines_gives_no_gap_and_without_averages_says_why():
    text = findings.main_table(averages({"CLIP": (70.0, 2.0), "TeCoA": (50.0, 30.0)}), SETTING)
    assert "**TeCoA** (30.0 %)" in text and "against the best baseline" not in text
    assert findings.main_table(pd.DataFrame(), SETTING) == "No averages to compare."
    assert findings.main_table(pd.DataFrame(), OFF) == \
        "No averages to compare (this profile cannot run here: see the note at the top)."
    only_clean = averages({"CLIP": (70.0, 2.0)}).drop(columns=(AVERAGE, "PGD-20 @ 1×"))
    assert findings.main_table(only_clean, SETTING) == "No clean and robust averages to compare."


# ----------------------------------------------------------------------------- chapter 05
def superclass_long():
    rows = []
    for dataset, shift in (("a", 0.0), ("b", 10.0)):  # two sets: the sentences read their means
        rows += [("TeCoA", dataset, 0, "PGD-20", 1.0, 60.0, 30.0 + shift, float("nan")),
                 ("TeCoA", dataset, 1, "PGD-20", 1.0, 70.0, 10.0 + shift, 50.0),
                 ("TeCoA", dataset, 2, "PGD-20", 1.0, 80.0, 20.0 + shift, 40.0),
                 ("HRVLM (1 tree)", dataset, 0, "PGD-20", 1.0, 60.0, 32.0 + shift, float("nan")),
                 ("HRVLM (1 tree)", dataset, 1, "PGD-20", 1.0, 70.0, 40.0 + shift, 20.0),
                 ("HRVLM (1 tree)", dataset, 2, "PGD-20", 1.0, 80.0, 50.0 + shift, 10.0)]
    return long_rows(rows)


def test_superclass_findings_give_leaf_accuracy_superclass_range_and_the_comparison_with_hrvlm():
    lines = findings.superclass_attacks(superclass_long(), SETTING).splitlines()
    assert lines[0] == ("* **TeCoA**: 35.0 % robust at the leaves; at the superclass levels 15.0–25.0 %; "
                        "transfer success 45.0 % on average.")
    assert lines[1].startswith("* **HRVLM (1 tree)**: 37.0 % robust at the leaves; at the superclass levels 45.0–55.0 %")
    assert lines[2].startswith("* Superclass robust accuracy, mean over levels ≥ 1: leaf-trained baselines 20.0 %, "
                               "HRVLM 50.0 %; transfer success 45.0 % against 15.0 %.")
    assert lines[3] == "* " + SETTING.precision_note()


def test_superclass_findings_skip_leaf_only_variants_and_the_comparison_without_both_kinds():
    long = superclass_long()
    text = findings.superclass_attacks(long[long["variant"] == "TeCoA"], SETTING)
    assert "TeCoA" in text and "leaf-trained baselines" not in text
    leaves = findings.superclass_attacks(long[long["level"] == 0], SETTING)
    assert leaves == "* " + SETTING.precision_note()  # no superclass level: nothing to say per variant
    assert findings.superclass_attacks(long.iloc[0:0], SETTING) == "Nothing to report."


# ----------------------------------------------------------------------------- chapter 06
def stronger_long():
    rows = []
    for variant, pgd, aa in (("TeCoA", 30.0, 20.0), ("FARE", 40.0, 25.0), ("HRVLM (1 tree)", 50.0, 45.0)):
        rows += [(variant, "a", 0, "clean", 0.0, 70.0, float("nan"), float("nan")),
                 (variant, "a", 0, "PGD-20", 1.0, 70.0, pgd, float("nan")),
                 (variant, "a", 0, "PGD-20", 4.0, 70.0, 0.0, float("nan")),
                 (variant, "a", 0, "AutoAttack", 1.0, 70.0, aa, float("nan"))]
    return long_rows(rows)


def test_stronger_attack_findings_name_best_and_worst_per_budget_a_tie_and_the_autoattack_drop():
    lines = findings.stronger_attacks(stronger_long(), SETTING).splitlines()
    assert lines[0] == "* AutoAttack at ε = 1×: best **HRVLM (1 tree)** (45.0 %), worst TeCoA (20.0 %)."
    assert lines[1] == "* PGD-20 at ε = 1×: best **HRVLM (1 tree)** (50.0 %), worst TeCoA (30.0 %)."
    assert lines[2] == "* PGD-20 at ε = 4×: every method at 0.0 %."
    # PGD means over both budgets: 15, 20, 25; AutoAttack: 20, 25, 45 → drops of -5.0 (TeCoA) … -20.0 (HRVLM)
    assert lines[3].startswith("* AutoAttack lowers accuracy below PGD by -20.0–-5.0 points")
    assert lines[-1] == "* " + SETTING.precision_note()
    pgd_only = stronger_long().query("attack != 'AutoAttack'")
    assert "AutoAttack lowers" not in findings.stronger_attacks(pgd_only, SETTING)
    assert findings.stronger_attacks(pgd_only.iloc[0:0], OFF).startswith("Nothing to report (this profile")


# ----------------------------------------------------------------------------- chapters 07, 08
def test_reading_names_best_worst_and_spread_or_a_tie():
    columns = pd.MultiIndex.from_tuples([(AVERAGE, "clean"), (AVERAGE, "AutoAttack @ 4×")])
    table = pd.DataFrame([[80.0, 0.0], [84.0, 0.0]], index=["A", "B"], columns=columns)
    text = findings.reading(table, "t")
    assert "best B (84.0 %), worst A (80.0 %), a spread of 4.0 points" in text
    assert "AutoAttack @ 4×: every variant at 0.0 %" in text
    assert findings.reading(None, "t") == "t: no results in this build."


def test_readings_list_one_bullet_per_table_or_say_nothing_ran():
    table = averages({"A": (80.0, 10.0), "B": (70.0, 20.0)})
    text = findings.readings({"first": table, "second": None})
    assert text.splitlines() == [f"* {findings.reading(table, 'first')}", "* second: no results in this build."]
    assert "best B (20.0 %)" in text
    assert findings.readings({}) == "*No runs in this build.*"


def fake_run(folder, epoch_times, estimate=None, images_per_s=10.0):
    from hrvlm.models import runs
    from hrvlm.core.storage import file_sha256

    folder.mkdir()
    (folder / runs.WEIGHTS).write_bytes(b"weights")  # a record is read only with its verified checksum and weights
    runs.write_record(folder, {
        "model": "m", "method": {"name": "tecoa"}, "head": {"kind": "cosine"},
        "sha256": {runs.WEIGHTS: file_sha256(folder / runs.WEIGHTS)},
        "steps": 7, "config": {"batch_size": 4}, "epoch_times_s": epoch_times, "epoch_time_s_estimate": estimate,
        "images_per_s": images_per_s, "environment": {"device": "cpu"}})
    return folder


def test_perturbation_cost_puts_our_ratios_to_the_universal_perturbation_beside_the_papers(tmp_path):
    labels = [label for label, _, _ in ablations.ABLATIONS["perturbation"][2]]
    leaf, per_level, universal = (ex.Variant.of(label, "hrvlm") for label in labels)
    runs = {leaf: {0: fake_run(tmp_path / "leaf", [60.0]), 1: fake_run(tmp_path / "leaf1", [60.0])},
            universal: {0: fake_run(tmp_path / "u", [], estimate=100.0), 1: fake_run(tmp_path / "u1", [], estimate=140.0)}}
    cost = ablations.perturbation_cost(runs, "mini")  # each row the mean over its seeds
    assert list(cost.index) == labels
    assert cost.loc[labels[1], "reported: × universal"] == pytest.approx(154.2 / 73.2)
    assert cost.loc[labels[0], "ours (mini): min / epoch"] == pytest.approx(1.0)
    assert cost.loc[labels[0], "ours (mini): × universal"] == pytest.approx(0.5)
    assert math.isnan(cost.loc[labels[1], "ours (mini): × universal"])  # not run
    nothing = ablations.perturbation_cost({}, "full")
    assert nothing["ours (full): min / epoch"].isna().all() and nothing["reported: min / epoch"].notna().all()


def test_training_costs_read_each_runs_record(tmp_path):
    runs = {ex.Variant.of("TeCoA", "tecoa"): {0: fake_run(tmp_path / "t", [30.0, 90.0], images_per_s=12.5),
                                              1: fake_run(tmp_path / "t1", [60.0, 120.0], images_per_s=7.5)}}
    costs = ablations.training_costs(runs)
    assert list(costs.index) == ["TeCoA"] and list(costs.columns) == \
        ["steps", "batch size", "min / epoch", "images / s", "device", "seeds"]
    assert costs.loc["TeCoA", "min / epoch"] == pytest.approx(1.25) and costs.loc["TeCoA", "images / s"] == 10.0
    assert costs.loc["TeCoA", "seeds"] == 2
    untrained = ablations.training_costs({ex.Variant.of("CLIP", "clip"): {0: fake_run(tmp_path / "c", [], images_per_s=None)}})
    assert math.isnan(untrained.loc["CLIP", "images / s"])  # no step, no throughput


def test_the_tree_rows_the_paper_reports_are_its_hrvlm_rows():
    rows = ablations.reported_trees()
    assert list(rows.index) == ["HRVLM (1 tree)", "HRVLM (5 trees)"]
    assert rows.loc["HRVLM (5 trees)", (AVERAGE, "pgd20")] == pytest.approx(45.39)


def test_a_study_on_a_profile_that_cannot_run_here_has_only_the_papers_numbers(monkeypatch):
    monkeypatch.setattr(ex, "unavailable", lambda profile: "no data here.")
    monkeypatch.setattr(ex, "train_run", lambda *a, **k: pytest.fail("nothing may train"))
    study = ablations.study(ablations.variants("components", "mini"), "mini", [], 10, title="components",
                            paper="hrvlm-table10")
    assert study.runs == {} and study.frame.empty and study.table is None and study.figure is None
    assert study.shown() == [study.comparison]  # the paper's numbers only
    assert study.comparison.frame.loc["Full (HITA + vic + gap)", (AVERAGE, "PGD-20", "reported")] == \
        pytest.approx(44.34)


def test_trees_figure_draws_one_line_per_metric_against_the_number_of_trees():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = averages({"1 tree": (50.0, 20.0), "2 trees": (52.0, 21.0), "3 trees": (51.0, 25.0)})
    fig = ablations.trees_figure(table, "mini")
    (ax,) = fig.axes
    assert [line.get_label() for line in ax.lines] == ["clean", "PGD-20 @ 1×"]
    assert list(ax.lines[1].get_xdata()) == [1, 2, 3] and list(ax.lines[1].get_ydata()) == [20.0, 21.0, 25.0]
    plt.close(fig)


def test_a_study_that_ran_shows_its_averages_with_intervals_under_a_caption_naming_the_seeds():
    from hrvlm.results.evidence import Estimate

    variant = ex.Variant.of("+ HITA", "hrvlm")
    estimates = pd.DataFrame({"clean": {"+ HITA": Estimate(0.5, 0.4, 0.6, 3, 300, 100)},
                              "PGD-20 @ 1×": {"+ HITA": Estimate(0.2, 0.15, 0.25, 3, 300, 100)}})
    study = ablations.Study("components", {variant: {0: "a", 1: "b", 2: "c"}}, pd.DataFrame(), None,
                            table=pd.DataFrame({"x": [1.0]}), intervals=estimates)
    table, shown = study.shown()
    assert table is study.table
    assert "components" in shown.caption and "mean over 3 seed(s)" in shown.caption
    assert shown.data.loc["+ HITA", "PGD-20 @ 1×"] == "20.0 [15.0, 25.0]"
