"""The speed benchmarks' CPU path at tiny sizes (figures printed, never asserted), their FLOP model and
their reference loop."""
import json

import pytest
import torch
import torch.nn.functional as F

from hrvlm.attacks import ThreatModel, pgd_maximize
from hrvlm.attacks.base import attack_context, ce_loss
from hrvlm.benchmarks import attacks, perf, step
from hrvlm.benchmarks._measure import Ceilings, device_of, pgd_eval_forwards, reference_pgd, train_forwards
from hrvlm.core.precision import precision_policy
from hrvlm.heads.zeroshot import ZeroShotClassifier

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--device", "cpu", "--copy-mib", "4", "--matmul-n", "128",
        "--attacks", "--steps 2 --batch 4 --repeats 1 --warmup 1 --model hrvlm-tiny",
        "--step", "--attack-steps 0,1 --batch 4 --repeats 1 --warmup 0 --model hrvlm-tiny",
        "--jpeg", "--images 3 --repeats 1 --warmup 0"]


def test_the_issues_two_numbers_follow_from_the_flop_model():
    h100 = Ceilings(copy_gb_s=3000.0, matmul_tflop_s=800.0, matmul_dtype="bfloat16")
    assert pgd_eval_forwards(20) * 8.8 == pytest.approx(360, rel=0.01)   # GFLOP per PGD-20 image
    assert train_forwards(3) * 8.8 == pytest.approx(80, rel=0.02)        # HRVLM: PGD-3 + one step
    assert h100.images_per_s(pgd_eval_forwards(20)) == pytest.approx(2200, rel=0.02)
    assert h100.images_per_s(train_forwards(3)) == pytest.approx(10_000, rel=0.02)


def test_perf_runs_every_section_on_the_cpu(tmp_path, capsys):
    out = tmp_path / "figures.json"
    assert perf.main(TINY + ["--json", str(out)]) == 0
    printed = capsys.readouterr().out
    figures = json.loads(out.read_text())
    assert set(figures) == {"environment", "ceilings", "attacks", "step", "jpeg", "pipeline"}
    assert figures["ceilings"]["matmul_dtype"] == "float32" and figures["ceilings"]["copy_gb_s"] > 0
    labels = [r["label"] for r in figures["attacks"]["rows"]]
    assert labels == ["hrvlm PGD, fp32", "hrvlm PGD, fp32, stopping early", "hrvlm PGD, fp32, weights trainable",
                      "reference loop, fp32 (plain)", "torchattacks PGD, fp32"]
    agree = figures["attacks"]["stopping_early"]
    assert agree["differ"] == 0 and agree["robust_early"] == agree["robust_full"] and agree["n"] == 4
    assert [(r["attack_steps"], r["label"]) for r in figures["step"]["rows"]] == [
        (0, "hrvlm, fp32"), (0, "reference, fp32"), (1, "hrvlm, fp32"), (1, "reference, fp32")]
    assert figures["step"]["rows"][0]["methods"] == ["clip"]
    assert [r["label"] for r in figures["jpeg"]["rows"]] == [
        "decode='workers' (PIL) on cpu", "decode_jpeg on cpu", "decode='device' on cpu"]
    for section in ("attacks", "step", "jpeg"):
        assert all(r["images_per_s"] > 0 for r in figures[section]["rows"])
    assert "x the reference loop" in printed and "PGD-k + one training step" in printed
    # the tiny CPU model's 32-px step is no match for 224-px decoding: the pipeline rows are the GPU's
    assert figures["pipeline"] == [] and "decode='device'" in printed
    # the ViT-B/32 FLOP model is not applied to tiny models: their forward's FLOP are counted, their rate in GFLOP/s
    assert "TFLOP/s" not in printed.split("PGD-2 evaluation")[1] and "% of the matmul rate" in printed
    rated = {r["label"]: r.get("percent_of_ceiling") for r in figures["attacks"]["rows"]}
    assert rated["hrvlm PGD, fp32, stopping early"] is None  # its work depends on the images
    assert all(v > 0 for k, v in rated.items() if "stopping early" not in k)
    assert figures["attacks"]["forward_gflop"] > 0 and not figures["attacks"]["vit_b32"]


def test_a_towers_forward_flop_are_counted_from_its_layers():
    """The conv tower's 3×3 convolutions at 32, 32, 16, 16, 8 and 4 px: 2 FLOP per multiply-add."""
    from hrvlm.benchmarks._measure import forward_gflop
    from hrvlm.models.clip import load_clip

    model = load_clip("hrvlm-tiny-cnn")[0]
    convs = [m for m in model.clip.visual.modules() if isinstance(m, torch.nn.Conv2d)]
    sizes = [32, 32, 16, 16, 8, 4]
    macs = sum(s * s * c.out_channels * c.in_channels * 9 for s, c in zip(sizes, convs, strict=True))
    linear = sum(m.in_features * m.out_features for m in model.clip.visual.modules() if isinstance(m, torch.nn.Linear))
    assert forward_gflop(model, 32) * 1e9 == pytest.approx(2 * (macs + linear), rel=1e-6)


def test_the_pipeline_rows_add_decoding_and_step_times_per_image():
    figures = {"jpeg": {"rows": [{"label": "decode='device' on cpu", "device": "cpu", "images_per_s": 10.0},
                                 {"label": "decode='device' on cuda", "device": "cuda", "images_per_s": 3000.0}]},
               "step": {"rows": [{"attack_steps": 0, "images_per_s": 6000.0}, {"attack_steps": 0, "images_per_s": 1.0},
                                 {"attack_steps": 3, "images_per_s": 3000.0}]}}
    rows = perf.pipeline(figures, torch.device("cuda"))
    assert [(r["attack_steps"], r["images_per_s"], r["share_of_step"]) for r in rows] == [
        (0, pytest.approx(2000.0), pytest.approx(1 / 3)), (3, pytest.approx(1500.0), pytest.approx(0.5))]
    assert perf.pipeline(figures, torch.device("cpu")) == []


def test_bad_options_fail_before_any_measurement(capsys):
    with pytest.raises(SystemExit) as exit_:
        perf.main(["--device", "cpu", "--step", "--attack-steps 2,x"])
    assert exit_.value.code == 2
    assert "expected comma-separated step counts such as 0,2,3,10, got '2,x'" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="--batch must be >= 1"):
        step.main(["--device", "cpu", "--batch", "0"])
    with pytest.raises(SystemExit, match="unknown model 'ViT-Q-99'; hrvlm configs: "):
        perf.main(["--device", "cpu", "--step=--model ViT-Q-99"])


def test_reference_loop_is_hrvlms_training_pgd(clip):
    """Same random start, sign steps and projection: the speed ratio compares the same algorithm."""
    model, _ = clip
    g = torch.Generator().manual_seed(3)
    clf = ZeroShotClassifier(model, F.normalize(torch.randn(5, model.embed_dim, generator=g), dim=-1), 100.0).eval()
    x, y = torch.rand(16, 3, 32, 32, generator=g), torch.arange(16) % 5
    eps = 2 / 255
    reference = reference_pgd(clf, x, y, eps, eps / 2, 4, torch.Generator().manual_seed(0))
    with attack_context(clf):
        ours = pgd_maximize(lambda adv: ce_loss(clf(adv), y), x, ThreatModel("linf", eps), 4, eps / 2,
                            keep_best=False, generator=torch.Generator().manual_seed(0))
    assert torch.equal(ours, reference)  # batch 16: mean and sum losses differ by an exact power of 2


def test_no_attack_row_pays_for_hrvlms_input_check(clip, monkeypatch):
    """The check costs two host synchronisations per forward on a GPU: no timed loop may run it (the
    torchattacks row did, for its 2k forwards), and the model checks again afterwards."""
    model, _ = clip
    clf = ZeroShotClassifier(model, F.normalize(torch.randn(5, model.embed_dim), dim=-1), 100.0).eval()
    x, y = torch.rand(4, 3, 32, 32), torch.arange(4) % 5
    checked = []
    monkeypatch.setattr(type(model), "check_images", lambda self, images: checked.append(len(images)))
    for label, fn, _ in attacks.rows(clf, x, y, 2, 2 / 255, precision_policy("cpu")):
        fn()
        assert checked == [], label
    clf(x)
    assert checked == [4]


def test_a_gpu_named_by_index_becomes_the_current_one(monkeypatch):
    """CUDA events record on the current device's stream: timing work on cuda:1 from cuda:0 measures nothing."""
    current = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)  # the device check: cuda:1 exists
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    assert device_of("cuda:1") == torch.device("cuda", 1) and current == [torch.device("cuda", 1)]
    assert device_of("cuda") == torch.device("cuda") and len(current) == 1


def test_gradients_compares_each_images_half_precision_input_gradient_with_float32(tmp_path, capsys):
    from hrvlm.benchmarks import gradients

    out = tmp_path / "gradients.json"
    assert gradients.main(["--device", "cpu", "--model", "hrvlm-tiny-cnn", "--batch", "3", "--spreads", "0,1",
                           "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["spread"], r["image"]) for r in rows] == [(s, i) for s in (0.0, 1.0) for i in range(3)]
    for r in rows:
        assert 0 < r["one_minus_p"] < 1 and r["max_abs_fp32"] > 0
        assert all(0 <= r[f"{m}_{k}"] <= 1 for m in ("zero", "sign") for k in ("fp16", "bf16"))
        assert r["sign_fp16"] > 0.5 and r["sign_bf16"] > 0.5  # these images are not confident: both half types work
    # removing the batch's mean feature makes every image more confidently its own class
    assert max(r["one_minus_p"] for r in rows[3:]) < min(r["one_minus_p"] for r in rows[:3])
    assert "sign = fp32" in capsys.readouterr().out
    for bad in ("2", "0,high"):
        with pytest.raises(SystemExit, match="--spreads value in \\[0, 1\\]"):
            gradients.main(["--device", "cpu", "--model", "hrvlm-tiny-cnn", "--spreads", bad])


def test_bench_attacks_times_the_conv_towers_batchnorm_folded_and_unfolded(capsys):
    assert attacks.main(["--device", "cpu", "--steps", "2", "--batch", "4", "--repeats", "1", "--warmup", "1",
                         "--model", "hrvlm-tiny-cnn"]) == 0
    printed = capsys.readouterr().out
    assert "hrvlm PGD, fp32, BatchNorm unfolded" in printed and "hrvlm PGD, fp32, stopping early" in printed
