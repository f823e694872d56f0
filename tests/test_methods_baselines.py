"""The baseline methods (CLIP, TeCoA, PMG-AFT, FARE, QT-AFT) and QT-AFT's caption sources."""
import copy
import json
import math

import pytest
import torch

from hrvlm.attacks import ThreatModel
from hrvlm.text.captions import caption_source, class_caption, load_captions_file, parse_source
from hrvlm.data.registry import get_spec
from hrvlm.methods import METHODS, Batch, TrainContext, build_method
from hrvlm.methods.pmg_aft import kl_to
from hrvlm.methods.qtaft import image_to_text_infonce
from hrvlm.miniworld.datasets import MiniWorldDataset
from hrvlm.profiles import PROFILE_FILE

pytestmark = pytest.mark.usefixtures("one_thread")

ADVERSARIAL = ["tecoa", "pmg-aft", "fare", "qtaft"]
EPS = 4 / 255


@pytest.fixture(scope="module")
def train_set():
    return MiniWorldDataset("mini-finetune", "train", size="smoke")


@pytest.fixture(scope="module")
def batch(train_set):
    index = torch.arange(8)
    images = torch.stack([train_set[i][0] for i in range(8)])
    return Batch(images, torch.tensor([train_set.label(i) for i in range(8)]), index=index)


def prepare(name, clip, train_set, **settings):
    """A fresh copy of the tiny CLIP and ``name`` set up on it (the fixture's model is shared)."""
    model = copy.deepcopy(clip[0]).train()
    method = build_method(name, settings)
    method.setup(TrainContext(model=model, tokenizer=clip[1], dataset=get_spec("mini-finetune"), eps=EPS,
                              device=torch.device("cpu"), autocast=None, attack_autocast=None, seed=0,
                              train_set=train_set))
    return method, model


def train(method, model, batch, steps, lr=1e-3):
    """A tiny version of the loop: perturb, loss, SGD step; the losses of every step."""
    params = [p for _, p in method.trainable_parameters(model)] + list(method.extra_parameters().values())
    optimiser = torch.optim.SGD(params, lr=lr)
    losses = []
    for _ in range(steps):
        adv = method.perturb(batch)
        model.train()
        loss, logs = method.loss(batch, adv)
        assert set(logs) and all(isinstance(v, float) for v in logs.values())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    return losses


# SGD step sizes: FARE's and QT-AFT's squared distances of raw embeddings are far steeper than a CE
LEARNING_RATES = {"tecoa": 0.05, "pmg-aft": 0.05, "fare": 1e-3, "qtaft": 1e-3}


@pytest.mark.parametrize("name", ADVERSARIAL)
def test_loss_decreases_on_a_fixed_batch(name, clip, train_set, batch):
    torch.manual_seed(0)
    method, model = prepare(name, clip, train_set, steps=2)
    with torch.no_grad():  # start away from the original model, where FARE's loss is at its minimum already
        for p in model.clip.visual.parameters():
            p.add_(0.02 * torch.randn_like(p))
    losses = train(method, model, batch, steps=8, lr=LEARNING_RATES[name])
    assert all(math.isfinite(v) for v in losses)
    assert max(losses[-3:]) < 0.8 * losses[0], losses


@pytest.mark.parametrize("name", ADVERSARIAL)
def test_perturbation_is_admissible_and_trains_the_image_tower_only(name, clip, train_set, batch):
    torch.manual_seed(1)
    method, model = prepare(name, clip, train_set)
    adv = method.perturb(batch)
    assert adv.shape == batch.images.shape and not torch.equal(adv, batch.images)
    assert ThreatModel("linf", EPS).contains(batch.images, adv).all()
    assert all(p.grad is None for p in model.parameters())  # attacks leave parameter gradients alone
    names = [n for n, _ in method.trainable_parameters(model)]
    assert names and all(n.startswith("clip.visual.") for n in names)


@pytest.mark.parametrize("name", ["pmg-aft", "fare", "qtaft"])
def test_frozen_original_stays_unchanged(name, clip, train_set, batch):
    torch.manual_seed(2)
    method, model = prepare(name, clip, train_set, steps=1)
    before = copy.deepcopy(method.original.state_dict())
    train(method, model, batch, steps=2)
    assert not method.original.training
    assert all(not p.requires_grad for p in method.original.parameters())
    for key, value in method.original.state_dict().items():
        assert torch.equal(value, before[key]), key
    changed = any(not torch.equal(p, clip[0].state_dict()[n]) for n, p in model.state_dict().items())
    assert changed


@pytest.mark.parametrize("name", ["tecoa", "qtaft"])
def test_text_features_are_computed_once(name, clip, train_set, batch, monkeypatch):
    method, model = prepare(name, clip, train_set, steps=1)
    calls = []
    original = model.encode_text
    monkeypatch.setattr(model, "encode_text", lambda *a, **k: calls.append(1) or original(*a, **k))
    train(method, model, batch, steps=2)
    assert calls == []


def test_tecoa_loss_is_the_cross_entropy_of_the_cosine_head(clip, train_set, batch):
    from hrvlm.heads import build_head

    method, model = prepare("tecoa", clip, train_set)
    spec = get_spec("mini-finetune")
    from hrvlm.data.templates import load_templates

    head = build_head(None, model, clip[1], [list(spec.classnames)], load_templates(spec.templates))
    loss, logs = method.loss(batch, batch.images)
    expected = torch.nn.functional.cross_entropy(head(batch.images)[0], batch.labels)
    torch.testing.assert_close(loss, expected)
    assert logs == {"ce": pytest.approx(float(expected.detach()))}
    assert method.head_spec() == {"kind": "cosine"}


def test_pmg_aft_kl_terms_vanish_for_the_original_model(clip, train_set, batch):
    torch.manual_seed(3)
    method, model = prepare("pmg-aft", clip, train_set)
    model.eval()
    loss, logs = method.loss(batch, batch.images)  # model = original and clean = adv
    assert logs["kl_clean"] == pytest.approx(0.0, abs=1e-7) and logs["kl_original"] == pytest.approx(0.0, abs=1e-7)
    assert float(loss.detach()) == pytest.approx(logs["ce"], rel=1e-6)
    adv = method.perturb(batch)
    _, logs = method.loss(batch, adv)  # clean != adv: only the clean term appears
    assert logs["kl_clean"] > 1e-6 and logs["kl_original"] == pytest.approx(0.0, abs=1e-7)
    train(method, model, batch, steps=1)
    model.eval()
    _, logs = method.loss(batch, batch.images)  # the model has moved away from the original
    assert logs["kl_clean"] == pytest.approx(0.0, abs=1e-7) and logs["kl_original"] > 1e-8


def test_kl_reduction():
    torch.manual_seed(0)
    p, q = torch.randn(5, 7), torch.randn(5, 7)
    by_hand = (p.softmax(1) * (p.log_softmax(1) - q.log_softmax(1))).sum(1)
    torch.testing.assert_close(kl_to(p, q), by_hand.mean())
    torch.testing.assert_close(kl_to(p, q, "sum"), by_hand.sum())
    assert float(kl_to(p, p)) == pytest.approx(0.0, abs=1e-7)


def test_pmg_aft_authors_reduction_scales_with_the_batch(clip, train_set, batch):
    mean_method, model = prepare("pmg-aft", clip, train_set)
    sum_method = build_method("pmg-aft", {"kl_reduction": "sum"})
    sum_method.setup(mean_method.ctx)
    adv = mean_method.perturb(batch)
    _, mean_logs = mean_method.loss(batch, adv)
    _, sum_logs = sum_method.loss(batch, adv)
    assert sum_logs["kl_clean"] == pytest.approx(len(batch.labels) * mean_logs["kl_clean"], rel=1e-4)


def test_fare_loss_is_zero_without_perturbation(clip, train_set, batch):
    method, model = prepare("fare", clip, train_set, steps=0, random_start=False)
    adv = method.perturb(batch)
    assert torch.equal(adv, batch.images)
    # zero up to round-off: torch's attention takes another kernel for the frozen copy (no gradients)
    loss, logs = method.loss(batch, adv)
    assert float(loss.detach()) == pytest.approx(0.0, abs=1e-9) and set(logs) == {"l2"}
    torch.manual_seed(4)
    attacked, _ = prepare("fare", clip, train_set)
    loss, _ = attacked.loss(batch, attacked.perturb(batch))
    assert float(loss.detach()) > 1e-3


def test_fare_loss_definition(clip, train_set, batch):
    """Squared L2 of raw embeddings, summed over dimensions, averaged over the batch; clean mixing."""
    method, model = prepare("fare", clip, train_set, clean_weight=0.25)
    torch.manual_seed(5)
    adv = method.perturb(batch)
    ref = method.original.encode_image(batch.images, normalize=False)
    adv_term = (model.encode_image(adv, normalize=False) - ref).pow(2).sum(1).mean()
    clean_term = (model.encode_image(batch.images, normalize=False) - ref).pow(2).sum(1).mean()
    loss, logs = method.loss(batch, adv)
    torch.testing.assert_close(loss, 0.75 * adv_term + 0.25 * clean_term)
    assert logs["l2"] == pytest.approx(float(adv_term.detach()), rel=1e-5)


def test_infonce_matches_a_hand_computation():
    u = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    t = torch.tensor([[3.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    scale = 2.0
    r = 1 / math.sqrt(2)
    cos = [[1.0, r, 0.0],   # cos(u_i, t_j) by hand
           [0.0, r, 1.0],
           [r, 1.0, r]]
    expected = [-math.log(math.exp(scale * cos[i][i]) / sum(math.exp(scale * c) for c in cos[i])) for i in range(3)]
    got = image_to_text_infonce(u, t, scale)
    torch.testing.assert_close(got, torch.tensor(expected))
    # the positive of image 1 is the third caption once captions are reordered: rows follow captions
    assert float(image_to_text_infonce(u, t[[0, 2, 1]], scale)[1]) < float(got[1])


def test_qtaft_loss_definition(clip, train_set, batch):
    method, model = prepare("qtaft", clip, train_set)
    torch.manual_seed(6)
    adv = method.perturb(batch)
    captions = [train_set.caption(i, "detailed") for i in batch.index.tolist()]
    text = model.encode_text(clip[1](captions), normalize=True)
    feats = model.encode_image(adv, normalize=False)
    ref = method.original.encode_image(batch.images, normalize=False)
    l2 = (feats - ref).pow(2).sum(1).mean()
    i2t = image_to_text_infonce(feats, text, 1 / 0.07).mean()
    loss, logs = method.loss(batch, adv)
    torch.testing.assert_close(loss, l2 + 10 * i2t, rtol=1e-5, atol=1e-5)
    assert logs["i2t"] == pytest.approx(float(i2t.detach()), rel=1e-5)
    assert logs["logit_scale"] == pytest.approx(1 / 0.07)


def test_qtaft_logit_scale_learns_and_is_clamped(clip, train_set, batch):
    method, _ = prepare("qtaft", clip, train_set)
    (scale,) = method.extra_parameters().values()
    assert scale.requires_grad and float(scale.detach()) == pytest.approx(math.log(1 / 0.07))
    loss, _ = method.loss(batch, method.perturb(batch))
    loss.backward()
    assert scale.grad is not None and float(scale.grad) != 0.0
    with torch.no_grad():
        scale.fill_(7.0)  # beyond ln 100: clamped back before its next use
    assert float(method.scale().detach()) == pytest.approx(100.0)
    assert float(scale.detach()) == pytest.approx(math.log(100))
    frozen, _ = prepare("qtaft", clip, train_set, learn_logit_scale=False)
    assert frozen.extra_parameters() == {}


def test_qtaft_encodes_uncached_captions_per_batch(clip, train_set, batch):
    cached, _ = prepare("qtaft", clip, train_set)
    uncached, _ = prepare("qtaft", clip, train_set, cache_captions=0)
    assert uncached.caption_rows is None and cached.caption_rows is not None
    torch.testing.assert_close(uncached.targets(batch)["captions"], cached.targets(batch)["captions"])


def test_clip_does_not_fine_tune(clip):
    method = build_method("clip")
    assert list(method.trainable_parameters(clip[0])) == [] and method.extra_parameters() == {}
    assert method.perturb(None) is None
    with pytest.raises(RuntimeError, match="does not fine-tune"):
        method.loss(None, None)
    assert set(METHODS) >= {"clip", *ADVERSARIAL}


@pytest.mark.parametrize("name, settings, match", [
    ("tecoa", {"stpes": 3}, r"has no setting\(s\) \['stpes'\]"),
    ("clip", {"steps": 2}, r"has no setting\(s\) \['steps'\]"),
    ("tecoa", {"steps": -1}, "steps=-1 is invalid"),
    ("tecoa", {"steps": 2.5}, "steps=2.5 is invalid"),
    ("fare", {"step_size": 0}, "step_size=0 is invalid"),
    ("fare", {"momentum": 1.0}, r"momentum=1.0 is invalid; it must be null .* \[0, 1\)"),
    ("tecoa", {"templates": 3}, "templates=3 is invalid"),
    ("tecoa", {"logit_scale": -1}, "logit_scale=-1 is invalid"),
    ("pmg-aft", {"kl_reduction": "mean"}, "kl_reduction='mean' is invalid; it must be one of"),
    ("pmg-aft", {"w_clean": float("nan")}, "w_clean=nan is invalid"),
    ("fare", {"clean_weight": 2}, "clean_weight=2 is invalid"),
    ("qtaft", {"caption_weight": -1}, "caption_weight=-1 is invalid"),
    ("qtaft", {"captions": "vlm"}, "unknown caption source 'vlm'"),
    ("qtaft", {"captions": "file:/no/such/captions.json"}, "a captions file or folder that exists"),
    ("qtaft", {"logit_scale_init": 200.0}, "logit_scale_init=200.0 is invalid"),
    ("qtaft", {"learn_logit_scale": "yes"}, "learn_logit_scale='yes' is invalid"),
    ("qtaft", {"cache_captions": -5}, "cache_captions=-5 is invalid"),
])
def test_bad_settings_are_clear_errors(name, settings, match):
    with pytest.raises(ValueError, match=match):
        build_method(name, settings)


def test_profile_settings_build():
    profiles = json.loads(PROFILE_FILE.read_text())["profiles"]
    for profile, entry in profiles.items():
        for name in ["clip", *ADVERSARIAL]:
            settings = {k: v for k, v in entry["methods"][name].items() if k != "loop"}
            assert build_method(name, settings).name == name, (profile, name)


# -- caption sources ---------------------------------------------------------------------------------------
def test_captions_file_formats(tmp_path):
    folder = tmp_path / "captions"
    folder.mkdir()
    (folder / "n01.json").write_text(json.dumps({"train/n01/a.JPEG": "a fish in a tank", "b.JPEG": "a fish"}))
    (folder / "n02.json").write_text(json.dumps({"/data/n02/c.JPEG": "a salamander on moss"}))
    expected = {"a.JPEG": "a fish in a tank", "b.JPEG": "a fish", "c.JPEG": "a salamander on moss"}
    assert load_captions_file(folder) == expected
    assert load_captions_file(folder / "n01.json") == {k: expected[k] for k in ("a.JPEG", "b.JPEG")}
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.json").write_text(json.dumps(["a list"]))
    with pytest.raises(ValueError, match="must hold a JSON object"):
        load_captions_file(bad)
    (bad / "x.json").write_text(json.dumps({"a.jpg": 3}))
    with pytest.raises(ValueError, match="the caption of 'a.jpg' is a int"):
        load_captions_file(bad)
    (bad / "x.json").write_text('{"a.jpg": ')
    with pytest.raises(ValueError, match="not valid JSON"):
        load_captions_file(bad)
    (bad / "x.json").write_text(json.dumps({"one/a.jpg": "x"}))
    (bad / "y.json").write_text(json.dumps({"two/a.jpg": "y"}))
    with pytest.raises(ValueError, match="'a.jpg' has two different captions"):
        load_captions_file(bad)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_captions_file(tmp_path / "none.json")


class ImageFolderLike:
    """What torchvision's ImageFolder exposes: ``samples`` = [(path, label), …]."""

    def __init__(self, paths):
        self.samples = [(p, 0) for p in paths]

    def __len__(self):
        return len(self.samples)


def test_captions_file_source(tmp_path):
    path = tmp_path / "captions.json"
    path.write_text(json.dumps({"n01/a.JPEG": "first", "n01/b.JPEG": "second", "n02/c.JPEG": "third"}))
    data = ImageFolderLike(["/x/n02/c.JPEG", "/x/n01/a.JPEG", "/x/n01/b.JPEG"])
    source = caption_source(f"file:{path}", get_spec("imagenet"), data)
    batch = Batch(torch.zeros(2, 3, 4, 4), torch.zeros(2, dtype=torch.long), index=torch.tensor([2, 0]))
    assert source(batch) == ["second", "third"]
    assert source.vocabulary() == ["third", "first", "second"]
    with pytest.warns(UserWarning, match="1 training images have no caption"):
        partial = caption_source(f"file:{path}", None, ImageFolderLike(["/x/a.JPEG", "/x/zzz.JPEG"]))
    assert partial.vocabulary() == ["first", ""]
    with pytest.raises(ValueError, match="2 of 2 training images have no caption"):
        caption_source(f"file:{path}", None, ImageFolderLike(["/x/y.JPEG", "/x/z.JPEG"]))
    with pytest.raises(ValueError, match="not an image-folder dataset"):
        caption_source(f"file:{path}", None, object())
    with pytest.raises(ValueError, match="has no index"):
        source(Batch(batch.images, batch.labels))


def test_mini_world_caption_qualities(train_set, batch):
    spec = get_spec("mini-finetune")
    seen = {}
    for quality in ("name", "template", "gloss", "detailed"):
        captions = caption_source(quality, spec, train_set)(batch)
        assert captions == [train_set.caption(i, quality) for i in batch.index.tolist()]
        seen[quality] = captions
    names = [spec.classnames[int(y)] for y in batch.labels]
    assert seen["name"] == names
    assert all(n in c for n, c in zip(names, seen["template"]))
    assert all(c.startswith(("a ", "an ")) and ":" in c for c in seen["gloss"])
    for quality in ("name", "template", "gloss"):  # built from the class alone, they need no items
        assert caption_source(quality, spec)(batch) == seen[quality]
    with pytest.raises(ValueError, match="needs the training set: pass it as TrainContext.train_set"):
        caption_source("detailed", spec)
    same = [i for i in range(len(train_set)) if train_set.label(i) == train_set.label(0)][:3]
    same_class = Batch(batch.images[:3], torch.zeros(3, dtype=torch.long), index=torch.tensor(same))
    assert len(set(caption_source("name", spec, train_set)(same_class))) == 1
    assert len(set(caption_source("detailed", spec, train_set)(same_class))) == 3  # properties tell them apart


def test_wordnet_gloss_captions_for_real_classes():
    from hrvlm.hierarchy.wordnet import synset

    spec = get_spec("cifar10")
    labels = torch.tensor([0, 3])
    source = caption_source("gloss", spec)
    captions = source(Batch(torch.zeros(2, 3, 4, 4), labels))
    assert captions == [f"an airplane: {synset('airplane.n.01').definition()}",
                        f"a cat: {synset('cat.n.01').definition()}"]
    assert len(source.vocabulary()) == 10
    assert caption_source("template", spec)(Batch(torch.zeros(1, 3, 4, 4), labels[:1]))[0].count("airplane") == 1
    assert class_caption("off-center face", None, "gloss") == "an off-center face"
    with pytest.raises(ValueError, match="only the mini world builds"):
        caption_source("detailed", spec, ImageFolderLike(["/x/a.png"]))


def test_caption_source_names():
    assert parse_source("file:x.json") == ("file", "x.json")
    with pytest.raises(ValueError, match="needs a path"):
        parse_source("file:")
    with pytest.raises(ValueError, match="unknown caption source 'batch'"):
        parse_source("batch")


def test_qtaft_reads_captions_from_a_file(clip, train_set, batch, tmp_path):
    paths = [f"/data/n0{i % 2}/img{i}.JPEG" for i in range(8)]
    (tmp_path / "n00.json").write_text(json.dumps({f"n00/img{i}.JPEG": f"caption {i}" for i in range(0, 8, 2)}))
    (tmp_path / "n01.json").write_text(json.dumps({f"n01/img{i}.JPEG": f"caption {i}" for i in range(1, 8, 2)}))
    from_file, model = prepare("qtaft", clip, ImageFolderLike(paths), captions=f"file:{tmp_path}")
    assert from_file.captions(batch) == [f"caption {int(i)}" for i in batch.index]
    adv = from_file.perturb(batch)
    assert torch.isfinite(from_file.loss(batch, adv)[0])


def test_pmg_aft_authors_cosine_logits(clip, train_set, batch):
    method, model = prepare("pmg-aft", clip, train_set, logit_scale=1.0)
    logits = method.classify(batch.images)
    assert float(logits.detach().abs().max()) <= 1.0 + 1e-6  # plain cosines, as the authors' code computes them
    reference, _ = prepare("pmg-aft", clip, train_set)
    torch.testing.assert_close(reference.classify(batch.images), reference.classify.head.logit_scale * logits)


def test_pmg_aft_under_the_full_profile_is_the_authors_loss(clip, train_set, batch):
    """The full profile's PMG-AFT settings against the authors' loss written out by hand: plain cosine
    logits (their re-normalised text features), mean CE, both KLs ``KLDivLoss(reduction="sum")``."""
    from hrvlm.profiles import get_profile

    settings = get_profile("full").method("pmg-aft")
    assert settings == {"logit_scale": 1.0, "kl_reduction": "sum"}
    torch.manual_seed(1)
    method, model = prepare("pmg-aft", clip, train_set, **settings)
    adv = method.perturb(batch)
    train(method, model, batch, steps=1)  # the model moves away from the original: every term is non-zero
    loss, logs = method.loss(batch, adv)
    per_prompt = method.text_features / method.text_features.norm(dim=-1, keepdim=True)  # [C, T, D]
    text = per_prompt.mean(dim=1) / per_prompt.mean(dim=1).norm(dim=-1, keepdim=True)  # the template ensemble

    def cosines(encoder, images):
        f = encoder.encode_image(images, normalize=False)
        return (f / f.norm(dim=-1, keepdim=True)) @ text.T

    output, output_clean = cosines(model, adv), cosines(model, batch.images)
    with torch.no_grad():
        output_ori = cosines(method.original, adv)
    kl = torch.nn.KLDivLoss(reduction="sum")
    by_hand = (torch.nn.functional.cross_entropy(output, batch.labels)
               + kl(output.log_softmax(1), output_clean.softmax(1)) + kl(output.log_softmax(1), output_ori.softmax(1)))
    assert logs["kl_clean"] > 1e-6 and logs["kl_original"] > 1e-8
    torch.testing.assert_close(loss, by_hand, rtol=1e-5, atol=1e-6)
    # the training attack maximises the CE of the same plain cosines
    torch.manual_seed(2)
    expected_adv = method.attack(lambda x: torch.nn.functional.cross_entropy(
        cosines(model, x), batch.labels, reduction="none"), batch.images)
    torch.manual_seed(2)
    torch.testing.assert_close(method.perturb(batch), expected_adv)


def test_protocol_table_states_every_method_and_reads_the_loop_from_the_profile():
    from hrvlm.profiles import get_profile
    from hrvlm.book.protocols import ITEMS, protocol_table

    table = protocol_table("full")
    full = get_profile("full")
    assert set(table.index.get_level_values("method")) == set(full.methods) - {"clip"}
    assert all((m, item) in table.index for m in ("tecoa", "hrvlm") for item in ITEMS)
    assert table.loc[("fare", "lr"), "ours"] == f"{full.train['lr']:g}"
    assert table.loc[("pmg-aft", "batch"), "ours"] == str(full.train["batch_size"])
    for name in ADVERSARIAL + ["hrvlm"]:  # the attack row names the steps the full profile's method runs
        steps = build_method(name, full.method(name)).settings["steps"]
        assert f"{steps} steps" in table.loc[(name, "attack"), "ours"], name
    differing = table[table["authors"] != table["ours"]]
    assert (differing["reason"] != "").all(), differing[differing["reason"] == ""].index.tolist()
