"""Attacks on the tiny random-init CLIP (32 px).

The classifier's class embeddings are the image embeddings of K random "prototype" images, and the
test images are noisy prototypes: a random-init model then has a few well-separated classes whose
decisions small ε-balls can flip, without any pretrained weights.
"""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchattacks
from torch.utils._python_dispatch import TorchDispatchMode

from hrvlm.attacks import (ATTACKS, APGD, APGDT, CW, FABT, PGD, AutoAttack, MomentumPGD, Square, ThreatModel,
                           attack_settings, build_attack, ce_loss, dlr_loss, level_weights, margin_loss, pgd_maximize,
                           superclass_attack, transfer_outcome, transfer_summary,
                           universal_hierarchical_perturbation)
from hrvlm.attacks.apgd import checkpoints
from hrvlm.attacks.base import attack_context
from hrvlm.heads import build_head
from hrvlm.hierarchy.trees import Tree
from hrvlm.models.clip import load_clip
from hrvlm.heads.zeroshot import ZeroShotClassifier
from hrvlm.data.templates import load_templates

aten = torch.ops.aten
K, N = 5, 16
EPS = 2 / 255
# Fast settings per attack for the generic tests (the defaults are evaluation-sized).
FAST = {"pgd": {"steps": 4}, "mpgd": {"steps": 4}, "cw": {"steps": 4}, "apgd-ce": {"steps": 5},
        "apgd-dlr": {"steps": 5}, "autoattack": {"steps": 5}, "autoattack-standard": {"steps": 5, "queries": 50}}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def task(clip):
    """(classifier, images, labels); labels are the prototypes', so clean accuracy is high but not forced."""
    model, _ = clip
    g = torch.Generator().manual_seed(1)
    protos = torch.rand(K, 3, 32, 32, generator=g)
    with torch.no_grad():
        weights = F.normalize(model.encode_image(protos), dim=-1)
    labels = torch.arange(N) % K
    images = (0.6 * protos[labels] + 0.4 * torch.rand(N, 3, 32, 32, generator=g)).clamp(0, 1)
    return ZeroShotClassifier(model, weights, logit_scale=100.0), images, labels


def correct(forward, images, labels):
    with torch.no_grad():
        return forward(images).argmax(1) == labels


# -- the threat model ------------------------------------------------------------------------------------
def test_threat_model_rejects_bad_settings():
    with pytest.raises(ValueError, match="1/255"):
        ThreatModel("linf", 1.0 + 1e-9)
    with pytest.raises(ValueError, match="unknown norm"):
        ThreatModel("l1", 0.1)
    for bad in (-1e-3, math.nan, math.inf):
        with pytest.raises(ValueError, match="eps"):
            ThreatModel("linf", bad)
    assert ThreatModel("l2", 2.0).eps == 2.0  # an L2 budget may exceed 1
    with pytest.raises(ValueError, match="1/255"):
        build_attack("pgd", 4)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_and_random_start_are_admissible(norm):
    g = torch.Generator().manual_seed(0)
    threat = ThreatModel(norm, 0.05)
    x = torch.rand(8, 3, 6, 6, generator=g)
    delta = threat.project(torch.randn(8, 3, 6, 6, generator=g), x)
    assert threat.contains(x, threat.apply(x, delta)).all()
    start = threat.random_start(x, g)
    assert threat.contains(x, threat.apply(x, start)).all() and start.abs().sum() > 0
    big = torch.randn(8, 3, 6, 6, generator=g)
    size = big.flatten(1).abs().amax(1) if norm == "linf" else big.flatten(1).norm(dim=1)
    projected = threat.project(big).flatten(1)
    projected_size = projected.abs().amax(1) if norm == "linf" else projected.norm(dim=1)
    assert torch.allclose(projected_size, torch.full_like(size, 0.05), atol=1e-6)  # onto the sphere


def test_pgd_maximize_reaches_the_optimum_of_a_linear_objective():
    """For f(x) = <w, x> the L∞ optimum is x + ε·sign(w), clipped to [0, 1]: one step of size ε gets it."""
    g = torch.Generator().manual_seed(0)
    x, w = torch.rand(4, 3, 5, 5, generator=g), torch.randn(4, 3, 5, 5, generator=g)
    threat = ThreatModel("linf", 0.1)
    adv = pgd_maximize(lambda a: (a * w).flatten(1).sum(1), x, threat, steps=1, step_size=0.1, random_start=False)
    assert torch.allclose(adv, (x + 0.1 * w.sign()).clamp(0, 1), atol=1e-6)
    with pytest.raises(ValueError, match="per-sample"):
        pgd_maximize(lambda a: (a * w).sum(), x, threat, steps=1, step_size=0.1)


# -- every attack ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attacks_stay_admissible_and_do_not_beat_clean(task, name):
    clf, x, y = task
    attack = build_attack(name, EPS, **FAST[name])
    adv = attack(clf, x, y)
    assert adv.shape == x.shape and adv.dtype == x.dtype
    assert attack.threat.contains(x, adv).all()
    clean, robust = correct(clf, x, y), correct(clf, adv, y)
    assert robust.sum() <= clean.sum() and robust.sum() < N  # something is broken at 2/255
    cfg = attack.config()
    json.dumps(cfg)
    assert cfg["name"] == attack.name and cfg["eps"] == EPS and cfg["norm"] == "linf"
    assert {"steps", "restarts", "version"} <= set(cfg)


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_eps_zero_returns_the_clean_images(task, name):
    clf, x, y = task
    adv = build_attack(name, 0.0, **FAST[name])(clf, x, y)
    assert torch.equal(adv, x)


def test_l2_pgd_is_admissible(task):
    clf, x, y = task
    attack = build_attack("pgd", 0.5, norm="l2", steps=3)
    adv = attack(clf, x, y)
    assert attack.threat.contains(x, adv).all() and correct(clf, adv, y).sum() <= correct(clf, x, y).sum()


def test_more_steps_and_restarts_never_raise_robust_accuracy(task):
    clf, x, y = task
    threat = ThreatModel("linf", 1 / 255)
    previous = correct(clf, x, y) | True
    for steps in (0, 1, 3, 6):
        now = correct(clf, PGD(threat, steps=steps, step_size=0.5 / 255, seed=3)(clf, x, y), y)
        assert not (now & ~previous).any(), f"a sample became robust again at {steps} steps"
        previous = now
    more = correct(clf, PGD(threat, steps=6, step_size=0.5 / 255, restarts=2, seed=3)(clf, x, y), y)
    assert not (more & ~previous).any()


def test_pgd_agrees_with_torchattacks(task):
    """Same model, inputs, no random start and the same random start (hrvlm.book.validation.attack_rows, the
    validation chapter's rows): adversarial images agree to 1e-6 and robust accuracies match.  Our PGD
    keeps the per-sample worst iterate, so every image torchattacks fools, ours fools too."""
    from hrvlm.book.validation import attack_rows, require_pass

    clf, x, y = task
    rows = attack_rows(clf, x, y, eps=1 / 255, steps=6, apgd_steps=5)
    require_pass(rows)
    identical = [r.measured for r in rows if "identical" in r.check]
    assert identical == [1.0, 1.0]  # every image, on this model
    theirs = torchattacks.PGD(clf, eps=1 / 255, alpha=0.25 / 255, steps=6, random_start=False)(x, y)
    ours = PGD(ThreatModel("linf", 1 / 255), steps=6, step_size=0.25 / 255, random_start=False)(clf, x, y)
    assert not (correct(clf, ours, y) & ~correct(clf, theirs, y)).any()


def test_autoattack_is_at_least_as_strong_as_pgd20_and_torchattacks_apgd(task):
    clf, x, y = task
    eps = 1 / 255
    pgd = correct(clf, build_attack("pgd", eps, steps=20)(clf, x, y), y)
    aa = correct(clf, build_attack("autoattack", eps, steps=20)(clf, x, y), y)
    assert aa.sum() <= pgd.sum() and aa.sum() < correct(clf, x, y).sum()
    theirs = correct(clf, torchattacks.APGD(clf, eps=eps, steps=20, loss="ce", seed=0)(x, y), y)
    ours = correct(clf, APGD(ThreatModel("linf", eps), "ce", steps=20)(clf, x, y), y)
    assert ours.sum() <= theirs.sum() + 1  # same algorithm, own code: robust accuracy within 1/16


def test_apgd_checkpoints_follow_the_paper():
    # p = 0, .22, .41, .57, .70, .80, .87, .93, .99 → ⌈p·100⌉
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(1) == [1]


def test_two_classes_fall_back_to_cross_entropy(task):
    clf, x, _ = task
    binary = ZeroShotClassifier(clf.model, clf.weights[:2], logit_scale=100.0)
    y = binary(x).argmax(1).detach()
    logits = torch.randn(6, 2)
    with pytest.warns(UserWarning, match="3 classes"):
        assert torch.equal(dlr_loss(logits, torch.zeros(6, dtype=torch.long)), ce_loss(logits, torch.zeros(6, dtype=torch.long)))
    threat = ThreatModel("linf", EPS)
    aa = AutoAttack(threat, steps=5)(binary, x, y)
    apgd_ce = APGD(threat, "ce", steps=5)(binary, x, y)
    assert torch.equal(correct(binary, aa, y), correct(binary, apgd_ce, y))  # APGD-CE only, as TeCoA


def test_standard_autoattack_is_at_least_as_strong_as_tecoa_and_pgd20(task):
    """Same inputs, 10 iterations and 50 Square queries: the reference suite fools at least every
    image that the TeCoA version (APGD-CE + APGD-DLR) and PGD-20 fool here, and leaves torch's global
    RNG alone (torchattacks seeds it)."""
    clf, x, y = task
    eps = 2 / 255
    state = torch.get_rng_state()
    attack = build_attack("autoattack", eps, version="standard", steps=10, queries=50)
    adv = attack(clf, x, y)
    assert torch.equal(torch.get_rng_state(), state)
    assert attack.threat.contains(x, adv).all()
    standard = correct(clf, adv, y)
    tecoa = correct(clf, build_attack("autoattack", eps, steps=10)(clf, x, y), y)
    pgd = correct(clf, build_attack("pgd", eps, steps=20)(clf, x, y), y)
    assert standard.sum() <= tecoa.sum() <= pgd.sum() < correct(clf, x, y).sum()
    cfg = attack.config()
    assert cfg["name"] == "autoattack-standard" and cfg["autoattack_version"] == "standard"
    assert cfg["attacks"] == ["apgd-ce", "apgd-t", "fab-t", "square"] and cfg["queries"] == 50
    assert cfg == build_attack("autoattack-standard", eps, steps=10, queries=50).config()
    assert torch.equal(adv, build_attack("autoattack-standard", eps, steps=10, queries=50)(clf, x, y))


def test_torchattacks_components_get_the_reference_settings(task):
    """Our APGD-T is torchattacks' APGDT with min(9, C−1) targets (here C = 5: 4 targets), to round-off;
    each component stays in the ε-ball and the box."""
    clf, x, y = task
    threat = ThreatModel("linf", EPS)
    ours = APGDT(threat, steps=5)(clf, x, y)
    theirs = torchattacks.APGDT(clf, eps=EPS, steps=5, n_classes=K, seed=0)(x, y)
    assert (ours - theirs).abs().max() <= 1e-6
    assert torch.equal(correct(clf, ours, y), correct(clf, theirs, y)) and correct(clf, ours, y).sum() < N
    trainable = [p.requires_grad for p in clf.parameters()]
    for attack in (FABT(threat, steps=5, targets=2), Square(threat, queries=30, seed=None)):
        adv = attack(clf, x, y)
        assert threat.contains(x, adv).all() and correct(clf, adv, y).sum() <= correct(clf, x, y).sum()
        assert attack.config()["implementation"] == f"torchattacks-{torchattacks.__version__}"
    # FAB calls backward(): the parameters were frozen meanwhile, so no .grad, and thawed after
    assert all(p.grad is None for p in clf.parameters()) and any(trainable)
    assert [p.requires_grad for p in clf.parameters()] == trainable
    with pytest.raises(ValueError, match="box"):
        Square(ThreatModel("linf", EPS, box=None))


def test_standard_autoattack_on_two_and_three_classes_skips_what_is_undefined(task):
    """APGD-T needs >= 4 classes (targeted DLR uses the 4th-largest logit): skipped below, said in config;
    FAB-T (1 target = the other class) and Square still run on a binary task, as APGD-CE does."""
    clf, x, _ = task
    attack = AutoAttack(ThreatModel("linf", EPS), version="standard", steps=5, queries=30)
    assert attack.config()["min_classes"] == {"apgd-ce": 2, "apgd-t": 4, "fab-t": 2, "square": 2}
    assert attack.components_for(2) == attack.components_for(3) == ["apgd-ce", "fab-t", "square"]
    assert attack.components_for(K) == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert AutoAttack(version="tecoa").components_for(2) == ["apgd-ce"]
    binary = ZeroShotClassifier(clf.model, clf.weights[:2], logit_scale=100.0)
    y = binary(x).argmax(1).detach()
    adv = attack(binary, x, y)
    assert attack.threat.contains(x, adv).all()
    apgd_ce = correct(binary, APGD(attack.threat, "ce", steps=5)(binary, x, y), y)
    assert not (correct(binary, adv, y) & ~apgd_ce).any()  # at least APGD-CE's successes
    with pytest.raises(ValueError, match="needs >= 4 classes"):
        APGDT(attack.threat, steps=1)(binary, x, y)


def test_autoattack_settings_are_checked():
    with pytest.raises(ValueError, match="unknown AutoAttack version"):
        AutoAttack(version="plus")
    with pytest.raises(ValueError, match="standard"):
        build_attack("autoattack", EPS, queries=100)  # the TeCoA version has no Square
    with pytest.raises(ValueError, match="takes no setting 'step_size'.*steps, restarts"):
        build_attack("apgd-ce", EPS, step_size=0.5 / 255)
    with pytest.raises(ValueError, match="'loss'"):
        build_attack("apgd-dlr", EPS, loss="ce")  # the name fixes the loss
    assert attack_settings("pgd")[:2] == ["steps", "step_size"] and "seed" in attack_settings("cw")
    assert "step_size" not in attack_settings("autoattack-standard") and "version" not in attack_settings("autoattack-standard")


def test_cw_and_momentum_pgd(task):
    clf, x, y = task
    threat = ThreatModel("linf", EPS)
    assert correct(clf, CW(threat, steps=4, kappa=5.0)(clf, x, y), y).sum() < correct(clf, x, y).sum()
    # momentum 0 runs the velocity path and must reduce to plain PGD exactly (sign of a sign)
    assert torch.equal(MomentumPGD(threat, steps=3, momentum=0.0)(clf, x, y), PGD(threat, steps=3)(clf, x, y))
    assert MomentumPGD(threat).config()["momentum"] == 0.9
    with pytest.raises(ValueError, match="momentum"):
        MomentumPGD(threat, momentum=1.0)


class RowCounter(torch.nn.Module):
    """``forward`` that counts the images it scores: the work an attack does."""

    def __init__(self, forward):
        super().__init__()
        self.inner, self.rows = forward, 0

    def forward(self, images):
        self.rows += images.shape[0]
        return self.inner(images)


EARLY = {"pgd": ("pgd", {"steps": 8}), "pgd-restarts": ("pgd", {"steps": 4, "restarts": 2}),
         "mpgd": ("mpgd", {"steps": 8}), "cw": ("cw", {"steps": 8}), "apgd-ce": ("apgd-ce", {"steps": 8}),
         "apgd-dlr": ("apgd-dlr", {"steps": 8}), "autoattack": ("autoattack", {"steps": 8}),
         "pgd-l2": ("pgd", {"steps": 8, "norm": "l2"})}


@pytest.mark.parametrize("case", sorted(EARLY))
def test_stopping_early_misclassifies_the_same_images_with_less_work(task, case):
    """An attack's early-stopping copy (evaluation at level 0) fools exactly the images the plain attack
    fools, scoring fewer images, and its config says so; the plain attack's config is unchanged."""
    clf, x, y = task
    name, settings = EARLY[case]
    eps = 0.4 if settings.get("norm") == "l2" else EPS
    plain = build_attack(name, eps, **settings)
    early = plain.stopping_early()
    assert "stop_on_success" not in plain.config() and early.config()["stop_on_success"] is True
    assert {k: v for k, v in early.config().items() if k != "stop_on_success"} == plain.config()
    counted = [RowCounter(clf), RowCounter(clf)]
    adv_plain, adv_early = plain(counted[0], x, y), early(counted[1], x, y)
    fooled = ~correct(clf, adv_plain, y)
    assert 0 < int(fooled.sum()) < N  # a mixed outcome, so that agreement means something
    assert torch.equal(~correct(clf, adv_early, y), fooled)
    assert plain.threat.contains(x, adv_early).all()
    assert counted[1].rows < counted[0].rows
    assert not plain.config().get("stop_on_success")  # the copy, not the attack, changed


def test_stop_on_success_needs_keep_best_and_a_success_signal(task):
    clf, x, y = task
    threat = ThreatModel("linf", EPS)
    with pytest.raises(ValueError, match="keep_best"):
        pgd_maximize(lambda a, i: clf(a).sum(1), x, threat, 2, EPS, keep_best=False, stop_on_success=True)
    with pytest.raises(ValueError, match="success"):
        pgd_maximize(lambda a, i=None: F.cross_entropy(clf(a), y if i is None else y[i], reduction="none"), x,
                     threat, 2, EPS, stop_on_success=True)
    # an attack without an early mode returns itself
    square = Square(threat, queries=5)
    assert square.stopping_early() is square


def test_registry_errors_and_bad_labels(task):
    clf, x, y = task
    with pytest.raises(KeyError, match="known attacks.*autoattack"):
        build_attack("fgsm-ish", EPS)
    with pytest.raises(ValueError, match="int64"):
        build_attack("pgd", EPS)(clf, x, y.float())
    with pytest.raises(ValueError, match="unknown APGD loss"):
        APGD(ThreatModel(), loss="hinge")


def test_model_state_is_restored_and_parameters_get_no_grad(task):
    clf, x, y = task
    clf.train()
    try:
        with torch.no_grad():  # gradients are re-enabled inside the attack
            adv = build_attack("pgd", EPS, steps=4)(clf, x, y)
        assert torch.equal(adv, build_attack("pgd", EPS, steps=4)(clf, x, y))
        assert correct(clf, adv, y).sum() < correct(clf, x, y).sum()
        assert clf.training and clf.model.training and clf.model.check_inputs
        assert all(p.grad is None for p in clf.parameters())
    finally:
        clf.eval()
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        build_attack("pgd", EPS, steps=2)(clf, x, y)


def test_bf16_autocast_keeps_float32_delta(task):
    clf, x, y = task
    attack = PGD(ThreatModel("linf", EPS), steps=2, autocast=torch.bfloat16)
    adv = attack(clf, x, y)
    assert adv.dtype == torch.float32 and attack.threat.contains(x, adv).all()
    assert attack.config()["autocast"] == "bfloat16"


class HostSyncs(TorchDispatchMode):
    """Records every op that makes the host wait for the device: reading a tensor's value (``.item()``,
    ``bool(t)``, ``float(t)``), data-dependent shapes (``nonzero``, boolean-mask indexing), ``equal``.
    On CPU nothing waits, but the same ops would stall a GPU's queue once per attack step."""

    SYNCING = {aten._local_scalar_dense, aten.nonzero, aten.masked_select, aten.equal, aten._unique2,
               aten.unique_consecutive}
    INDEXING = {aten.index, aten.index_put, aten.index_put_}

    def __init__(self):
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        packet = func.overloadpacket
        masked = packet in self.INDEXING and any(torch.is_tensor(i) and i.dtype in (torch.bool, torch.uint8)
                                                 for i in args[1] if i is not None)
        if packet in self.SYNCING or masked:
            self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


SYNC_FREE = {"pgd": ("pgd", EPS, {"steps": 3, "restarts": 2}), "mpgd": ("mpgd", EPS, {"steps": 3}),
             "cw": ("cw", EPS, {"steps": 3}), "apgd-ce": ("apgd-ce", EPS, {"steps": 4}),
             "apgd-dlr": ("apgd-dlr", EPS, {"steps": 4}), "pgd-l2": ("pgd", 0.3, {"steps": 3, "norm": "l2"}),
             "pgd-bf16": ("pgd", EPS, {"steps": 3, "autocast": torch.bfloat16})}


@pytest.mark.parametrize("case", sorted(SYNC_FREE))
def test_attacks_never_synchronise_with_the_host(task, case):
    clf, x, y = task
    name, eps, settings = SYNC_FREE[case]
    attack = build_attack(name, eps, **settings)
    with HostSyncs() as syncs:
        adv = attack(clf, x, y)
    assert syncs.ops == []
    # the recorder itself works: the usual ways of reading a value are caught
    with HostSyncs() as syncs:
        bool((adv > 0.5).any()), adv.max().item(), adv[adv > 0.5]
    assert len(syncs.ops) == 3


def test_universal_perturbation_never_synchronises_with_the_host(task, hier):
    _, x, y = task
    tree, classifier = hier
    labels = [tree.level_labels(y, level) for level in range(tree.depth + 1)]
    with HostSyncs() as syncs:
        universal_hierarchical_perturbation(classifier, labels, x, ThreatModel("linf", EPS), steps=2, keep_best=True)
    assert syncs.ops == []


class RequiresGradProbe(torch.nn.Module):
    """Wraps a classifier and records, at every call, which of its parameters require gradients."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.seen: list[set[str]] = []

    def forward(self, images):
        self.seen.append({n for n, p in self.named_parameters() if p.requires_grad})
        return self.inner(images)


def test_attacks_freeze_parameters_and_restore_them(task):
    clf, x, y = task
    probe = RequiresGradProbe(clf)
    names = [n for n, _ in probe.named_parameters()]
    frozen = names[0]  # already frozen by the caller: must stay frozen
    probe.get_parameter(frozen).requires_grad_(False)
    try:
        build_attack("apgd-ce", EPS, steps=3)(probe, x, y)
        assert probe.seen and all(seen == set() for seen in probe.seen)
        assert {n for n, p in probe.named_parameters() if p.requires_grad} == set(names) - {frozen}
        boom = RequiresGradProbe(lambda images: 1 / 0)
        boom.register_parameter("w", torch.nn.Parameter(torch.ones(1)))
        with pytest.raises(ZeroDivisionError):
            build_attack("pgd", EPS, steps=1)(boom, x, y)
        assert boom.w.requires_grad  # restored on error too
    finally:
        probe.get_parameter(frozen).requires_grad_(True)


def test_a_training_graph_built_before_an_attack_still_reaches_the_weights(task):
    """Methods may compute a clean loss, then attack, then backpropagate both (freezing is temporary)."""
    clf, x, y = task
    clean_loss = ce_loss(clf(x), y).sum()
    adv = build_attack("pgd", EPS, steps=2)(clf, x, y)
    (clean_loss + ce_loss(clf(adv), y).sum()).backward()
    try:
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in clf.model.clip.visual.parameters())
    finally:
        clf.zero_grad(set_to_none=True)


@pytest.mark.parametrize("name", ["pgd", "cw", "apgd-dlr"])
def test_frozen_weights_leave_the_input_gradient_and_the_result_unchanged(task, name):
    clf, x, y = task
    attack = build_attack(name, EPS, steps=4)
    unfrozen = attack(lambda images: clf(images), x, y)  # a plain function: its weights keep requires_grad
    assert torch.equal(attack(clf, x, y), unfrozen)
    delta = torch.zeros_like(x, requires_grad=True)
    (reference,) = torch.autograd.grad(ce_loss(clf(x + delta), y).sum(), delta)
    with attack_context(clf):
        (frozen,) = torch.autograd.grad(ce_loss(clf(x + delta), y).sum(), delta)
    assert torch.equal(frozen, reference)


def test_margin_losses_match_the_one_hot_definition():
    logits, labels = torch.randn(7, 5, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2, 3, 4, 0, 2])
    other = logits.masked_fill(F.one_hot(labels, 5).bool(), float("-inf")).amax(1)
    true = logits[torch.arange(7), labels]
    assert torch.equal(margin_loss(logits, labels, kappa=1e9), other - true)
    top = logits.topk(3, dim=1).values
    torch.testing.assert_close(dlr_loss(logits, labels), -(true - other) / (top[:, 0] - top[:, 2] + 1e-12))


# -- hierarchical threat settings -------------------------------------------------------------------------
LEAVES = ["kit fox", "tabby cat", "sports car", "oak tree", "container ship"]


@pytest.fixture(scope="module")
def hier(clip, task):
    model, tokenizer = clip
    tree = Tree(name="t", depth=2, nodes=[LEAVES, ["mammal", "vehicle", "plant"], ["entity"]],
                names=[LEAVES, ["mammal", "vehicle", "plant"], ["entity"]],
                ancestor=np.array([[0, 1, 2, 3, 4], [0, 0, 1, 2, 1], [0, 0, 0, 0, 0]]))
    return tree, build_head(None, model, tokenizer, tree.names, load_templates("simple"))


def test_superclass_attack_at_level_zero_is_the_leaf_attack(clip, task, hier):
    model, tokenizer = clip
    _, x, y = task
    tree, classifier = hier
    attack = PGD(ThreatModel("linf", EPS), steps=3)
    adv, labels = superclass_attack(attack, classifier, tree, 0, x, y)
    leaf = ZeroShotClassifier.from_classnames(model, tokenizer, LEAVES, load_templates("simple"))
    assert torch.equal(labels, y) and torch.equal(adv, attack(leaf, x, y))
    adv1, labels1 = superclass_attack(attack, classifier, tree, 1, x, y)
    assert labels1.tolist() == [[0, 0, 1, 2, 1][int(i)] for i in y]
    assert attack.threat.contains(x, adv1).all()
    with pytest.raises(ValueError, match="single class"):
        superclass_attack(attack, classifier, tree, 2, x, y)


def test_transfer_scores(task, hier):
    _, x, y = task
    tree, classifier = hier
    s = transfer_summary(torch.tensor([True, True, False, True]), torch.tensor([False, True, False, False]))
    assert s == {"n": 4, "clean_accuracy": 0.75, "accuracy": 0.25, "success_rate": 2 / 3}
    assert math.isnan(transfer_summary(torch.zeros(2, dtype=torch.bool), torch.zeros(2, dtype=torch.bool))["success_rate"])
    adv, _ = superclass_attack(PGD(ThreatModel("linf", EPS), steps=3), classifier, tree, 1, x, y)
    out = transfer_outcome(classifier.level(0), x, adv, y)
    assert torch.equal(out["clean_correct"], correct(classifier.level(0), x, y))
    assert torch.equal(out["adv_correct"], correct(classifier.level(0), adv, y))


def test_universal_hierarchical_perturbation(task, hier):
    _, x, y = task
    tree, classifier = hier
    assert level_weights(5) == pytest.approx([1, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6])
    labels = [tree.level_labels(y, level) for level in range(tree.depth + 1)]
    threat = ThreatModel("linf", 1 / 255)
    adv = universal_hierarchical_perturbation(classifier, labels, x, threat, steps=3)
    assert threat.contains(x, adv).all()

    def objective(images):
        with torch.no_grad():
            return sum(w * ce_loss(z, t).sum() for w, z, t in zip(level_weights(2), classifier(images), labels))

    assert objective(adv) > objective(x)
    # per-level forwards (each encodes the image) give the same δ as the shared-encoder classifier
    separate = universal_hierarchical_perturbation([classifier.level(l) for l in range(3)], labels, x, threat, steps=3)
    assert (separate - adv).abs().max() <= 1e-6
    with pytest.raises(ValueError, match="weights"):
        universal_hierarchical_perturbation(classifier, labels, x, threat, weights=[1.0, 0.5])


@pytest.mark.slow
def test_autoattack_at_most_pgd20_on_the_mini_world():
    """The smoke profile's pretrained tiny CLIP (built once, then cached) on 64 mini-heldout test images:
    AutoAttack (APGD-CE + APGD-DLR, 100 iterations) is at least as strong as PGD-20."""
    from hrvlm.data import get_dataset, get_spec
    from hrvlm.profiles import get_profile

    profile = get_profile("smoke")
    model, _, tokenizer = load_clip(profile.model, pretrained=profile.pretrained)
    spec = get_spec("mini-heldout")
    data = get_dataset("mini-heldout", "test", **profile.dataset_options)
    x = torch.stack([data[i][0] for i in range(64)])
    y = torch.tensor([data[i][1] for i in range(64)])
    clf = ZeroShotClassifier.from_classnames(model, tokenizer, spec.classnames, load_templates(spec.templates))
    clean = correct(clf, x, y).sum()
    pgd = correct(clf, build_attack("pgd", profile.eps(), steps=20)(clf, x, y), y).sum()
    aa = correct(clf, build_attack("autoattack", profile.eps())(clf, x, y), y).sum()
    assert aa <= pgd <= clean and aa < clean
