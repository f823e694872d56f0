"""The training harness: resume exactness, modes around attacks, run folders, bad configs, DDP, export.

Runs fine-tune a random-init tiny CNN CLIP (BatchNorm tower) on the smoke mini world's fine-tuning set
with a test-local method (``tests/_train_methods.py``), a few steps each.
"""
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import _train_methods
from hrvlm import cli
from hrvlm.models import runs
from hrvlm.training import train as tr
from hrvlm.methods import build_method
from hrvlm.profiles import get_profile

pytestmark = pytest.mark.usefixtures("one_thread")

TESTS = Path(__file__).resolve().parent
BASE = dict(method=_train_methods.NAME, profile="smoke", model="hrvlm-tiny-cnn", pretrained=tr.RANDOM_INIT, steps=4,
            batch_size=16, lr=1e-3, warmup=1, checkpoint_every=2, seed=3)


@pytest.fixture(scope="module", autouse=True)
def probe_method():
    _train_methods.register()
    yield
    _train_methods.unregister()


def config(**kw) -> tr.TrainConfig:
    return tr.TrainConfig(**{**BASE, **kw})


def weights(run: Path) -> dict:
    return load_file(str(run / runs.WEIGHTS))


def test_resume_is_bit_identical(tmp_path):
    """4 steps, stop, 4 more == 8 uninterrupted (bit-identical on the CPU: same ops, same order, every RNG,
    the optimiser, scheduler, method state and extra parameter restored)."""
    cfg = config(steps=8)
    whole = tr.train(cfg, tmp_path / "whole", progress=False)
    part = tr.train(cfg, tmp_path / "part", stop_after=4, progress=False)
    assert not (part / runs.RECORD).exists() and json.loads((part / "checkpoint.json").read_text())["step"] == 4
    tr.train(cfg, tmp_path / "part", progress=False)
    a, b = weights(whole), weights(tmp_path / "part")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ra, rb = runs.read_record(whole), runs.read_record(tmp_path / "part")
    assert ra["losses"] == rb["losses"] and len(ra["losses"]) == 8
    assert ra["weights_digest"] == rb["weights_digest"]
    ma, mb = load_file(str(whole / runs.METHOD_WEIGHTS)), load_file(str(tmp_path / "part" / runs.METHOD_WEIGHTS))
    assert torch.equal(ma["temperature"], mb["temperature"]) and ma["temperature"] != 0
    assert not (whole / "checkpoint.pt").exists() and not (tmp_path / "part" / "checkpoint.json").exists()
    # the run changed the weights, and a finished run is returned as is
    assert ra["losses"][0] != ra["losses"][-1]
    assert tr.train(cfg, whole, progress=False) == whole and runs.read_record(whole)["losses"] == ra["losses"]


def test_fp16_with_loss_scaling_resumes_exactly_on_cpu(tmp_path):
    cfg = config(steps=4, precision="fp16")
    whole = tr.train(cfg, tmp_path / "whole", progress=False)
    tr.train(cfg, tmp_path / "part", stop_after=2, progress=False)
    state = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=False)
    assert state["scaler"]["scale"] > 0  # the scaler's state is saved
    tr.train(cfg, tmp_path / "part", progress=False)
    a, b = weights(whole), weights(tmp_path / "part")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert runs.read_record(whole)["precision"]["precision"] == "fp16"
    assert runs.read_record(whole)["precision"]["attacks"] == "fp32"  # hrvlm.core.precision says why


def test_attacks_see_eval_mode_and_training_mode_is_restored(tmp_path, monkeypatch):
    methods = []
    from hrvlm.methods import build_method as real

    def spy(name, settings=None):
        methods.append(real(name, settings))
        return methods[-1]

    monkeypatch.setattr("hrvlm.methods.build_method", spy)
    tr.train(config(steps=2), tmp_path / "frozen", progress=False)
    seen = methods[-1].seen
    assert len(seen["perturb"]) == len(seen["loss"]) == 2
    for flags in seen["perturb"]:  # inside every attack: the whole model in eval mode
        assert not any(training for _, training in flags)
    for flags in seen["loss"]:  # the loss: training mode restored, BatchNorm frozen (running statistics)
        assert all(training != name.startswith("BatchNorm") for name, training in flags)
    tr.train(config(steps=2, batchnorm="batch"), tmp_path / "batch", progress=False)
    for flags in methods[-1].seen["loss"]:
        assert all(training for _, training in flags)
    for flags in methods[-1].seen["perturb"]:
        assert not any(training for _, training in flags)


def test_set_train_mode_and_attack_mode():
    from hrvlm.models.clip import ConvTower

    tower = ConvTower(4)
    tower.features[0].eval()  # a caller's own flag survives the attack block
    with tr.attack_mode(tower):
        assert not any(m.training for m in tower.modules())
    assert not tower.features[0].training and tower.training
    tr.set_train_mode(tower, "frozen")
    assert tower.training and not tower.features[0][1].training
    tr.set_train_mode(tower, "batch")
    assert all(m.training for m in tower.modules())


def test_run_folder_loads_by_path_and_name_with_its_head_and_fresh_records(tmp_path, monkeypatch):
    from hrvlm.evaluation.evaluate import EvalRequest, checkpoint_id, evaluate
    from hrvlm.models.clip import load_clip

    (tmp_path / "runs").mkdir()
    monkeypatch.setattr(runs, "runs_root", lambda: tmp_path / "runs")
    run = tr.train(config(steps=2), progress=False)  # default folder: <cache>/runs/<name>
    assert run.parent == runs.runs_root() and run.name == config(steps=2).identified().name()
    record = runs.read_record(run.name)
    assert record["method"]["name"] == _train_methods.NAME and record["profile"] == "smoke"
    assert record["head"]["kind"] == "cosine" and record["seed"] == 3 and record["steps"] == 2
    assert record["sha256"][runs.WEIGHTS] and record["environment"]["device"].startswith("cpu")
    assert record["epoch_time_s_estimate"] > 0 and record["steps_per_epoch"] == 256 // 16
    tuned, _, tokenizer = load_clip("hrvlm-tiny-cnn", pretrained=run.name)
    by_path, _, _ = load_clip("hrvlm-tiny-cnn", pretrained=str(run))
    assert tuned.head_spec == record["head"] and checkpoint_id(tuned) == checkpoint_id(by_path) == record["weights_digest"]
    torch.manual_seed(BASE["seed"])  # not what random-init depends on: it is one set of weights, whatever the seed
    base, _, _ = load_clip("hrvlm-tiny-cnn", pretrained=tr.RANDOM_INIT)
    assert checkpoint_id(base) == record["pretrained_digest"] != record["weights_digest"]
    torch.manual_seed(0)
    store = tmp_path / "records.jsonl"
    request = EvalRequest("mini-finetune", n=16, dataset_options={"size": "smoke"})
    before, = evaluate(base, tokenizer, request, store=store, progress=False)
    after, = evaluate(tuned, tokenizer, request, store=store, progress=False)
    assert after["weights_digest"] != before["weights_digest"] and after["head"] == record["head"]
    with pytest.raises(ValueError, match="fine-tuned 'hrvlm-tiny-cnn', not 'hrvlm-tiny'"):
        load_clip("hrvlm-tiny", pretrained=run.name)
    with pytest.raises(runs.RunNotFound):
        load_clip("hrvlm-tiny-cnn", pretrained=str(tmp_path / "nothing-here"))
    (run / runs.WEIGHTS).write_bytes(b"corrupt")
    with pytest.raises(runs.RunNotFound, match="sha256"):
        load_clip("hrvlm-tiny-cnn", pretrained=run.name)


def test_a_run_folder_keeps_its_configuration(tmp_path):
    tr.train(config(steps=2), tmp_path / "run", stop_after=1, progress=False)
    with pytest.raises(ValueError, match=r"another configuration \(differs in \['lr'\]\)"):
        tr.train(config(steps=2, lr=0.5), tmp_path / "run", progress=False)
    # where the data lies and how many processes read it are no part of the run: it resumes after a move
    moved = config(steps=2, num_workers=1, dataset_options={"size": "smoke", "root": str(tmp_path / "moved")})
    assert moved.identified().name() == config(steps=2).identified().name()
    assert runs.read_record(tr.train(moved, tmp_path / "run", progress=False))["steps"] == 2
    assert config(decode="device").name() != config().name()  # the decoder changes the pixels, so the run


def test_train_cli_takes_a_dataset_and_its_root_and_checks_the_files_before_the_model(tmp_path, capsys, monkeypatch):
    import hrvlm.models.clip

    def no_model(*args, **kwargs):
        raise AssertionError("the model loaded before the data were checked")

    monkeypatch.setattr(hrvlm.models.clip, "load_clip", no_model)
    args = ["train", "--method", "tecoa", "--profile", "full", "--pretrained", tr.RANDOM_INIT]
    assert cli.main(args + ["--dataset", "tinyimagenet", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"dataset 'tinyimagenet' (split 'train') is not under {tmp_path}" in err and "tiny-imagenet-200" in err
    assert cli.main(args + ["--dataset", "cifar10", "--root", str(tmp_path)]) == 2
    assert "decode='device' reads image files, and dataset 'cifar10' is not" in capsys.readouterr().err


@pytest.mark.parametrize("change, message", [
    (dict(method="nope"), "unknown method 'nope'"),
    (dict(eps=-1.0), "eps must be >= 0"),
    (dict(steps=0), "steps must be > 0"),
    (dict(optimizer="adam"), "unknown optimizer 'adam'"),
    (dict(profile="huge"), "unknown profile 'huge'"),
    (dict(method_settings={"attack_stepz": 3}), "has no setting"),
    (dict(pretrained="/nonexistent/run"), "no such checkpoint file or run folder"),
    (dict(dataset="mini-nothing"), "unknown dataset 'mini-nothing'"),
])
def test_bad_configs_fail_before_any_model_loads(change, message, monkeypatch, tmp_path):
    def no_model(*a, **k):
        raise AssertionError("a model was loaded for a bad config")

    monkeypatch.setattr("hrvlm.models.clip.load_clip", no_model)
    with pytest.raises(ValueError, match=message):
        tr.train(config(**change), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_cli_bad_configs_are_one_line_errors(monkeypatch, capsys):
    monkeypatch.setattr("hrvlm.models.clip.load_clip", lambda *a, **k: pytest.fail("model loaded"))
    assert cli.main(["train", "--method", "nope", "--profile", "smoke"]) == 2
    assert "unknown method 'nope'" in capsys.readouterr().err
    # the smoke profile has no settings for the test-local method
    assert cli.main(["train", "--method", _train_methods.NAME, "--profile", "smoke"]) == 2
    err = capsys.readouterr().err
    assert "profile 'smoke' has no settings for method 'test-ce'" in err and err.count("\n") == 1
    assert cli.main(["train", "--method", _train_methods.NAME, "--profile", "smoke", "--steps", "0"]) == 2


def test_profile_settings_reach_the_config(monkeypatch):
    prof = get_profile("smoke")
    methods = {**prof.methods, _train_methods.NAME: {"attack_steps": 1, "loop": {"lr": 0.25}}}
    monkeypatch.setattr("hrvlm.profiles.get_profile", lambda name: replace(prof, methods=methods))
    cfg = tr.config_from_profile(_train_methods.NAME, "smoke", steps=3)
    assert cfg.method_settings == {"attack_steps": 1} and cfg.lr == 0.25 and cfg.steps == 3
    assert cfg.batch_size == prof.train["batch_size"]
    with pytest.raises(ValueError, match="unknown training setting"):
        tr.config_from_profile(_train_methods.NAME, "smoke", stepz=3)


def test_hrvlm_train_command(monkeypatch, tmp_path, capsys):
    from hrvlm.profiles import get_profile

    prof = get_profile("smoke")
    methods = {**prof.methods, _train_methods.NAME: {"loop": {"batch_size": 16}}}
    monkeypatch.setattr("hrvlm.profiles.get_profile", lambda name: replace(prof, methods=methods))
    args = ["train", "--method", _train_methods.NAME, "--profile", "smoke", "--model", "hrvlm-tiny-cnn",
            "--pretrained", tr.RANDOM_INIT, "--steps", "2", "--set", "attack_steps=1", "--out", str(tmp_path / "run")]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert f"hrvlm eval --pretrained {tmp_path / 'run'} --datasets mini-finetune --profile smoke" in printed
    record = runs.read_record(tmp_path / "run")
    assert record["method"] == {"name": _train_methods.NAME, "attack_steps": 1, "random_start": False}
    assert record["config"]["batch_size"] == 16 and len(record["logs"]) == 2 and "loss" in record["logs"][0]


@pytest.mark.parametrize("name", ["imagenet", "tinyimagenet"])
def test_training_on_local_imagenet_folders(name, tmp_path, monkeypatch):
    """ImageNet from a local ImageFolder and TinyImageNet as extracted from its zip, both fabricated here
    (3 classes × 4 images; nothing is downloaded), through the real datasets' own loaders, with either
    decode path: PIL in the loader (``workers``) or the batch's bytes decoded by the loop (``device``, the
    full profile's).  Both feed the same items in the same order, with pixels equal to 2/255."""
    from PIL import Image

    from hrvlm.data import DatasetSpec, register
    from hrvlm.data.real import build

    g = torch.Generator().manual_seed(0)
    wnids = ("n01440764", "n01443537", "n01484850")
    for wnid in wnids:
        folder = tmp_path / ("imagenet/train" if name == "imagenet" else "tiny-imagenet-200/train") / wnid
        folder = folder if name == "imagenet" else folder / "images"
        folder.mkdir(parents=True)
        for i in range(4):
            pixels = torch.nn.functional.interpolate(torch.rand(1, 3, 5, 6, generator=g), size=(48, 64), mode="bicubic")
            Image.fromarray((pixels[0].clamp(0, 1) * 255).byte().permute(1, 2, 0).numpy()).save(folder / f"{wnid}_{i}.JPEG")
    if name == "tinyimagenet":
        (tmp_path / "tiny-imagenet-200" / "wnids.txt").write_text("\n".join(wnids))
    register(DatasetSpec(name=f"test-{name}", world="real", classnames=("tench", "goldfish", "shark"),
                         templates="simple", factory=lambda split, **kw: build(name, split, **kw),
                         splits=("train",), image_files=True), replace=True)
    seen, perturb = [], _train_methods.ProbeCE.perturb

    def recording(self, batch):
        seen.append((batch.images.clone(), batch.labels.clone(), batch.index.clone()))
        return perturb(self, batch)

    monkeypatch.setattr(_train_methods.ProbeCE, "perturb", recording)
    fed = {}
    for decode in ("workers", "device"):
        seen.clear()
        run = tr.train(config(dataset=f"test-{name}", dataset_options={"root": str(tmp_path)}, batch_size=6,
                              steps=3, decode=decode), tmp_path / decode, progress=False)
        record = runs.read_record(run)
        assert len(record["losses"]) == 3 and record["steps_per_epoch"] == 2 and len(record["epoch_times_s"]) == 1
        assert record["config"]["decode"] == decode
        fed[decode] = list(seen)
    for (a, labels_a, index_a), (b, labels_b, index_b) in zip(fed["workers"], fed["device"], strict=True):
        assert a.shape == b.shape == (6, 3, 32, 32)
        assert torch.equal(labels_a, labels_b) and torch.equal(index_a, index_b)
        assert (a - b).abs().max() * 255 <= 2.0 + 1e-4


def test_device_decoding_needs_a_folder_of_image_files():
    with pytest.raises(ValueError, match="decode='device' reads image files, and dataset 'mini-finetune' is not"):
        config(decode="device").check()
    with pytest.raises(ValueError, match="unknown decode 'gpu'"):
        config(decode="gpu").check()


def test_export_round_trip_loads_in_plain_open_clip(tmp_path):
    import open_clip

    from hrvlm.export import export
    from hrvlm.models.clip import load_clip, register_configs

    run = tr.train(config(steps=2), tmp_path / "run", progress=False)
    register_configs()  # hrvlm's tiny configs; open_clip's own models need nothing
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    tuned, _, _ = load_clip("hrvlm-tiny-cnn", pretrained=str(run))
    with torch.no_grad():
        expected = tuned.encode_image(x)
    for suffix in (".safetensors", ".pt"):
        out = export(run, tmp_path / f"robust{suffix}")
        plain, _, _ = open_clip.create_model_and_transforms("hrvlm-tiny-cnn", pretrained=str(out))
        plain.eval()
        with torch.no_grad():
            got = plain.encode_image((x - tuned.mean) / tuned.std, normalize=True)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
        assert json.loads(out.with_name(out.name + ".json").read_text())["open_clip_model"] == "hrvlm-tiny-cnn"
    with pytest.raises(ValueError, match="suffix"):
        export(run, tmp_path / "robust.ckpt")


SCRIPT = """
import json, sys
import torch
torch.set_num_threads(1)
sys.path.insert(0, {tests!r})
import _train_methods
_train_methods.register()
from hrvlm.training.train import TrainConfig, train
train(TrainConfig(**json.loads(sys.argv[1])), sys.argv[2], progress=False)
"""


def test_ddp_two_processes_match_one(tmp_path):
    """torchrun, 2 CPU processes (gloo), each half of the same global batch: the same losses and weights
    as one process, within float32 reduction-order noise (the gradient is averaged across ranks instead
    of within one batch): 1e-5 relative on the losses, 1e-5 absolute on the weights.  Exact equality is
    not expected; equality at all needs per-image losses, hence BatchNorm frozen (the default)."""
    cfg = config(steps=3, batch_size=16)
    single = tr.train(cfg, tmp_path / "single", progress=False)
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT.format(tests=str(TESTS)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(TESTS.parent)}
    payload = json.dumps({k: v for k, v in vars(cfg).items()})
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), payload, str(tmp_path / "ddp")], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = runs.read_record(single), runs.read_record(tmp_path / "ddp")
    assert two["world_size"] == 2 and one["world_size"] == 1
    torch.testing.assert_close(torch.tensor(two["losses"]), torch.tensor(one["losses"]), rtol=1e-5, atol=1e-6)
    a, b = weights(single), weights(tmp_path / "ddp")
    for k in a:  # float32 all-reduce sums in another order; over 2 AdamW steps that stays below 1e-4
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-4)


def test_torchrun_on_gpus_gives_cpu_tensors_a_backend(monkeypatch):
    """On GPUs the process group is NCCL for CUDA tensors and gloo for CPU ones: NCCL alone fails on the
    CPU tensor of ``Dist.mean`` (the per-step loss).  NCCL cannot start here, so the call is recorded."""
    import torch.distributed as dist

    from hrvlm.core.distributed import init_distributed

    calls = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)  # Dist.device checks cuda:1 exists
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: calls.update(device=index))
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend, **kw: calls.update(backend=backend, **kw))
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    d = init_distributed()
    assert dict(pair.split(":") for pair in calls["backend"].split(",")) == {"cpu": "gloo", "cuda": "nccl"}
    assert calls["device"] == 1 and d.device() == torch.device("cuda", 1) and (d.rank, d.world) == (1, 2)
    assert "timeout" not in calls  # training keeps PyTorch's: a stuck collective ends the job in minutes


def test_eval_ranks_wait_for_the_slowest_rank(monkeypatch):
    """``hrvlm eval`` under torchrun waits at a barrier for the slowest rank's datasets, which can take hours
    (gloo's default timeout is 30 minutes), so it joins the process group with a timeout of a day."""
    from hrvlm.core import distributed
    from hrvlm.evaluation.evaluate import RANKS_WAIT

    asked = []

    def joined(timeout=None):
        asked.append(timeout)
        raise KeyboardInterrupt  # stop before any model loads

    monkeypatch.setattr(distributed, "init_distributed", joined)
    assert cli.main(["eval", "--model", "hrvlm-tiny-cnn", "--datasets", "mini-heldout", "--profile", "smoke"]) == 130
    assert asked == [RANKS_WAIT] and RANKS_WAIT.total_seconds() >= 24 * 3600


def test_a_method_with_nothing_to_train_writes_the_reference_run(tmp_path, monkeypatch):
    method = build_method(_train_methods.NAME)
    monkeypatch.setattr(type(method), "trainable_parameters", lambda self, model: iter(()))
    monkeypatch.setattr(type(method), "extra_parameters", lambda self: {})
    monkeypatch.setattr(type(method), "setup", lambda self, ctx: None)
    monkeypatch.setattr(type(method), "head_spec", lambda self: {"kind": "cosine"})
    run = tr.train(config(steps=2), tmp_path / "run", progress=False)
    record = runs.read_record(run)
    assert record["steps"] == 0 and record["losses"] == [] and record["pretrained"] == tr.RANDOM_INIT


def test_checkpoints_every_n_steps_and_every_t_seconds(tmp_path, monkeypatch):
    saved = []
    monkeypatch.setattr(tr, "save_checkpoint", lambda folder, state: saved.append(state["step"]))
    tr.train(config(steps=5, checkpoint_every=2, checkpoint_seconds=1e9), tmp_path / "steps", progress=False)
    assert saved == [2, 4]  # none after the last step: the weights are written next
    saved.clear()
    tr.train(config(steps=3, checkpoint_every=100, checkpoint_seconds=1e-9), tmp_path / "time", progress=False)
    assert saved == [1, 2]
    saved.clear()
    tr.train(config(steps=5, checkpoint_every=100, checkpoint_seconds=1e9), tmp_path / "part", stop_after=3,
             progress=False)
    assert saved == [3]  # a run stopped early keeps where it stopped


def test_hrvlm_eval_consumes_a_run(tmp_path, capsys):
    run = tr.train(config(steps=2), tmp_path / "run", progress=False)
    store = tmp_path / "records.jsonl"
    assert cli.main(["eval", "--pretrained", str(run), "--datasets", "mini-finetune", "--profile", "smoke",
                     "--n", "8", "--attack", "none", "--store", str(store)]) == 0
    from hrvlm.evaluation.records import RecordStore

    record, = RecordStore(store).records()
    assert record["model"] == "hrvlm-tiny-cnn" and record["method"] == _train_methods.NAME
    assert record["batch_size"] == get_profile("smoke").eval_batch_size  # --batch-size's default under --profile
    assert record["head"] == runs.read_record(run)["head"]
    assert record["weights_digest"] == runs.read_record(run)["weights_digest"]


def test_eval_splits_datasets_across_torchrun_ranks(tmp_path):
    """``hrvlm eval`` under torchrun: each rank evaluates its share of the datasets into the shared store;
    rank 0 prints the whole table.  The records equal a single process's, bit for bit."""
    from hrvlm.evaluation.records import RecordStore

    run = tr.train(config(steps=2), tmp_path / "run", progress=False)
    args = ["eval", "--pretrained", str(run), "--datasets", "mini-heldout,mini-outline,mini-colours", "--profile",
            "smoke", "--num-images", "8", "--attack", "pgd", "--steps", "2", "--eps", "2/255"]
    assert cli.main(args + ["--store", str(tmp_path / "one.jsonl")]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(TESTS.parent)}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "--module", "hrvlm.cli", *args, "--store", str(tmp_path / "two.jsonl")], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("mini-outline") == 1  # one table, from rank 0
    one = {r["key"]: r for r in RecordStore(tmp_path / "one.jsonl").records()}
    two = {r["key"]: r for r in RecordStore(tmp_path / "two.jsonl").records()}
    assert one.keys() == two.keys() and len(one) == 3
    for key in one:
        assert (one[key]["clean_correct"], one[key]["robust_correct"]) == (two[key]["clean_correct"], two[key]["robust_correct"])


def test_cpu_runs_use_the_configured_thread_count(tmp_path):
    """The thread count changes float summation order, so it is part of the run's configuration (and hash),
    used while training on the CPU and restored afterwards."""
    torch.set_num_threads(2)
    try:
        run = tr.train(config(steps=2, threads=1), tmp_path / "one", progress=False)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)
    assert runs.read_record(run)["environment"]["torch_threads"] == 1
    assert config(threads=1).name() != config(threads=2).name()
    with pytest.raises(ValueError, match="threads must be an integer >= 1"):
        config(threads=0).check()


def _decayed_and_exempt(optimizer, named) -> tuple[set, set]:
    names = {id(p): n for n, p in named}
    return tuple({names[id(p)] for p in optimizer.param_groups[i]["params"]} for i in (0, 1))


@pytest.mark.parametrize("model_name", ["hrvlm-tiny-cnn", "hrvlm-tiny", "ViT-B-32-quickgelu"])
@pytest.mark.parametrize("method", ["tecoa", "hrvlm"])
def test_fine_tuning_decays_the_weights_it_always_did(model_name, method):
    """The weight-decay rule (hrvlm.training.schedule) exempts gains, biases, norms, embeddings and the
    temperature by name; on the profiles' models (tiny CNN, tiny ViT, ViT-B/32), for the image tower alone
    (TeCoA's) and with the text projection (HRVLM's), that is exactly: decay for every weight of 2 or more
    dimensions but the positional embeddings, none for the rest, so the groups, and the runs, are unchanged."""
    from hrvlm.models.clip import load_clip

    model, _, _ = load_clip(model_name, tr.RANDOM_INIT)
    named = list(build_method(method).trainable_parameters(model))
    decayed, exempt = _decayed_and_exempt(tr.build_optimizer(tr.TrainConfig(method=method), named), named)
    embeddings = {n for n, _ in named if n.endswith("positional_embedding")}
    assert decayed == {n for n, p in named if p.ndim >= 2} - embeddings
    assert exempt == {n for n, p in named if p.ndim < 2} | embeddings
    assert ("clip.text_projection" in decayed) == (method == "hrvlm")


def test_the_decay_rule_exempts_norms_and_embeddings_of_any_shape():
    from hrvlm.training.schedule import decay_groups, no_decay

    weight = torch.nn.Parameter(torch.zeros(2, 2))
    assert not no_decay("visual.proj", weight) and not no_decay("visual.conv.weight", weight)
    for name in ("trunk.norm.weight", "visual.bn1.weight", "ln_post.weight", "token_embedding.weight", "logit_scale"):
        assert no_decay(name, weight), name
    assert no_decay("visual.conv.bias", torch.nn.Parameter(torch.zeros(2)))
    groups = decay_groups([("a.weight", weight), ("a.norm.weight", weight)], 0.1)
    assert [(len(g["params"]), g["weight_decay"]) for g in groups] == [(1, 0.1), (1, 0.0)]


def test_rng_states_round_trip_through_a_checkpoint_file(tmp_path):
    """Every process-wide generator and a run's own named one draw, after a restore from a checkpoint file
    (weights_only loading), what they drew after the save; a state lacking a generator is refused."""
    import random

    import numpy as np

    from hrvlm.training.checkpoints import load_checkpoint, rng_state, save_checkpoint, seed_rngs, set_rng_state

    def draws():
        return (torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)],
                torch.rand(3, generator=data).tolist())

    before = rng_state()
    try:
        data = torch.Generator().manual_seed(7)
        seed_rngs(5)
        save_checkpoint(tmp_path, {"step": 0, "rng": rng_state(data=data)})
        expected = draws()
        seed_rngs(6)
        data.manual_seed(8)
        assert draws() != expected
        set_rng_state(load_checkpoint(tmp_path)["rng"], data=data)
        assert draws() == expected
        with pytest.raises(ValueError, match=r"has no generator \['data'\]"):
            set_rng_state(before, data=data)
        with pytest.raises(ValueError, match="taken by the process-wide generators"):
            rng_state(torch=data)
    finally:
        set_rng_state(before)
