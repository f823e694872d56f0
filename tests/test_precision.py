"""The precision policy: the decision table, and the fp16 + loss-scaling path run for real on CPU."""
import copy

import pytest
import torch
import torch.nn.functional as F

from hrvlm.attacks import PGD, ThreatModel
from hrvlm.benchmarks.gradients import input_gradients
from hrvlm.core.precision import precision_policy

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("capability, name, scaled", [((9, 0), "bf16", False), ((8, 0), "bf16", False),
                                                     ((8, 6), "bf16", False), ((7, 5), "fp16", True),
                                                     ((7, 0), "fp16", True), ((6, 1), "fp16", True)])
def test_gpus_get_bf16_from_ampere_on_and_fp16_with_loss_scaling_before(capability, name, scaled):
    prec = precision_policy("cuda:0", capability=capability)
    assert (prec.name, prec.scaled, prec.device_type) == (name, scaled, "cuda")
    assert prec.dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[name]
    assert prec.to_dict()["grad_scaler"] is scaled
    assert prec.to_dict()["attacks"] == {"bf16": "bf16", "fp16": "fp32"}[name]  # attacks never in fp16


def test_cpu_runs_float32_and_forcing_overrides():
    auto = precision_policy("cpu")
    assert (auto.dtype, auto.scaled, auto.name) == (None, False, "fp32")
    assert precision_policy(torch.device("cpu"), "fp16").scaled
    assert precision_policy("cpu", "bf16").dtype is torch.bfloat16
    assert precision_policy("cuda", "fp32", capability=(9, 0)).dtype is None
    assert precision_policy("cuda", "fp16", capability=(9, 0)).scaled  # forcing fp16 on an H100 is allowed
    with pytest.raises(ValueError, match="no native bf16; use precision 'fp16'"):
        precision_policy("cuda", "bf16", capability=(7, 5))
    with pytest.raises(ValueError, match="unknown precision 'half'; choose one of auto, bf16, fp16, fp32"):
        precision_policy("cpu", "half")


def test_float32_policy_is_a_pass_through():
    prec = precision_policy("cpu", "fp32")
    loss = torch.tensor(3.0, requires_grad=True)
    assert prec.grad_scaler().scale(loss) is loss
    with prec.autocast():
        assert not torch.is_autocast_enabled("cpu")


def _step(model, images, labels, prec, scaler, optimizer):
    with prec.autocast():
        logits = 100 * model.encode_image(images) @ F.normalize(torch.ones(3, 64), dim=-1).t()
    loss = F.cross_entropy(logits.float(), labels)
    optimizer.zero_grad()
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return logits, loss


def test_forced_fp16_path_trains_with_loss_scaling_on_cpu(clip):
    """The T4 path end to end: fp16 autocast forward, scaled backward, unscaled step, overflow skipped."""
    model = copy.deepcopy(clip[0])  # the hook below must not reach the shared fixture
    prec = precision_policy("cpu", "fp16")
    scaler = prec.grad_scaler()
    params = list(model.clip.visual.parameters())
    optimizer = torch.optim.SGD(params, lr=0.0)  # lr 0: the step's effect is only on the scaler state
    g = torch.Generator().manual_seed(0)
    images, labels = torch.rand(4, 3, 32, 32, generator=g), torch.tensor([0, 1, 2, 0])
    logits, loss = _step(model, images, labels, prec, scaler, optimizer)
    assert logits.dtype == torch.float16 and torch.isfinite(loss)
    scale = scaler.get_scale()
    assert scale == 2.0 ** 16  # the default initial scale: gradients were scaled, and were finite
    # the gradients the optimiser saw are unscaled: they match a float32 backward to fp16 accuracy
    logits32 = 100 * model.encode_image(images) @ F.normalize(torch.ones(3, 64), dim=-1).t()
    (reference,) = torch.autograd.grad(F.cross_entropy(logits32, labels), params[-1])
    torch.testing.assert_close(params[-1].grad, reference, rtol=0.05, atol=1e-3)
    # an overflowing gradient: the step is skipped and the scale halves
    params[0].register_hook(lambda grad: grad * float("inf"))
    _step(model, images, labels, prec, scaler, optimizer)
    assert scaler.get_scale() == scale / 2


def test_fp16_loses_the_input_gradient_of_a_confident_image_so_attacks_run_in_float32(clip):
    """Why the policy never attacks in fp16: for a confidently classified image the cross-entropy gradient
    (1 − p_y, here < 1e-9) is exactly zero after the half-precision backward, so PGD could not move it;
    bf16 and float32 keep it.  The fp16 policy's attacks therefore run in float32."""
    model, _ = clip
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        own = F.normalize(model.encode_image(x), dim=-1)  # each image's class is its own feature: p_y ≈ 1
    clf = lambda images: 1000 * F.normalize(model.encode_image(images), dim=-1) @ own.t()  # noqa: E731
    y = torch.arange(4)
    assert (input_gradients(clf, x, y, torch.float16) == 0).all()
    assert (input_gradients(clf, x, y, torch.bfloat16) != 0).any(dim=(1, 2, 3)).all()
    assert (input_gradients(clf, x, y, None) != 0).any(dim=(1, 2, 3)).all()
    assert precision_policy("cpu", "fp16").attack_dtype is None
    assert precision_policy("cpu", "bf16").attack_dtype is torch.bfloat16
    assert precision_policy("cpu").attack_dtype is None


def test_attacks_run_under_the_fp16_policy_on_cpu(clip):
    model, _ = clip
    prec = precision_policy("cpu", "fp16")
    clf = lambda images: 100 * model.encode_image(images) @ F.normalize(torch.eye(3, 64), dim=-1).t()  # noqa: E731
    x, y = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(2)), torch.tensor([0, 1, 2] * 2)
    threat = ThreatModel("linf", 4 / 255)
    adv = PGD(threat, steps=3, autocast=prec.attack_dtype)(clf, x, y)
    assert adv.dtype == torch.float32 and threat.contains(x, adv).all()
    with torch.no_grad():
        assert (F.cross_entropy(clf(adv), y, reduction="none") >= F.cross_entropy(clf(x), y, reduction="none")).all()
