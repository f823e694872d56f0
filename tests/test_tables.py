"""Paper numbers as data and the reported | ours | difference tables, with the mini-world rule."""
import json
import math

import pandas as pd
import pytest

from hrvlm.results import tables
from hrvlm.profiles import get_profile
from hrvlm.evaluation.records import records_to_frame


def record(method, dataset, clean, robust=None, eps_multiple=1, steps=20, profile="full", templates="tecoa"):
    attack = None if robust is None else {"name": "pgd", "eps": eps_multiple * get_profile(profile).eps_unit,
                                          "steps": steps, "norm": "linf"}
    return {"method": method, "dataset": dataset, "level": 0, "attack": attack, "clean_acc": clean,
            "robust_acc": robust, "templates": templates, "n": 100}


def test_every_paper_table_loads_with_a_source_and_only_numbers_or_unknowns():
    names = tables.paper_tables()
    assert {"hrvlm-main", "hrvlm-table10", "hrvlm-table12", "hrvlm-hnsa", "qtaft-main"} <= set(names)
    for name in names:
        table = tables.paper_table(name)
        assert len(table.source) > 40 and table.paper and table.caption
        frame = table.reported()
        assert frame.shape == (len(table.rows), len(table.columns) * len(table.metrics))
        assert ((frame.stack(future_stack=True).dropna() >= 0) & (frame.stack(future_stack=True).dropna() <= 200)).all().all()


def test_main_table_knows_the_averages_and_leaves_every_dataset_unknown():
    main = tables.paper_table("hrvlm-main").reported()
    assert main.loc["CLIP", ("average", "clean")] == 64.90 and main.loc["HRVLM (5 trees)", ("average", "pgd20")] == 45.39
    assert main.loc["TeCoA", ("average", "pgd20")] == 38.91
    per_dataset = main.drop(columns="average", level="column")
    assert per_dataset.shape[1] == 15 * 2 and per_dataset.isna().all().all()  # unknown, never guessed
    assert tables.paper_table("hrvlm-table12").reported().loc["Universal hierarchical perturbation",
                                                                ("average", "minutes_per_epoch")] == 73.2
    assert tables.paper_table("qtaft-main").reported().isna().all().all()  # no QT-AFT number was retrievable


def test_a_paper_table_without_source_or_with_a_guess_is_refused(tmp_path, monkeypatch):
    spec = json.loads((tables.PAPER_DIR / "hrvlm-hnsa.json").read_text())
    monkeypatch.setattr(tables, "PAPER_DIR", tmp_path)
    (tmp_path / "x.json").write_text(json.dumps({**spec, "source": ""}))
    with pytest.raises(ValueError, match="source"):
        tables.paper_table("x")
    spec["rows"][0]["values"]["average"].pop("clean")
    (tmp_path / "x.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match="null when unknown"):
        tables.paper_table("x")
    with pytest.raises(KeyError, match="no paper table"):
        tables.paper_table("nothing")


def test_full_profile_numbers_stand_beside_the_reported_ones_with_differences():
    records = records_to_frame([record("clip", "cifar10", 0.80, 0.10), record("tecoa", "cifar10", 0.60, 0.35),
                                record("tecoa", "cifar10", 0.60, 0.50, eps_multiple=4)])  # another ε: not PGD-20 @1
    result = tables.compare("hrvlm-main", records, "full")
    frame = result.frame
    assert frame.loc["TeCoA", ("cifar10", "PGD-20", "ours")] == pytest.approx(35.0)
    assert frame.loc["CLIP", ("cifar10", "clean", "ours")] == pytest.approx(80.0)
    assert ("cifar10", "PGD-20", "difference") not in frame  # per-dataset reported numbers are unknown
    assert frame.loc["CLIP", ("average", "clean", "reported")] == 64.90
    assert ("average", "clean", "ours") not in frame  # not every dataset evaluated: no average
    assert "`full` profile" in result.caption and "tecoa" in result.caption


def test_difference_is_ours_minus_reported_where_both_exist():
    datasets = get_profile("full").eval_datasets
    records = records_to_frame([record("clip", d, 0.70, 0.05) for d in datasets])
    frame = tables.compare("hrvlm-main", records, "full").frame
    assert frame.loc["CLIP", ("average", "clean", "ours")] == pytest.approx(70.0)
    assert frame.loc["CLIP", ("average", "clean", "difference")] == pytest.approx(70.0 - 64.90)
    assert frame.loc["CLIP", ("average", "PGD-20", "difference")] == pytest.approx(5.0 - 7.21)
    assert math.isnan(frame.loc["TeCoA", ("average", "clean", "difference")])


@pytest.mark.parametrize("profile", ["mini", "smoke"])
def test_mini_world_numbers_never_stand_in_a_paper_column(profile):
    datasets = get_profile(profile).eval_datasets
    records = records_to_frame([record("clip", d, 0.9, 0.2, profile=profile, templates="mini") for d in datasets])
    result = tables.compare("hrvlm-main", records, profile)
    frame = result.frame
    paper_columns = set(tables.paper_table("hrvlm-main").columns)
    for column, _, kind in frame.columns:
        if column in paper_columns:
            assert kind == "reported", (column, kind)
        else:
            assert column.endswith("(mini world)") and kind == "ours"
    assert frame.loc["CLIP", ("average (mini world)", "clean", "ours")] == pytest.approx(90.0)
    assert frame.loc["CLIP", ("mini-heldout (mini world)", "PGD-20", "ours")] == pytest.approx(20.0)
    assert "mini-world replica" in result.caption and f"`{profile}`" in result.caption and "mini" in result.templates


def test_records_of_the_wrong_world_are_refused():
    mini = records_to_frame([record("clip", "mini-heldout", 0.9, 0.2, profile="mini")])
    with pytest.raises(ValueError, match="mini-world datasets"):
        tables.compare("hrvlm-main", mini, "full")
    real = records_to_frame([record("clip", "cifar10", 0.9, 0.2)])
    with pytest.raises(ValueError, match="real datasets"):
        tables.compare("hrvlm-main", real, "mini")


def test_disagreeing_records_are_an_error_and_methods_can_be_renamed():
    records = records_to_frame([record("clip", "cifar10", 0.80), record("clip", "cifar10", 0.70)])
    with pytest.raises(ValueError, match="filter the records first"):
        tables.compare("hrvlm-main", records, "full")
    renamed = tables.compare("hrvlm-main", records_to_frame([record("hrvlm", "cifar10", 0.5, 0.3)]), "full",
                             methods={"hrvlm": "hrvlm-1tree"}).frame
    assert renamed.loc["HRVLM (1 tree)", ("cifar10", "PGD-20", "ours")] == pytest.approx(30.0)
    unknown = tables.compare("hrvlm-main", records_to_frame([record("mine", "cifar10", 0.5)]), "full").frame
    assert unknown.loc["mine", ("cifar10", "clean", "ours")] == pytest.approx(50.0)  # our extra method: its own row


def test_no_records_gives_the_reported_table_with_its_caption():
    result = tables.compare("hrvlm-table10", None, "mini")
    assert list(result.frame.columns.get_level_values("kind").unique()) == ["reported"]
    assert result.frame.loc["+ HITA", ("average", "AutoAttack", "reported")] == 40.59
    assert "none evaluated yet" in result.caption and "<table" in result._repr_html_()
    assert isinstance(result.frame, pd.DataFrame)


def test_dataset_table_averages_only_complete_rows_and_refuses_disagreeing_cells():
    cells = pd.DataFrame({"method": ["a", "a", "b", "b"], "dataset": ["x", "y", "x", "x"],
                          "metric": ["clean"] * 4, "value": [50.0, 70.0, 40.0, 40.0]})
    table = tables.dataset_table(cells, "method", ["x", "y"])
    assert table.loc["a", (tables.AVERAGE, "clean")] == pytest.approx(60.0)
    assert math.isnan(table.loc["b", (tables.AVERAGE, "clean")])  # b lacks y: no average
    with pytest.raises(ValueError, match="records disagree on clean for b on x"):
        tables.dataset_table(cells.assign(value=[50.0, 70.0, 40.0, 41.0]), "method", ["x", "y"])
