"""The validation chapter's rows (hrvlm.book.validation) and the bundled real digits (uci-digits)."""
import math

import numpy as np
import pytest
import torch

from hrvlm.geometry import poincare as G
from hrvlm.book import validation as V
from hrvlm.attacks import ThreatModel, ce_loss, pgd_maximize
from hrvlm.cli import main
from hrvlm.data import fixed_subset, get_dataset, get_spec, list_datasets
from hrvlm.heads import build_head
from hrvlm.data.templates import load_templates

pytestmark = pytest.mark.usefixtures("one_thread")


# -- rows: verdicts --------------------------------------------------------------------------------------
def test_a_row_beyond_its_tolerance_fails_and_require_pass_names_it():
    rows = [V.Row("geometry", "dist, float32", "geoopt", 2e-4, 1e-4, "max"),
            V.Row("attacks", "identical share", "torchattacks", 0.5, 0.9, "min"),
            V.Row("attacks", "fine", "torchattacks", 1.0, 0.9, "min"),
            V.Row("class names", "cifar10", "torchvision", skipped="not shipped")]
    assert [r.status for r in rows] == ["FAIL", "FAIL", "pass", "skipped"]
    with pytest.raises(V.ValidationFailed, match=r"2 validation row\(s\) failed:\ngeometry: dist, float32") as err:
        V.require_pass(rows)
    assert "identical share" in str(err.value) and "cifar10" not in str(err.value)
    V.require_pass(rows[2:])  # a pass and a skip: nothing raised
    assert not V.Row("x", "nan", "y", math.nan, 1.0).passed  # a measurement that failed is no pass
    frame = V.rows_frame(rows)
    assert list(frame["status"]) == ["FAIL", "FAIL", "pass", "skipped"] and frame["requirement"][0] == "≤ 0.0001"


def test_geometry_and_theory_rows_pass_and_detect_a_wrong_function(monkeypatch):
    rows = V.geometry_rows(n=64) + V.theory_rows()
    assert all(r.status == "pass" for r in rows), V.rows_frame([r for r in rows if not r.passed])
    checks = {r.check for r in rows}
    assert {"dist, float32", "dist, float64", "einstein_midpoint, float64", "saturation limit, β_c = 5°"} <= checks
    # a distance off by 0.1 % is caught in both dtypes; the rows are measured, not asserted
    right = G.dist
    monkeypatch.setattr(G, "dist", lambda *a, **k: 1.001 * right(*a, **k))
    failed = {r.check for r in V.geometry_rows(n=64) if not r.passed}
    assert {"dist, float32", "dist, float64"} <= failed and "dist0, float64" not in failed


def test_class_lists_agree_with_what_torchvision_ships():
    rows = {r.check: r for r in V.classname_rows(["flowers102", "cifar10"])}
    assert rows["flowers102: same count"].measured == 0 and rows["flowers102: same count"].passed
    assert rows["flowers102: share of identical names in label order"].passed
    assert rows["cifar10: class list"].status == "skipped"


# -- attacks beside torchattacks -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits_task(clip):
    """The random-init tiny CLIP's cosine head on 24 real digits (32 px)."""
    model, tokenizer = clip
    data = get_dataset("uci-digits", image_size=model.image_size)
    ids = fixed_subset("uci-digits", len(data), 24)
    x = torch.stack([data[int(i)][0] for i in ids])
    y = torch.tensor([data[int(i)][1] for i in ids])
    head = build_head({"kind": "cosine"}, model, tokenizer, [list(data.classnames)], load_templates("mini")).level(0)
    return head, x, y


def test_attack_rows_agree_with_torchattacks_and_leave_modes_and_rng_alone(digits_task):
    head, x, y = digits_task
    head.train()  # torchattacks would restore a wrapper with .train(), switching every inner module
    modes = [m.training for m in head.modules()]
    state = torch.get_rng_state()
    rows = V.attack_rows(head, x, y, eps=2 / 255, steps=4, apgd_steps=5)
    assert torch.equal(torch.get_rng_state(), state) and [m.training for m in head.modules()] == modes
    by_check = {r.check: r for r in rows}
    assert by_check["PGD-4, no random start: share of identical adversarial images"].measured >= 0.9
    assert all(r.status == "pass" for r in rows), V.rows_frame(rows)
    assert len(rows) == 8


def test_an_image_is_identical_when_all_but_a_round_off_flip_of_its_values_agree():
    """One value per image moved by a flipped step (two step sizes) leaves the images identical at 224 px;
    a difference in more than 0.1 % of an image's values does not."""
    x = torch.rand(4, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    y = torch.zeros(4, dtype=torch.long)

    def forward(images):
        return torch.zeros(len(images), 2)

    flipped = x.clone()
    flipped[:, 0, 0, 0] += 2 * (1 / 255) / 4
    row = V._pair_rows("PGD", "torchattacks", forward, x, y, x, flipped, 0.9)[0]
    assert row.measured == 1.0 and row.passed and "0 % of images in every value" in row.detail
    spread = x.clone()
    spread[:2, :, :16, :16] += 1e-3  # 768 values = 0.5 % of each of two images
    assert V._pair_rows("PGD", "torchattacks", forward, x, y, x, spread, 0.9)[0].measured == 0.5


def test_pgd_from_a_given_start_is_that_start_projected(digits_task):
    head, x, y = digits_task
    threat = ThreatModel("linf", 2 / 255)
    start = torch.full_like(x, 5 / 255)  # outside the ball: projected first
    out = pgd_maximize(lambda a: ce_loss(head(a), y), x, threat, steps=0, step_size=0.0, keep_best=False, start=start)
    assert torch.allclose(out, (x + 2 / 255).clamp(0, 1), atol=1e-7)


@pytest.mark.slow
def test_validation_rows_on_the_smoke_model_pass():
    rows = V.validation_rows("smoke", n=16)
    V.require_pass(rows)
    areas = [r.area for r in rows]
    assert areas.count("attacks") == 8 and areas.count("class names") >= 15
    assert {r.check.split(":")[0] for r in rows if r.area == "class names" and r.skipped} >= {"cifar10", "pcam"}


# -- the bundled digits ----------------------------------------------------------------------------------
def test_digits_load_through_the_registry_with_shapes_and_labels():
    from sklearn.datasets import load_digits

    spec = get_spec("uci-digits")
    assert "uci-digits" in list_datasets("real") and spec.bundled == "scikit-learn" and spec.splits == ("test",)
    assert list(spec.classnames) == ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    reference = load_digits()
    for size, frame in ((32, 2), (224, 14)):
        data = get_dataset("uci-digits", image_size=size)
        assert len(data) == 1797
        image, label = data[100]
        assert image.shape == (3, size, size) and image.dtype == torch.float32 and label == reference.target[100]
        assert 0 <= image.min() and image.max() <= 1 and torch.equal(image[0], image[2])
        assert (image[:, :frame] == 1).all() and (image[:, :, -frame:] == 1).all()  # the white border
        assert image[:, frame:-frame, frame:-frame].min() < 0.5  # ink inside
    labels = get_dataset("uci-digits").labels.numpy()
    assert np.array_equal(labels, reference.target) and np.bincount(labels).min() >= 174
    # ink is dark: the pixel with the most ink in the 8x8 image is the darkest after upscaling
    data = get_dataset("uci-digits", image_size=16)  # inner 14 px
    assert float(data[0][0].min()) < 0.2


def test_digits_are_listed_as_bundled(capsys):
    assert main(["data", "list"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("uci-digits"))
    assert "bundled (scikit-learn)" in line and "CC BY 4.0" in line


def test_digits_transfer_table_has_intervals_and_baselines():
    n = 40
    records = {"CLIP": [{"dataset": "uci-digits", "level": 0, "n": n, "clean_acc": 0.5, "attack": None},
                        {"dataset": "uci-digits", "level": 0, "n": n, "clean_acc": 0.5, "robust_acc": 0.1,
                         "attack": {"name": "pgd"}},
                        {"dataset": "mini-heldout", "level": 0, "n": n, "clean_acc": 0.9, "attack": None}]}
    table = V.digits_transfer(records)
    assert len(table) == 2 and table["chance (%)"].iloc[0] == 10
    assert table["clean 95 % interval"].iloc[0] == "35.2–64.8"  # Wilson, 20 of 40
    assert table["robust (%)"].iloc[1] == pytest.approx(10.0) and table["robust 95 % interval"].iloc[1] == "4.0–23.1"
    labels = get_dataset("uci-digits").labels.numpy()[fixed_subset("uci-digits", 1797, n)]
    assert table["majority (%)"].iloc[0] == pytest.approx(100 * np.bincount(labels).max() / n)
