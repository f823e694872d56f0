import pytest
import torch

from hrvlm.heads import HEADS, CosineHead, build_head
from hrvlm.heads.zeroshot import ZeroShotClassifier
from hrvlm.heads.zeroshot import class_embeddings

pytestmark = pytest.mark.usefixtures("one_thread")


def test_cosine_head_equals_zero_shot_classifier(clip):
    model, tokenizer = clip
    names = [["cat", "dog", "fox"], ["animal", "pet"]]
    templates = ["a photo of a {c}.", "a {c}."]
    head = build_head(None, model, tokenizer, names, templates)
    images = torch.rand(4, 3, model.image_size, model.image_size)
    reference = ZeroShotClassifier(model, class_embeddings(model, tokenizer, names[0], templates))
    logits = head(images)
    assert [z.shape for z in logits] == [(4, 3), (4, 2)]
    torch.testing.assert_close(logits[0], reference(images))
    torch.testing.assert_close(head.level(0)(images), logits[0])
    torch.testing.assert_close(head.level(1)(images), logits[1])
    assert head.spec() == {"kind": "cosine", "logit_scale": reference.logit_scale}
    rebuilt = build_head(head.spec(), model, tokenizer, names, templates)
    torch.testing.assert_close(rebuilt(images)[1], logits[1])


def test_head_errors(clip):
    model, tokenizer = clip
    with pytest.raises(ValueError, match="unknown head kind 'nope'"):
        build_head({"kind": "nope"}, model, tokenizer, [["a", "b"]], ["{c}"])
    head = build_head(None, model, tokenizer, [["a", "b"]], ["{c}"])
    with pytest.raises(ValueError, match="level must be in 0..0"):
        head.level(1)
    assert HEADS["cosine"] is CosineHead
