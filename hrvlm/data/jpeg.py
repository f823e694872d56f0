"""JPEG files decoded where the model runs: the training data pipeline of ``decode="device"``.

With ``decode="workers"`` (the default) DataLoader workers open every image with PIL, resize it and
hand a float tensor to the loop: on a GPU that needs a dozen CPU cores to keep up with a bf16 training
step of ViT-B/32 (``hrvlm bench jpeg`` prints both rates).  With ``decode="device"`` the workers only
read the files' bytes (:class:`EncodedImages`); the loop decodes the whole batch at once on the device
(nvJPEG through ``torchvision.io.decode_jpeg(..., device="cuda")``; libjpeg-turbo on the CPU) and
resizes it there (:func:`decode_batch`).  Only the compressed bytes cross the PCIe bus.

Both paths apply the same geometry: shorter side to ``size`` (bicubic, antialiased), centre crop.
The pixels differ slightly (PIL's resampler against torchvision's tensor one; nvJPEG's IDCT against
libjpeg's), so the decode path is part of a training run's configuration.  Files nvJPEG cannot decode
(CMYK JPEGs, the PNG saved as ``.JPEG`` in ImageNet's training set) fall back to the CPU decoder, per file.

Only datasets that are folders of image files have bytes to hand over: ImageNet (``ImageFolder``) and
TinyImageNet, the papers' two fine-tuning sets (:func:`image_files`).
"""
from __future__ import annotations

import contextlib
import warnings
from collections import defaultdict
from pathlib import Path

import torch

DECODE_CHOICES = ("workers", "device")


@contextlib.contextmanager
def quiet_codecs():
    """torchvision 0.29 deprecates its image codecs in favour of TorchCodec (not a dependency here):
    its warning, repeated per call, is silenced inside the block."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The image decoding and encoding capabilities", DeprecationWarning)
        yield


def image_files(dataset) -> list[tuple[str, int]]:
    """``(path, label)`` of every item of a dataset that is a list of image files (torchvision's
    ``ImageFolder`` keeps them in ``samples``, :class:`~hrvlm.data.real.TinyImageNet` in ``items``);
    a ``ValueError`` for any other dataset."""
    items = getattr(dataset, "samples", None) or getattr(dataset, "items", None)
    if not items or not isinstance(items[0][0], (str, Path)):
        raise ValueError(f"decode='device' needs a dataset of image files (ImageNet, TinyImageNet); "
                         f"{type(dataset).__name__} is not one: use decode='workers'")
    return [(str(path), int(label)) for path, label in items]


class EncodedImages(torch.utils.data.Dataset):
    """``(bytes, label, index)`` items: a file's contents as a 1-D uint8 tensor, undecoded."""

    def __init__(self, files: list[tuple[str, int]]):
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        from torchvision.io import read_file

        path, label = self.files[i]
        with quiet_codecs():
            return read_file(path), label, i


def collate_encoded(items: list) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """A batch of :class:`EncodedImages` items: the byte tensors stay a list (their lengths differ)."""
    data, labels, index = zip(*items)
    return list(data), torch.tensor(labels), torch.tensor(index)


def decode_batch(data: list[torch.Tensor], device: torch.device | str, size: int) -> torch.Tensor:
    """Encoded images → ``[B, 3, size, size]`` float32 in [0, 1] on ``device``.

    One batched ``decode_jpeg`` call on ``device`` (RGB: grey and CMYK files are converted); a file it
    rejects is decoded on the CPU by ``decode_image`` (any format torchvision reads) and moved.  Then,
    per group of equal-sized images (one kernel per size, not per image): shorter side to ``size``
    (bicubic, antialiased, on uint8 as PIL does), centre crop — the geometry of ``decode="workers"``.
    """
    from torchvision.io import ImageReadMode, decode_jpeg
    from torchvision.transforms.v2 import InterpolationMode, functional as TF

    device = torch.device(device)
    with quiet_codecs():
        try:
            images = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
        except RuntimeError:  # one bad file fails the batch: decode file by file, falling back per file
            images = [_decode_one(d, device) for d in data]
    groups = defaultdict(list)
    for i, image in enumerate(images):
        groups[tuple(image.shape)].append(i)
    out = torch.empty(len(images), 3, size, size, device=device)
    for members in groups.values():
        stack = torch.stack([images[i] for i in members])
        stack = TF.resize(stack, [size], interpolation=InterpolationMode.BICUBIC, antialias=True)
        out[members] = TF.center_crop(stack, [size]).float().div_(255)
    return out


def _decode_one(data: torch.Tensor, device: torch.device) -> torch.Tensor:
    from torchvision.io import ImageReadMode, decode_image, decode_jpeg

    try:
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
    except RuntimeError:
        return decode_image(data, mode=ImageReadMode.RGB).to(device)
