import time

import pytest
import torch
from safetensors.torch import save_file

from hrvlm.models import clip as models
from hrvlm.models.clip import PretrainedUnavailable, load_clip


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return load_clip("hrvlm-tiny")


def test_tiny_encoders_run_and_normalise(tiny):
    model, preprocess, tokenizer = tiny
    images = torch.rand(3, 3, model.image_size, model.image_size)
    feats = model.encode_image(images)
    text = model.encode_text(tokenizer(["a photo of a circle.", "a square"]))
    assert feats.shape == (3, model.embed_dim) and text.shape == (2, model.embed_dim)
    assert torch.allclose(feats.norm(dim=-1), torch.ones(3), atol=1e-5)
    raw = model.encode_image(images, normalize=False)
    assert not torch.allclose(raw.norm(dim=-1), torch.ones(3), atol=1e-3)


def test_normalisation_happens_inside_the_graph(tiny):
    model, _, _ = tiny
    images = torch.rand(2, 3, model.image_size, model.image_size)
    expected = model.clip.encode_image((images - model.mean) / model.std, normalize=True)
    assert torch.allclose(model.encode_image(images), expected, atol=1e-6)
    images.requires_grad_(True)
    model.encode_image(images).sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_preprocess_yields_unnormalised_pixels(tiny):
    from PIL import Image

    model, preprocess, _ = tiny
    x = preprocess(Image.new("RGB", (50, 40), (255, 0, 0)))
    assert x.shape == (3, model.image_size, model.image_size)
    assert x.min() >= 0 and x.max() <= 1 and torch.isclose(x[0].mean(), torch.tensor(1.0))


@pytest.mark.parametrize("bad, message", [
    (lambda s: torch.rand(2, 3, s, s) * 255, r"\[0, 1\] pixel space"),
    (lambda s: torch.rand(2, 3, s, s) - 0.5, r"\[0, 1\] pixel space"),
    (lambda s: torch.rand(2, 3, s + 4, s + 4), "must have shape"),
    (lambda s: torch.rand(3, s, s), "must have shape"),
    (lambda s: torch.randint(0, 2, (2, 3, s, s)), "floating-point"),
])
def test_bad_images_get_clear_errors(tiny, bad, message):
    model, _, _ = tiny
    with pytest.raises(ValueError, match=message):
        model.encode_image(bad(model.image_size))


def test_unchecked_skips_validation_only_inside_the_block(tiny):
    model, _, _ = tiny
    wide = torch.rand(1, 3, model.image_size, model.image_size) * 2
    with model.unchecked():
        model.encode_image(wide)
    with pytest.raises(ValueError):
        model.encode_image(wide)


def test_checkpoint_file_round_trip(tiny, tmp_path):
    model, _, _ = tiny
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in model.clip.state_dict().items()}, str(path))
    again, _, _ = load_clip("hrvlm-tiny", pretrained=path)
    x = torch.rand(2, 3, model.image_size, model.image_size)
    assert torch.equal(again.encode_image(x), model.encode_image(x))
    with pytest.raises(FileNotFoundError):
        load_clip("hrvlm-tiny", pretrained=tmp_path / "missing.safetensors")


def test_unknown_model_and_tag_are_errors():
    with pytest.raises(KeyError, match="unknown model"):
        load_clip("hrvlm-nope")
    with pytest.raises(PretrainedUnavailable, match="no pretrained tag"):
        load_clip("hrvlm-tiny", pretrained="laion2b")


def test_openai_weights_need_the_quickgelu_variant():
    with pytest.raises(ValueError, match="ViT-B-32-quickgelu"):
        models.check_pretrained_tag("ViT-B-32", "openai")
    models.check_pretrained_tag("ViT-B-32-quickgelu", "openai")  # the right pairing passes


@pytest.fixture
def hub_online_at_import(monkeypatch, tmp_path):
    """huggingface_hub as imported in a session without HF_HUB_OFFLINE, with an empty hub cache."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    return tmp_path / "hub"


def _fails_fast_in_one_line(match: str) -> None:
    start = time.perf_counter()
    with pytest.raises(PretrainedUnavailable, match=match) as err:
        load_clip("ViT-B-32-quickgelu", pretrained="openai")
    assert time.perf_counter() - start < 5
    assert "\n" not in str(err.value) and "pretrained=None" in str(err.value)


def test_offline_tag_fails_at_once_when_HF_HUB_OFFLINE_is_set_after_the_hub_was_imported(hub_online_at_import,
                                                                                           monkeypatch):
    # huggingface_hub read the variable at import; setting it now must still stop any request
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(models, "_network_reachable", lambda timeout=3.0: pytest.fail("probed the network"))
    _fails_fast_in_one_line("not cached and HF_HUB_OFFLINE is set")


def test_offline_tag_fails_at_once_when_the_network_is_unreachable(hub_online_at_import):
    # the probe hits the test's socket guard, as an offline machine's would fail: one line, no retries
    _fails_fast_in_one_line("not cached and huggingface.co is unreachable")


def test_cached_hub_weights_are_found_without_the_network(hub_online_at_import, monkeypatch):
    repo = hub_online_at_import / "models--timm--vit_base_patch32_clip_224.openai"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    weights = repo / "snapshots" / "abc123" / "open_clip_model.safetensors"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"x")
    monkeypatch.setattr(models, "_network_reachable", lambda timeout=3.0: pytest.fail("probed the network"))
    assert models.cached_weights("ViT-B-32-quickgelu", "openai") == weights
    assert models._check_hub_weights("ViT-B-32-quickgelu", "openai") is True  # load from the cache, offline


def test_float64_images_are_cast_to_the_weights_dtype(tiny):
    model, _, _ = tiny
    x = torch.rand(2, 3, model.image_size, model.image_size)
    expected = model.encode_image(x)
    assert torch.allclose(model.encode_image(x.double()), expected, atol=1e-6)
    x64 = x.double().requires_grad_()
    model.encode_image(x64).sum().backward()  # gradients reach the caller's float64 tensor
    assert x64.grad is not None and x64.grad.dtype == torch.float64


def test_the_mini_worlds_conv_tower_is_registered_and_trains():
    torch.manual_seed(0)
    model, _, _ = load_clip("hrvlm-tiny-cnn")
    assert type(model.clip.visual.trunk).__name__ == "ConvTower"
    x = torch.rand(4, 3, model.image_size, model.image_size)
    model.train()
    model.encode_image(x).sum().backward()
    assert all(p.grad is not None for p in model.clip.visual.parameters())
    model.eval()
    assert torch.equal(model.encode_image(x), model.encode_image(x))  # batch norm uses running stats


def test_the_conv_tower_runs_channels_last_and_the_vit_does_not(tiny):
    from hrvlm.models.weights import state_digest

    torch.manual_seed(0)
    model, _, _ = load_clip("hrvlm-tiny-cnn")
    conv = model.clip.visual.trunk.features[0][0].weight
    assert model.channels_last and conv.is_contiguous(memory_format=torch.channels_last)
    assert not tiny[0].channels_last  # a ViT has one convolution: nothing to gain
    x = torch.rand(6, 3, model.image_size, model.image_size)
    fast, digest = model.encode_image(x), state_digest(model)
    slow = model.set_channels_last(False).encode_image(x)
    assert state_digest(model) == digest  # the layout is not part of the weights' identity
    assert conv.is_contiguous() and not model.channels_last
    # other kernels, same function: equal up to float rounding
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", sorted({"hrvlm-tiny", "hrvlm-tiny-cnn", "ViT-B-32-quickgelu"}))
def test_the_image_size_read_from_the_config_is_the_built_models(name):
    from hrvlm.models.clip import load_clip, model_image_size

    assert model_image_size(name) == load_clip(name, None)[0].image_size
    with pytest.raises(KeyError, match="unknown model"):
        model_image_size("no-such-model")


def test_the_conv_tower_folds_eval_mode_batchnorm_into_its_convolutions_without_changing_the_function():
    """In eval mode each conv → BN → ReLU block runs as one convolution (faster): the same outputs and the
    same gradients, for the input and for the weights, as the layers run one by one."""
    from hrvlm.models.clip import load_clip

    torch.manual_seed(0)
    tower = load_clip("hrvlm-tiny-cnn", None)[0].clip.visual.trunk
    for block in tower.features:  # statistics as pretraining leaves them, not BN's initial ones
        if isinstance(block, torch.nn.Sequential):
            block[1].running_mean.uniform_(-0.5, 0.5)
            block[1].running_var.uniform_(0.5, 2.0)
            block[1].weight.data.uniform_(0.5, 1.5)
            block[1].bias.data.uniform_(-0.2, 0.2)
    tower.eval()
    x = torch.rand(4, 3, 32, 32, requires_grad=True)

    outputs = []
    for fold in (True, False):
        tower.fold_batchnorm = fold
        out = tower(x)
        grads = torch.autograd.grad(out.square().sum(), [x] + list(tower.parameters()))
        outputs.append((out.detach(), grads))
    (a, grads_a), (b, grads_b) = outputs
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
    for ga, gb in zip(grads_a, grads_b):
        assert torch.allclose(ga, gb, rtol=1e-4, atol=1e-6)
    assert not torch.equal(a, b)  # folded, the arithmetic differs (in round-off), so the two paths did run
    tower.fold_batchnorm = True
    tower.train()  # training mode: BN normalises by the batch and moves its statistics, as before
    before = tower.features[0][1].running_mean.clone()
    tower(x)
    assert not torch.equal(tower.features[0][1].running_mean, before)


@pytest.mark.parametrize("name", ["hrvlm-tiny", "ViT-B-32-quickgelu"])
def test_the_text_pass_over_the_used_columns_is_open_clips_text_pass(name):
    """Dropping the padding after the batch's longest prompt is the same function (causal mask, pooled at
    end-of-text): features and gradients equal open_clip's full-context pass (in float64, so that only the
    function is compared, not float32 rounding of differently shaped products)."""
    torch.manual_seed(0)
    model, _, tokenizer = load_clip(name, pretrained="random-init")
    model.double()
    tokens = tokenizer(["a", "a photo of a great white shark.", "a photo of a circle."])
    used = int((tokens != models.PAD_TOKEN).any(0).nonzero().max()) + 1
    assert models.trims_padding(model.clip) and used < tokens.shape[1] // 2  # a real trim, not the whole context
    full = model.clip.encode_text(tokens)
    mine = model.encode_text(tokens, normalize=False)
    torch.testing.assert_close(mine, full, rtol=1e-10, atol=1e-10)
    # the gradients reach the same weights with the same values (HRVLM and pretraining train the text tower)
    weight = model.clip.token_embedding.weight
    g_full, = torch.autograd.grad(full.square().sum(), weight)
    g_mine, = torch.autograd.grad(model.encode_text(tokens, normalize=False).square().sum(), weight)
    torch.testing.assert_close(g_mine, g_full, rtol=1e-10, atol=1e-10)


def test_a_text_tower_that_sees_later_positions_runs_over_the_whole_context(tiny):
    """Without a causal mask (or pooling the last position) padding changes the features: no trim."""
    model, _, tokenizer = tiny
    tokens = tokenizer(["a photo of a circle."])
    mask, model.clip.attn_mask = model.clip.attn_mask, None
    try:
        assert not models.trims_padding(model.clip)
        torch.testing.assert_close(model.encode_text(tokens, normalize=False), model.clip.encode_text(tokens),
                                   rtol=0, atol=0)
    finally:
        model.clip.attn_mask = mask
    pool, model.clip.text_pool_type = model.clip.text_pool_type, "last"
    try:
        assert not models.trims_padding(model.clip)
    finally:
        model.clip.text_pool_type = pool
