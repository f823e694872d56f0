import pytest
import torch

from hrvlm.models.clip import load_clip
from hrvlm.heads.zeroshot import ZeroShotClassifier
from hrvlm.heads.zeroshot import class_embeddings
from hrvlm.data.templates import load_templates


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model, _, tokenizer = load_clip("hrvlm-tiny")
    return model, tokenizer


def test_class_embeddings_average_normalised_prompts(tiny):
    model, tokenizer = tiny
    templates = ["a photo of a {c}.", "a drawing of the {c}"]
    got = class_embeddings(model, tokenizer, ["circle", "square", "star"], templates)
    with torch.no_grad():
        star = model.encode_text(tokenizer(["a photo of a star.", "a drawing of the star"]))
    expected = torch.nn.functional.normalize(star.mean(0), dim=0)
    assert got.shape == (3, model.embed_dim)
    assert torch.allclose(got[2], expected, atol=1e-6)
    assert torch.allclose(got.norm(dim=-1), torch.ones(3), atol=1e-6)


def test_logits_are_scaled_cosines(tiny):
    model, tokenizer = tiny
    clf = ZeroShotClassifier.from_classnames(model, tokenizer, ["circle", "square"], ["a {c}"], logit_scale=50.0)
    x = torch.rand(4, 3, model.image_size, model.image_size)
    logits = clf(x)
    assert logits.shape == (4, 2) and clf.num_classes == 2
    cos = model.encode_image(x) @ clf.weights.t()
    assert torch.allclose(logits, 50.0 * cos, atol=1e-5)
    assert logits.abs().max() <= 50.0 + 1e-4


def test_default_logit_scale_is_the_models_clamped_at_100(tiny):
    model, tokenizer = tiny
    clf = ZeroShotClassifier.from_classnames(model, tokenizer, ["a", "b"], ["{c}"])
    assert clf.logit_scale == pytest.approx(min(100.0, model.logit_scale.exp().item()))


def test_gradients_reach_the_image_not_the_class_weights(tiny):
    model, tokenizer = tiny
    clf = ZeroShotClassifier.from_classnames(model, tokenizer, ["circle", "square"], ["a {c}"])
    x = torch.rand(2, 3, model.image_size, model.image_size, requires_grad=True)
    clf(x).sum().backward()
    assert x.grad.abs().sum() > 0 and not clf.weights.requires_grad


def test_template_errors(tiny):
    model, tokenizer = tiny
    with pytest.raises(ValueError, match="placeholder"):
        class_embeddings(model, tokenizer, ["circle"], ["a photo of a {}"])
    with pytest.raises(ValueError, match="non-empty list"):
        class_embeddings(model, tokenizer, ["circle"], "a {c}")
    with pytest.raises(KeyError, match="no template set"):
        load_templates("nonexistent-set")
    assert load_templates("simple") == ["a photo of a {c}."]


@pytest.fixture
def counted_tiny(tmp_cache):
    """A random-init tiny CLIP whose text passes are counted (prompts per call), in an empty cache, with
    the in-memory features forgotten before and after."""
    from hrvlm.models.clip import load_clip
    from hrvlm.text import prompts

    model, _, tokenizer = load_clip("hrvlm-tiny", "random-init")
    calls = []
    original = type(model).encode_text

    def counted(self, tokens, normalize=True, project=True):
        calls.append(len(tokens))
        return original(self, tokens, normalize=normalize, project=project)

    prompts._FEATURES.clear()
    type(model).encode_text = counted
    try:
        yield model, tokenizer, calls
    finally:
        type(model).encode_text = original
        prompts._FEATURES.clear()


def test_prompt_features_are_shared_by_equal_text_towers_and_recomputed_when_they_change(counted_tiny):
    import copy

    import torch

    from hrvlm.text.prompts import encode_prompts

    model, tokenizer, calls = counted_tiny
    names, templates = ["cat", "dog"], ["a photo of a {c}.", "a {c}."]
    first = encode_prompts(model, tokenizer, names, templates)
    other = copy.deepcopy(model)  # another model object, the same text weights, another image tower: shared
    with torch.no_grad():
        next(other.clip.visual.parameters()).add_(1.0)
    again = encode_prompts(other, tokenizer, names, templates)
    assert calls == [4] and torch.equal(first, again) and first.shape == (2, 2, first.shape[-1])
    again.zero_()  # callers get their own copy
    assert torch.equal(encode_prompts(model, tokenizer, names, templates), first) and calls == [4]
    with torch.no_grad():
        other.clip.text_projection.mul_(2.0)  # the projection (what HRVLM trains) is applied after the cache
    projected = encode_prompts(other, tokenizer, names, templates)
    assert calls == [4] and torch.equal(projected, 2 * first)
    with torch.no_grad():
        other.clip.token_embedding.weight.mul_(2.0)  # a changed text tower: recomputed
    changed = encode_prompts(other, tokenizer, names, templates)
    assert calls == [4, 4] and not torch.equal(changed, projected)
    encode_prompts(model, tokenizer, ["cat"], templates)  # other prompts: computed
    assert calls == [4, 4, 2]
    before = torch.get_num_threads()
    torch.set_num_threads(1 if before > 1 else 2)  # another thread count rounds otherwise: computed
    try:
        encode_prompts(model, tokenizer, names, templates)
    finally:
        torch.set_num_threads(before)
    assert calls == [4, 4, 2, 4]


def test_prompt_features_are_read_back_from_the_cache_folder_after_checking_them(counted_tiny):
    """Another process (the in-memory features forgotten) reads the stored features, the same values, with
    no text pass; a damaged or truncated file is not used but recomputed and rewritten."""
    import torch

    from hrvlm.core.storage import cache_dir
    from hrvlm.text import prompts

    model, tokenizer, calls = counted_tiny
    names, templates = ["cat", "dog", "bird"], ["a photo of a {c}."]
    first = prompts.encode_prompts(model, tokenizer, names, templates)
    stored, = cache_dir(prompts.CACHE_FOLDER).glob("*.safetensors")
    prompts._FEATURES.clear()
    assert torch.equal(prompts.encode_prompts(model, tokenizer, names, templates), first) and calls == [3]
    data = bytearray(stored.read_bytes())
    for damaged in (bytes(data[:-7]), bytes(data[:-1]) + bytes([data[-1] ^ 1]), b"import os"):
        stored.write_bytes(damaged)
        prompts._FEATURES.clear()
        assert torch.equal(prompts.encode_prompts(model, tokenizer, names, templates), first)
        assert stored.read_bytes() == bytes(data)
    assert calls == [3, 3, 3, 3]


def test_a_wrapped_model_shares_its_inner_models_features_and_text_pass(counted_tiny):
    """The resolution policy's wrapper reads the features of the model it wraps, and the text pass (trimmed
    or open_clip's full one) is part of what they are kept under."""
    import torch

    from hrvlm.data.real import InGraphResize
    from hrvlm.text import prompts

    model, tokenizer, calls = counted_tiny
    names, templates = ["cat", "dog"], ["a photo of a {c}."]
    device = torch.device("cpu")
    first = prompts.encode_prompts(model, tokenizer, names, templates)
    assert torch.equal(prompts.encode_prompts(InGraphResize(model), tokenizer, names, templates), first)
    assert calls == [2]
    trimmed = prompts._features_key(InGraphResize(model), ["a cat"], device)
    model.trim_text_padding = False
    try:
        assert prompts._features_key(InGraphResize(model), ["a cat"], device) != trimmed
    finally:
        model.trim_text_padding = True
