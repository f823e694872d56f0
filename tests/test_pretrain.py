"""Pretraining the tiny CLIP: schedule, determinism, resume, cache reuse and corruption detection."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from hrvlm.training import pretrain as pt
from hrvlm.training.checkpoints import load_checkpoint
from hrvlm.training.schedule import batch_indices, decay_groups, lr_factor
from hrvlm.evaluation.evaluate import EvalRequest, evaluate
from hrvlm.models.clip import load_clip
from hrvlm.profiles import get_profile

# A run small enough for tests (~30 s on 2 cores) and long enough to learn something: on web captions
# the colours are learned first (the 69 classes need the full run).
TINY = dict(corpus_size=4096, steps=200, batch_size=128, lr=2e-3, warmup=50, checkpoint_every=100,
            captions=((0.0, "pretrain:web"),))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short smoke-profile run shared by the tests below: (cache root, config, weights path)."""
    root = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HRVLM_CACHE", str(root))
        config = pt.PretrainConfig.profile("smoke", **TINY)
        weights = pt.pretrain(config, progress=False)
    return root, config, weights


def test_schedule_and_batches():
    assert lr_factor(0, 10, 100) == pytest.approx(0.1) and lr_factor(9, 10, 100) == pytest.approx(1.0)
    assert lr_factor(55, 10, 100) == pytest.approx(0.5) and lr_factor(100, 10, 100) == pytest.approx(0.0)
    first = torch.cat([batch_indices(t, 32, 100, seed=1) for t in range(3)])
    assert len(set(first.tolist())) == 96  # one epoch: no repeats
    assert torch.equal(batch_indices(4, 32, 100, seed=1), batch_indices(4, 32, 100, seed=1))
    assert not torch.equal(batch_indices(0, 32, 100, seed=1), batch_indices(0, 32, 100, seed=2))
    with pytest.raises(ValueError, match="batch size"):
        batch_indices(0, 64, 10, seed=0)


def test_contrastive_loss_prefers_aligned_pairs():
    x = torch.nn.functional.normalize(torch.randn(8, 16), dim=-1)
    aligned = pt.contrastive_loss(x, x, torch.tensor(20.0))
    shuffled = pt.contrastive_loss(x, x.roll(1, 0), torch.tensor(20.0))
    assert aligned < 0.1 < shuffled


def test_profiles_and_bad_names():
    assert pt.PretrainConfig.profile("smoke").steps < pt.PretrainConfig.profile("mini").steps
    assert pt.PretrainConfig.profile("mini").key() != pt.PretrainConfig.profile("mini", seed=1).key()
    with pytest.raises(ValueError, match="profile"):
        pt.PretrainConfig.profile("huge")
    assert get_profile("full").eps_unit == pytest.approx(1 / 255)
    assert get_profile("mini").eps(2) == pytest.approx(2 * get_profile("mini").eps_unit)


def test_short_run_beats_chance(trained):
    root, config, weights = trained
    record = json.loads((weights.parent / "record.json").read_text())
    assert record["steps"] == config.steps and record["config"]["seed"] == config.seed
    assert record["torch_threads"] == config.threads and record["sha256"]
    # Zero-shot classification of the fill colour (11 classes, chance 1/11; 0.23 measured) on 300 fixed
    # images: P(accuracy >= 0.18) by chance is below 1e-7.
    model, _, tokenizer = load_clip(config.model, pretrained=weights)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HRVLM_CACHE", str(root))
        request = EvalRequest("mini-colours", n=300, dataset_options={"size": "mini"})
        accuracy = evaluate(model, tokenizer, request, progress=False)[0]["clean_acc"]
    assert accuracy >= 0.18, accuracy


def test_caption_curriculum_phases():
    config = pt.PretrainConfig.profile("mini")
    assert [pt.caption_phase(s, config) for s in (0, config.steps // 2 - 1, config.steps // 2, config.steps - 1)] \
        == [0, 0, 1, 1]
    with pytest.raises(ValueError, match="fraction 0"):
        pt.PretrainConfig(captions=((0.2, "pretrain:web"),))
    with pytest.raises(ValueError, match="increase"):
        pt.PretrainConfig(captions=((0.0, "pretrain:web"), (0.0, "pretrain:shapes-first")))


def test_cache_is_reused_and_corruption_rebuilt(trained, monkeypatch):
    root, config, weights = trained
    monkeypatch.setenv("HRVLM_CACHE", str(root))
    monkeypatch.setitem(pt.PROFILES, "smoke", config)
    assert pt.load_record(config) is not None
    calls = []
    real = pt.pretrain
    monkeypatch.setattr(pt, "pretrain", lambda *a, **k: calls.append(1) or real(*a, **k))
    model, _, _ = load_clip(config.model, pretrained="mini-smoke")  # reuses: no training
    assert calls == []
    reference = {k: v.clone() for k, v in load_file(str(weights)).items()}  # not a view of the file
    assert all(torch.equal(v, reference[k]) for k, v in model.clip.state_dict().items())

    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF  # flip bits in the last tensor
    weights.write_bytes(bytes(data))
    assert pt.load_record(config) is None
    rebuilt = pt.ensure_smoke(config.model)
    assert calls == [1] and pt.load_record(config) is not None
    assert load_file(str(rebuilt)).keys() == reference.keys()
    assert all(torch.equal(load_file(str(rebuilt))[k], reference[k]) for k in reference)


def test_interrupted_run_resumes_to_the_same_weights(trained, tmp_path, monkeypatch):
    _, config, weights = trained
    monkeypatch.setenv("HRVLM_CACHE", str(tmp_path))
    short = pt.PretrainConfig.profile("smoke", **{**TINY, "steps": 12, "checkpoint_every": 4})
    assert pt.pretrain(short, stop_after=6, progress=False).name == "checkpoint.pt"
    assert json.loads((pt.run_dir(short) / "checkpoint.json").read_text())["step"] == 6
    assert pt.load_record(short) is None
    resumed = load_file(str(pt.pretrain(short, progress=False)))
    assert json.loads((pt.run_dir(short) / "record.json").read_text())["resumed_at"] == 6
    assert not (pt.run_dir(short) / "checkpoint.pt").exists()  # a finished run keeps no optimiser state

    monkeypatch.setenv("HRVLM_CACHE", str(tmp_path / "other"))
    straight = load_file(str(pt.pretrain(short, progress=False)))
    assert all(torch.equal(resumed[k], straight[k]) for k in straight)


def test_corrupt_checkpoint_is_not_resumed(tmp_path, monkeypatch):
    monkeypatch.setenv("HRVLM_CACHE", str(tmp_path))
    short = pt.PretrainConfig.profile("smoke", **{**TINY, "steps": 4, "checkpoint_every": 2})
    pt.pretrain(short, stop_after=2, progress=False)
    ckpt = pt.run_dir(short) / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:-10])
    assert load_checkpoint(pt.run_dir(short)) is None


def test_cache_key_follows_what_the_corpus_is_made_of_and_nothing_else(monkeypatch):
    from hrvlm.miniworld import datasets, render

    config = pt.PretrainConfig.profile("mini")
    before = config.key()

    def key_with(edit):
        changed = json.loads(json.dumps(render.world()))
        edit(changed)
        with monkeypatch.context() as m:
            for module in (render, datasets):
                m.setattr(module, "world", lambda: changed)
            return config.key()

    assert key_with(lambda w: None) == before
    assert key_with(lambda w: w["pretraining_captions"]["web"].update(detailed=0.3)) != before
    assert key_with(lambda w: w["datasets"]["mini-pretrain"]["style"].update(filled_prob=0.5)) != before
    # the fine-tuning and evaluation sets, and prose, are not what the weights are made of
    assert key_with(lambda w: w["datasets"]["mini-finetune"]["style"].update(rotation_max=90)) == before
    assert key_with(lambda w: w["datasets"]["mini-pretrain"].update(description="changed")) == before


@pytest.mark.parametrize("override, message", [({"steps": -5}, "steps must be a positive integer"),
                                               ({"steps": 0}, "steps must be a positive integer"),
                                               ({"threads": 0}, "threads must be"),
                                               ({"batch_size": 8192}, "exceeds the corpus size"),
                                               ({"checkpoint_seconds": 0}, "checkpoint_seconds > 0")])
def test_bad_configs_fail_at_construction(override, message):
    with pytest.raises(ValueError, match=message):
        pt.PretrainConfig.profile("smoke", **override)


@pytest.mark.parametrize("argv, message", [(["--steps=-5"], "steps must be a positive integer"),
                                           (["--steps", "0"], "steps must be a positive integer"),
                                           (["--model", "nosuch"], "unknown model 'nosuch'")])
def test_cli_rejects_bad_input_in_one_line_and_writes_nothing(argv, message, tmp_path, monkeypatch, capsys):
    from hrvlm.cli import main

    monkeypatch.setenv("HRVLM_CACHE", str(tmp_path))
    assert main(["pretrain", "--profile", "smoke", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err
    assert not list((tmp_path / "pretrained").glob("*"))


def test_unknown_model_makes_no_run_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HRVLM_CACHE", str(tmp_path))
    config = pt.PretrainConfig.profile("smoke", model="nosuch")
    assert pt.load_record(config) is None
    with pytest.raises(KeyError, match="unknown model"):
        pt.pretrain(config, progress=False)
    assert not pt.run_dir(config).exists()


def test_threads_are_fixed_keyed_and_restored(monkeypatch):
    base = pt.PretrainConfig.profile("smoke")
    assert base.threads == 2 and base.key() != pt.PretrainConfig.profile("smoke", threads=1).key()
    assert base.key() != pt.PretrainConfig.profile("smoke", channels_last=False).key()
    # when checkpoints are written changes nothing in the weights, so it is not keyed
    assert base.key() == pt.PretrainConfig.profile("smoke", checkpoint_every=7, checkpoint_seconds=5.0).key()
    seen = []
    monkeypatch.setattr(pt, "_pretrain", lambda *a: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    pt.pretrain(pt.PretrainConfig.profile("smoke", threads=3))
    assert seen == [3] and torch.get_num_threads() == before


@pytest.mark.parametrize("seconds, expected", [(1e-9, [1, 2, 3, 4, 5, 6]), (1e9, [6])])
def test_checkpoints_by_time_as_well_as_steps(seconds, expected, tmp_path, monkeypatch):
    monkeypatch.setenv("HRVLM_CACHE", str(tmp_path))
    saved = []
    real = pt._save_checkpoint
    monkeypatch.setattr(pt, "_save_checkpoint", lambda out, m, o, s, step, e: saved.append(step) or real(out, m, o, s, step, e))
    config = pt.PretrainConfig.profile("smoke", **{**TINY, "corpus_size": 512, "steps": 6, "checkpoint_every": 1000,
                                                   "checkpoint_seconds": seconds})
    pt.pretrain(config, progress=False)
    assert saved == expected


def test_cli_prints_todays_zero_shot_accuracies_and_reads_them_back(tmp_path, monkeypatch, capsys):
    from hrvlm.cli import main
    from hrvlm.evaluation.records import default_store

    monkeypatch.setenv("HRVLM_CACHE", str(tmp_path))
    assert main(["pretrain", "--profile", "smoke", "--steps", "6"]) == 0
    out = capsys.readouterr().out
    printed = json.loads(out[out.index("{"):])
    assert set(printed["zeroshot_top1"]) == set(get_profile("smoke").eval_datasets) | {"zero-shot average"}
    stored = default_store().read_text().count("\n")
    assert stored >= len(get_profile("smoke").eval_datasets)
    assert main(["pretrain", "--profile", "smoke", "--steps", "6"]) == 0
    out = capsys.readouterr().out
    assert "reusing the cached run" in out and default_store().read_text().count("\n") == stored


class _Stop(Exception):
    pass


def test_pretraining_decays_the_weights_it_always_did(tmp_path, monkeypatch):
    """Pretraining applies the fine-tuning loop's weight-decay rule (hrvlm.training.schedule), which on the
    tiny CLIP is exactly what pretraining's own copy of it gave: decay for every trained weight of 2 or more
    dimensions but the positional embedding (the token embedding stays frozen), none for the rest; so the
    mini CLIP's weights are unchanged."""
    monkeypatch.setenv("HRVLM_CACHE", str(tmp_path))
    seen = {}

    def spy(named, weight_decay):
        named = list(named)
        groups = decay_groups(named, weight_decay)
        names = {id(p): n for n, p in named}
        seen.update(named=named, groups=[{names[id(p)] for p in g["params"]} for g in groups],
                    decays=[g["weight_decay"] for g in groups])
        raise _Stop

    monkeypatch.setattr(pt, "decay_groups", spy)
    config = pt.PretrainConfig.profile("smoke")
    with pytest.raises(_Stop):
        pt.pretrain(config, progress=False)
    named = seen["named"]
    assert "clip.token_embedding.weight" not in {n for n, _ in named} and config.freeze_token_embedding
    assert seen["groups"] == [{n for n, p in named if p.ndim >= 2} - {"clip.positional_embedding"},
                              {n for n, p in named if p.ndim < 2} | {"clip.positional_embedding"}]
    assert seen["decays"] == [config.weight_decay, 0.0]


def test_pretraining_runs_open_clips_full_context_text_pass(tmp_path, monkeypatch):
    """The trimmed text pass (the same function, other float rounding) is off in pretraining, whose cached
    weights were made without it under the same key; it stays on for a model loaded for anything else."""
    from hrvlm.models import clip as models

    monkeypatch.setenv("HRVLM_CACHE", str(tmp_path))

    def refuse(clip, tokens):
        raise AssertionError("pretraining ran the trimmed text pass")

    monkeypatch.setattr(models, "trimmed_text_features", refuse)
    pt.pretrain(pt.PretrainConfig.profile("smoke", **{**TINY, "corpus_size": 512, "steps": 2}), progress=False)
    model, _, tokenizer = load_clip("hrvlm-tiny-cnn", pretrained=None)
    with pytest.raises(AssertionError, match="trimmed"):
        model.encode_text(tokenizer(["a photo of a circle."]))
