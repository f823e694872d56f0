import pytest
import torch

from hrvlm.models import load_clip
from hrvlm.zeroshot import ZeroShotClassifier, class_embeddings, load_templates


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
