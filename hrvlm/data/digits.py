"""``uci-digits``: the real handwritten digits bundled with scikit-learn, registered on import.

The UCI Optical Recognition of Handwritten Digits set (Alpaydin & Kaynak, 1998; CC BY 4.0) as
``sklearn.datasets.load_digits`` ships it: 1,797 images of 8×8 pixels with grey levels 0..16 (the
count of inked pixels in 4×4 blocks of a 32×32 scan), 10 balanced classes, nothing to download.
It is the one set of real images every profile can evaluate offline: the mini world's tiny CLIP
knows the ten digits only as rendered glyphs, so its zero-shot accuracy here measures how far the mini
world transfers to real handwriting.

Each image becomes ``[3, S, S]`` in [0, 1] at the model's resolution ``S`` (``image_size``; 32 under
``mini``, 224 under ``full``): grey level ``v`` → ``1 − v/16`` (dark ink on white paper, as the forms
were written), upscaled bilinearly to ``S − 2b`` and framed by a white border of ``b = S // 16``
pixels (2 px at 32, 14 px at 224), so the digit never touches the edge, as the mini world's glyphs
do not.  Label = the digit; the classes are ``resources/classnames/uci-digits.json``.  The whole set is
the ``test`` split (scikit-learn's copy is the UCI test set); fixed subsets pick evaluated images.
"""
from __future__ import annotations

import functools

import torch
from torch.nn import functional as F

from hrvlm.data.registry import DatasetSpec, classname_file, load_classnames, register

NAME = "uci-digits"
LEVELS = 16  # the UCI grey levels are 0..16


@functools.lru_cache(maxsize=1)
def _arrays() -> tuple[torch.Tensor, torch.Tensor]:
    """The bundled ``(images [1797, 8, 8] float in 0..16, labels [1797] int64)``, read once."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:  # a dependency; a broken install gets the fix, not a traceback
        raise ModuleNotFoundError(f"dataset {NAME!r} needs scikit-learn: pip install scikit-learn ({err})") from None
    digits = load_digits()
    return torch.as_tensor(digits.images, dtype=torch.float32), torch.as_tensor(digits.target, dtype=torch.long)


def border(image_size: int) -> int:
    """The white frame around a digit at resolution ``image_size``: ``image_size // 16`` pixels."""
    return int(image_size) // 16


class UCIDigits(torch.utils.data.Dataset):
    """``(image [3, S, S] float in [0, 1], digit)`` for the 1,797 bundled UCI digits (module docstring)."""

    def __init__(self, split: str = "test", image_size: int = 32):
        if split != "test":
            raise ValueError(f"dataset {NAME!r} has no split {split!r}; its splits are ['test']")
        self.image_size = int(image_size)
        if self.image_size < 16:
            raise ValueError(f"{NAME}: image_size must be >= 16 (the 8-px digits plus a border), got {image_size}")
        self.images, self.labels = _arrays()
        self.classnames = load_classnames(NAME)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        ink = self.images[i] / LEVELS
        inner = self.image_size - 2 * border(self.image_size)
        paper = F.interpolate((1.0 - ink)[None, None], size=(inner, inner), mode="bilinear", align_corners=False)
        b = border(self.image_size)
        image = F.pad(paper.clamp(0.0, 1.0), (b, b, b, b), value=1.0)[0].expand(3, -1, -1).contiguous()
        return image, int(self.labels[i])


def build(split: str = "test", image_size: int = 32) -> UCIDigits:
    return UCIDigits(split, image_size)


def licence() -> str:
    """The dataset's licence, as its class-name file states it."""
    return classname_file(NAME)["licence"]


register(DatasetSpec(
    name=NAME, world="real", classnames=tuple(load_classnames(NAME)), templates="mini", factory=build,
    description="UCI handwritten digits (1,797 real 8x8 images, 10 classes; bundled with scikit-learn, "
                "no download; CC BY 4.0)",
    bundled="scikit-learn"), replace=True)
