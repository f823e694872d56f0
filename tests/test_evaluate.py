import argparse
import dataclasses

import numpy as np
import pytest
import torch

from hrvlm.evaluation import evaluate as ev
from hrvlm.attacks import build_attack
from hrvlm.data import DatasetSpec, fixed_subset, get_spec, register
from hrvlm.hierarchy.trees import Tree, forest_for_dataset
from hrvlm.evaluation.records import RecordStore, decode_bits
from hrvlm.evaluation.request import EvalRequest
from hrvlm.heads.zeroshot import ZeroShotClassifier
from hrvlm.data.templates import load_templates

CLASSES = ("circle", "square", "triangle", "star")
N = 12


class Tensors(torch.utils.data.Dataset):
    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i], int(self.labels[i])


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def synthetic(clip):
    """Random images labelled with the random model's own predictions (clean accuracy 1 by construction,
    so attacks have something to destroy), at 32 px, plus a 16 px copy whose factory takes no size."""
    model, tokenizer = clip
    images = torch.rand(N, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        labels = ZeroShotClassifier.from_classnames(model, tokenizer, CLASSES, load_templates("simple"))(images).argmax(1)
    low = torch.nn.functional.interpolate(images, size=(16, 16), mode="area")

    def factory(split="test", image_size=32):
        assert image_size == 32
        return Tensors(images, labels)

    def lowres(split="test"):
        return Tensors(low, labels)

    for name, f in (("test-synthetic", factory), ("test-lowres", lowres)):
        register(DatasetSpec(name=name, world="mini", classnames=CLASSES, templates="simple", factory=f),
                 replace=True)
    return labels


@pytest.fixture(scope="module")
def tree():
    # circle/star -> round-ish, square/triangle -> polygon -> one root
    return Tree(name="test-tree", depth=2, nodes=[list(CLASSES), ["curve", "polygon"], ["shape"]],
                names=[list(CLASSES), ["curved figure", "polygon"], ["shape"]],
                ancestor=np.array([[0, 1, 2, 3], [0, 1, 1, 0], [0, 0, 0, 0]]))


def run(clip, dataset="test-synthetic", attacks=(), store=None, **kw):
    model, tokenizer = clip
    return ev.evaluate(model, tokenizer, EvalRequest(dataset, attacks, **kw), store=store, progress=False)


def test_eps_zero_gives_exactly_clean_accuracy(clip, synthetic):
    (record,) = run(clip, attacks=[build_attack("pgd", 0.0, steps=3)])
    assert record["clean_acc"] == 1.0 and record["n"] == N
    assert record["robust_acc"] == record["clean_acc"]
    assert record["robust_correct"] == record["clean_correct"]


def test_robust_accuracy_is_at_most_clean_and_attacks_bite(clip, synthetic):
    records = run(clip, attacks=[build_attack("pgd", e, steps=3) for e in (1 / 255, 32 / 255)])
    weak, strong = records
    for r in records:
        assert r["robust_acc"] <= r["clean_acc"] == 1.0
        assert r["attack"]["steps"] == 3 and r["attack"]["norm"] == "linf"
    assert strong["robust_acc"] < 1.0 and strong["robust_acc"] <= weak["robust_acc"]
    robust = decode_bits(strong["robust_correct"], N)
    assert robust.mean() == strong["robust_acc"]


def test_levels_superclass_attack_and_transfer(clip, synthetic, tree):
    records = run(clip, attacks=[build_attack("pgd", 32 / 255, steps=3)], levels=(0, 1), tree=tree)
    leaf, superclass = records
    assert [r["level"] for r in records] == [0, 1] and superclass["num_classes"] == 2
    assert superclass["tree"] == "test-tree" and leaf["leaf_robust_acc"] is None
    # level 0 reads only which images fall: its PGD stops at each image's first success, the superclass
    # level's does not (the leaf classifier scores its images); the leaf outcome is the plain attack's
    assert leaf["attack"]["stop_on_success"] is True and "stop_on_success" not in superclass["attack"]
    model, tokenizer = clip
    images = torch.stack([synthetic_image for synthetic_image, _ in get_spec("test-synthetic").factory()])
    leaf_head = ZeroShotClassifier.from_classnames(model, tokenizer, CLASSES, load_templates("simple"))
    plain = build_attack("pgd", 32 / 255, steps=3)(leaf_head, images, synthetic)
    with torch.no_grad():
        assert np.array_equal(decode_bits(leaf["robust_correct"], N), (leaf_head(plain).argmax(1) == synthetic).numpy())
    # clean level-1 accuracy is that of the level-1 classifier on the ancestors of the labels
    with torch.no_grad():
        pred = ZeroShotClassifier.from_classnames(model, tokenizer, tree.names[1], load_templates("simple"))(images).argmax(1)
    expected = (pred.numpy() == tree.ancestor[1][synthetic.numpy()]).mean()
    assert superclass["clean_acc"] == pytest.approx(expected)
    clean_only = run(clip, levels=(1,), tree=tree)[0]  # superclass accuracy without any attack
    assert clean_only["clean_acc"] == pytest.approx(expected) and clean_only["robust_acc"] is None
    # transfer: leaf accuracy on superclass adversaries, and the success rate from the same bitmaps
    clean = decode_bits(superclass["leaf_clean_correct"], N)
    adv = decode_bits(superclass["leaf_robust_correct"], N)
    assert clean.all() and superclass["leaf_clean_acc"] == 1.0
    assert superclass["leaf_robust_acc"] == adv.mean()
    assert superclass["transfer_success_rate"] == pytest.approx((clean & ~adv).sum() / clean.sum())
    with pytest.raises(ValueError, match="exceeds the depth 2"):
        run(clip, levels=(3,), tree=tree)
    with pytest.raises(ValueError, match="single class"):
        run(clip, attacks=[build_attack("pgd", 1 / 255, steps=1)], levels=(2,), tree=tree)


class Counting:
    """An attack that counts its calls and can be made to fail (an interruption)."""

    def __init__(self, attack, fail=False):
        self.attack, self.fail, self.calls = attack, fail, 0

    def __call__(self, forward, images, labels):
        self.calls += 1
        if self.fail:
            raise KeyboardInterrupt
        return self.attack(forward, images, labels)

    def stopping_early(self):  # counted as the one attack, as the evaluation runs it at level 0
        self.attack = self.attack.stopping_early()
        return self

    def config(self):
        return self.attack.config()


def test_interrupted_evaluation_resumes_without_recomputing_or_duplicating(clip, synthetic, tmp_path):
    store = tmp_path / "results.jsonl"
    first, second = build_attack("pgd", 2 / 255, steps=2), build_attack("pgd", 4 / 255, steps=2)
    a, b = Counting(first), Counting(second, fail=True)
    with pytest.raises(KeyboardInterrupt):
        run(clip, attacks=[a, b], store=store, batch_size=6)
    assert a.calls == 2 and len(RecordStore(store)) == 1  # the finished chunk is stored

    a, b = Counting(first), Counting(second)
    resumed = run(clip, attacks=[a, b], store=store, batch_size=6)
    assert a.calls == 0 and b.calls == 2  # only the unfinished chunk ran
    again = run(clip, attacks=[Counting(first, fail=True), Counting(second, fail=True)], store=store, batch_size=6)
    assert again == resumed
    assert len(store.read_text().splitlines()) == 2 and len(RecordStore(store)) == 2

    fresh = run(clip, attacks=[first, second], batch_size=6)  # uninterrupted, no store
    for x, y in zip(resumed, fresh):
        assert x["key"] == ev.record_key(y) and x["robust_correct"] == y["robust_correct"]


def test_resolution_policy_is_applied_and_recorded(clip, synthetic):
    attack = [build_attack("pgd", 4 / 255, steps=2)]
    native, = run(clip, "test-lowres", attack)
    first, = run(clip, "test-lowres", attack, resolution="resize-first")
    assert native["resolution"] == "native-then-resize" and native["input_size"] == [16, 16]
    assert native["attack_size"] == [16, 16] and first["attack_size"] == [32, 32]
    assert native["model_image_size"] == 32 and ev.record_key(native) != ev.record_key(first)
    with pytest.raises(ValueError, match="resolution policy"):
        run(clip, "test-lowres", attack, resolution="whatever")


def test_fixed_subset_and_provenance(clip, synthetic, tmp_path):
    a, = run(clip, n=8)
    b, = run(clip, subset=fixed_subset("test-synthetic", N, 8, "test"))
    c, = run(clip, n=9)
    assert a["subset_ids_hash"] == b["subset_ids_hash"] != c["subset_ids_hash"]
    assert a["clean_correct"] == b["clean_correct"] and a["n"] == 8 and a["dataset_size"] == N
    assert a["weights_digest"] == ev.checkpoint_id(clip[0]) and a["weights_digest"].startswith("sha256:")
    assert a["head"] == {"kind": "cosine"} and a["head_built"]["kind"] == "cosine"
    assert a["templates"] == "simple" and a["split"] == "test"
    assert a["attack"] is None and a["robust_acc"] is None and a["wall_time_s"] > 0
    assert {"torch", "open_clip_torch", "torchattacks", "numpy"} <= set(a["libraries"])
    assert a["code"]["hrvlm"] and a["device"].startswith("cpu") and a["seed"] == 0
    with pytest.raises(ValueError, match="subset ids"):
        run(clip, subset=[0, N])


def test_bad_inputs_are_clear_errors(clip, synthetic):
    with pytest.raises(KeyError, match="unknown dataset"):
        run(clip, "no-such-set")
    with pytest.raises(KeyError, match="unknown attack 'pgdd'"):
        ev.build_attacks(["pgdd"], [1 / 255])
    with pytest.raises(ValueError, match="pixel units"):
        build_attack("pgd", 2.0)
    from hrvlm.attacks.threat import read_eps

    for text in ("-1/255", "1/0", "abc", "nan", "inf"):
        with pytest.raises(argparse.ArgumentTypeError):
            read_eps(text)
    # one meaning in every verb: a fraction is explicit, a bare number counts ε units (3/255 in mini)
    assert read_eps("1/255").pixels(3 / 255) == 1 / 255 and read_eps("2").pixels(3 / 255) == 6 / 255
    assert read_eps("0.5").pixels(1 / 255) == 0.5 / 255 and read_eps("6/255").multiple(3 / 255) == 2.0
    for name in (["pgd"], "pgd"):
        with pytest.raises(TypeError, match="'pgd' is not an attack"):
            run(clip, attacks=name)
    with pytest.raises(ValueError, match="non-negative"):
        run(clip, levels=(-1,))
    with pytest.raises(ValueError, match="no class hierarchy"):
        run(clip, levels=(0, 1))


def test_eval_cli_writes_records(synthetic, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    ev.configure_parser(parser)
    store = tmp_path / "r.jsonl"
    args = parser.parse_args(["--datasets", "test-synthetic", "--attack", "pgd,none", "--eps", "0,1/255",
                              "--steps", "2", "--n", "6", "--store", str(store), "--device", "cpu"])
    torch.manual_seed(0)
    assert ev.run(args) == 0
    out = capsys.readouterr().out
    records = RecordStore(store).records()
    assert len(records) == 2 and sorted(r["attack"]["eps"] for r in records) == [0.0, 1 / 255]
    assert all(r["n"] == 6 for r in records) and "test-synthetic" in out and str(store) in out


def test_step_size_is_an_error_for_attacks_that_adapt_their_own(synthetic, tmp_path):
    """--step-size reaches pgd/mpgd/cw; with APGD or AutoAttack it is a clear error, not a silently
    ignored (or crashing) option, and it is raised before any model is loaded."""
    built = ev.build_attacks(["pgd", "cw"], [1 / 255], steps=2, step_size=0.5 / 255, restarts=None)
    assert [a.config()["step_size"] for a in built] == [0.5 / 255] * 2
    both = ev.build_attacks(["pgd", "autoattack-standard"], [1 / 255], steps=2, step_size=None, restarts=1)
    assert [a.config()["name"] for a in both] == ["pgd", "autoattack-standard"]
    for name in ("apgd-ce", "autoattack", "autoattack-standard"):
        with pytest.raises(ValueError, match=f"attack '{name}' takes no setting 'step_size'"):
            ev.build_attacks(["pgd", name], [1 / 255], step_size=0.5 / 255)
    parser = argparse.ArgumentParser()
    ev.configure_parser(parser)
    args = parser.parse_args(["--datasets", "test-synthetic", "--attack", "autoattack", "--step-size", "1/255",
                              "--model", "no-such-model", "--store", str(tmp_path / "r.jsonl")])
    with pytest.raises(ValueError, match="takes no setting 'step_size'"):
        ev.run(args)
    assert not (tmp_path / "r.jsonl").exists()


def test_mini_world_dataset_with_its_wordnet_forest(clip):
    records = run(clip, "mini-finetune", [build_attack("pgd", 1 / 255, steps=1)], levels=(0, 1), n=8, depth=2,
                  dataset_options={"size": "smoke"})
    assert [r["level"] for r in records] == [0, 1] and all(r["split"] == "test" for r in records)
    assert records[1]["tree"].startswith("mini-finetune/") and 1 < records[1]["num_classes"] < records[0]["num_classes"]
    assert records[0]["num_classes"] == 56 and records[0]["dataset_options"] == {"size": "smoke"}
    assert records[1]["tree_hash"] == forest_for_dataset("mini-finetune", depth=2)[0].content_hash()
    assert records[0]["subset_ids_hash"] == records[1]["subset_ids_hash"] and records[1]["leaf_clean_acc"] is not None


def test_changed_weights_never_get_the_stored_record(synthetic, tmp_path):
    """The stale-result trap: a model fine-tuned in memory keeps its ``pretrained`` tag, but its
    records are keyed by its weights, so the pretrained model's stored result never comes back."""
    from hrvlm.models.clip import load_clip

    torch.manual_seed(0)
    model, _, tokenizer = load_clip("hrvlm-tiny")
    store = tmp_path / "records.jsonl"
    attack = build_attack("pgd", 4 / 255, steps=2)
    request = EvalRequest("test-synthetic", attack)
    before, = ev.evaluate(model, tokenizer, request, store=store, progress=False)
    again, = ev.evaluate(model, tokenizer, request, store=store, progress=False)
    assert again["created"] == before["created"]  # unchanged weights: the stored record is reused
    with torch.no_grad():
        for p in model.clip.visual.parameters():
            p.add_(0.05 * torch.randn_like(p))
    after, = ev.evaluate(model, tokenizer, request, store=store, progress=False)
    assert after["weights_digest"] != before["weights_digest"] and after["created"] != before["created"]
    assert len(RecordStore(store)) == 2
    # a different head on the same weights is a different record too
    scaled_head = EvalRequest("test-synthetic", attack, head={"kind": "cosine", "logit_scale": 10.0})
    scaled, = ev.evaluate(model, tokenizer, scaled_head, store=store, progress=False)
    assert scaled["head_built"] == {"kind": "cosine", "logit_scale": 10.0} and len(RecordStore(store)) == 3


def test_precision_is_recorded_and_keys_the_record(clip, synthetic, tmp_path):
    """The scoring forwards follow the precision policy (float32 on CPU by default); a forced bf16
    evaluation is a different record, never the float32 one returned from the store."""
    store = tmp_path / "r.jsonl"
    (fp32,) = run(clip, store=store)
    (bf16,) = run(clip, store=store, precision="bf16")
    assert (fp32["precision"], bf16["precision"]) == ("fp32", "bf16") and fp32["key"] != bf16["key"]
    assert fp32["clean_acc"] == 1.0 and bf16["clean_acc"] > 0.5  # labels are the float32 predictions
    assert len(RecordStore(store).records()) == 2
    # evaluate() runs the attacks in the policy's attack dtype itself, and their records say so
    pgd = build_attack("pgd", 4 / 255, steps=1)
    (attacked,) = run(clip, attacks=[pgd], precision="bf16")
    assert attacked["attack"]["autocast"] == "bfloat16" and pgd.autocast is None


def test_loader_workers_change_no_record(clip, synthetic, tree):
    """Two loader processes, persisting across the (level, attack) chunks, give the records of none."""
    attack = build_attack("pgd", 8 / 255, steps=2)
    plain = run(clip, attacks=[attack], levels=(0, 1), tree=tree, batch_size=5, num_workers=0)
    workers = run(clip, attacks=[attack], levels=(0, 1), tree=tree, batch_size=5, num_workers=2)
    for a, b in zip(plain, workers, strict=True):
        assert {k: v for k, v in a.items() if k not in ("wall_time_s", "created")} == \
               {k: v for k, v in b.items() if k not in ("wall_time_s", "created")}


def test_a_request_is_checked_keyed_and_resolved_for_a_device(synthetic, tree):
    pgd = build_attack("pgd", 4 / 255, steps=2)
    request = EvalRequest("test-synthetic", pgd, [1, 0], 8, tree=tree)
    assert request.attacks == (pgd,) and request.levels == (1, 0)  # tuples: a request is immutable
    checked = request.check()
    assert (checked.split, checked.levels, checked.tree, checked.spec.name) == ("test", [0, 1], tree, "test-synthetic")
    # the key is what is computed, defaults filled in, not how (the loader's processes)
    same = EvalRequest("test-synthetic", [pgd], (0, 1), 8, split="test", templates="simple", tree=tree, num_workers=2)
    assert same.key() == request.key() and len(request.key()) == 20
    for change in ({"n": 9}, {"seed": 1}, {"precision": "bf16"}, {"levels": (0,)}, {"subset": [0, 1]},
                   {"attacks": [build_attack("pgd", 4 / 255, steps=3)]}, {"tree": 0}):
        assert dataclasses.replace(request, **change).key() != request.key(), change
    # "auto" is the device's policy; attacks run in its attack dtype, copied (components too), never changed
    cpu = request.on("cpu")
    assert cpu.precision == "fp32" and cpu.attacks[0] is pgd and cpu.key() != request.key()
    autoattack = build_attack("autoattack", 4 / 255, steps=1)
    bf16 = EvalRequest("test-synthetic", [pgd, autoattack], precision="bf16").on("cpu")
    assert [a.autocast for a in bf16.attacks] == [torch.bfloat16] * 2 and bf16.precision == "bf16"
    assert {c.autocast for c in bf16.attacks[1].components} == {torch.bfloat16}
    assert pgd.autocast is None and {c.autocast for c in autoattack.components} == {None}


def test_the_keyword_form_is_an_alias_giving_the_same_records(clip, synthetic, tree, tmp_path):
    """evaluate(model, tokenizer, dataset, attacks, levels, n, **settings), the 0.1 form, still works for
    one release: a DeprecationWarning, and the records (keys and contents) of the EvalRequest form."""
    model, tokenizer = clip
    attack = build_attack("pgd", 8 / 255, steps=2)
    settings = {"tree": tree, "batch_size": 5, "seed": 3, "templates": "simple"}
    request = EvalRequest("test-synthetic", [attack], (0, 1), 10, **settings)
    new = ev.evaluate(model, tokenizer, request, store=tmp_path / "new.jsonl", progress=False)
    with pytest.warns(DeprecationWarning, match="EvalRequest"):
        old = ev.evaluate(model, tokenizer, "test-synthetic", [attack], (0, 1), 10, store=tmp_path / "old.jsonl",
                          progress=False, **settings)
    assert [r["key"] for r in old] == [r["key"] for r in new] and len(new) == 2

    def computed(record):
        return {k: v for k, v in record.items() if k not in ("wall_time_s", "created", "checksum")}

    assert [computed(r) for r in old] == [computed(r) for r in new]
    with pytest.raises(TypeError, match="give seed in the EvalRequest"):
        ev.evaluate(model, tokenizer, request, seed=1)
    with pytest.warns(DeprecationWarning, match="check_request"):
        assert ev.check_request("test-synthetic", (1, 0), [attack], tree=tree)[1:] == ("test", [0, 1], tree)
    with pytest.warns(DeprecationWarning), pytest.raises(IsADirectoryError, match="is a folder"):
        ev.check_request("test-synthetic", store=tmp_path)


def test_evaluate_weights_checks_every_request_before_the_model_loads(synthetic, tmp_path):
    good, bad = EvalRequest("test-synthetic"), EvalRequest("test-synthetic", n=0)
    with pytest.raises(ValueError, match="n must be a positive integer"):  # not "unknown model"
        ev.evaluate_weights("no-such-model", None, [good, bad], store=tmp_path / "r.jsonl")
    with pytest.raises(ValueError, match="need steps >= 0"):  # the attacks' own checks, on a toy problem
        ev.evaluate_weights("no-such-model", None, [EvalRequest("test-synthetic", build_attack("pgd", 0.1, steps=-1))])
    with pytest.raises(IsADirectoryError):
        ev.evaluate_weights("no-such-model", None, [good], store=tmp_path)
    assert not (tmp_path / "r.jsonl").exists()


def test_evaluate_weights_hashes_the_weights_once_for_all_its_requests(synthetic, tmp_path, monkeypatch):
    """The records' weight identity is computed once per loaded model, not once per request (ViT-B/32: seconds
    each, for 15 sets), and it is the identity evaluate computes itself."""
    real, calls = ev.state_digest, []
    monkeypatch.setattr(ev, "state_digest", lambda module: calls.append(module) or real(module))
    requests = [EvalRequest("test-synthetic", n=4, seed=seed) for seed in (0, 1, 2)]
    records = ev.evaluate_weights("hrvlm-tiny", None, requests, store=tmp_path / "r.jsonl", progress=False)
    assert len(records) == 3 and len(calls) == 1
    assert {r["weights_digest"] for r in records} == {real(calls[0])}


@pytest.mark.parametrize("capability, early", [((9, 0), True), ((7, 5), False)])
def test_level_zero_stops_early_only_where_scoring_has_the_attacks_dtype(monkeypatch, capability, early):
    """fp16 GPUs score in fp16 but attack in float32: an image just across the boundary could score correct,
    so there the attack runs all its steps; on bf16 GPUs and the CPU it stops at each image's success."""
    from hrvlm.core.precision import precision_policy

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    attack = build_attack("pgd", 1 / 255)
    chosen = ev._chunk_attack(attack, 0, precision_policy("cuda"))
    assert chosen.config().get("stop_on_success", False) is early
    assert ev._chunk_attack(attack, 0, precision_policy("cpu")).config()["stop_on_success"] is True
    assert ev._chunk_attack(attack, 1, precision_policy("cpu")) is attack
    assert ev._chunk_attack(None, 0, precision_policy("cpu")) is None


@pytest.mark.parametrize("capability, autocast", [((9, 0), torch.bfloat16), ((7, 5), None)])
def test_auto_precision_runs_attacks_in_the_devices_attack_dtype(monkeypatch, capability, autocast):
    """bf16 on a GPU with it, float32 on older GPUs (never fp16: their scoring is fp16) and on the CPU,
    whatever dtype the attacks were built with."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    attacks = [build_attack("pgd", 1 / 255), build_attack("autoattack", 1 / 255, steps=2, autocast=torch.float16)]
    gpu = EvalRequest("mini-heldout", attacks).on("cuda")
    assert gpu.precision == ("bf16" if autocast else "fp16")
    assert [a.autocast for a in gpu.attacks] == [autocast] * 2
    assert {c.autocast for c in gpu.attacks[1].components} == {autocast}
    assert [a.autocast for a in EvalRequest("mini-heldout", attacks).on("cpu").attacks] == [None] * 2
