"""hrvlm.data.jpeg: batches of JPEG bytes decoded and resized where the model runs (decode="device")."""
import io

import pytest
import torch
from PIL import Image

from hrvlm.data.jpeg import EncodedImages, collate_encoded, decode_batch, image_files
from hrvlm.data.real import TinyImageNet, image_transform


def jpeg_bytes(image: Image.Image, fmt: str = "JPEG") -> torch.Tensor:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, quality=90)
    return torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)


def photo(h: int, w: int, seed: int) -> Image.Image:
    """A smooth random colour field with fine noise (compresses like a photograph)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.nn.functional.interpolate(torch.rand(1, 3, h // 16 + 1, w // 16 + 1, generator=g), size=(h, w),
                                             mode="bicubic", align_corners=False)[0]
    pixels = ((coarse + 0.05 * torch.randn(3, h, w, generator=g)).clamp(0, 1) * 255).byte()
    return Image.fromarray(pixels.permute(1, 2, 0).numpy())


def pil_path(data: torch.Tensor, size: int) -> torch.Tensor:
    """What decode="workers" hands the loop for the same file."""
    return image_transform(size, None, "resize-first")(Image.open(io.BytesIO(data.numpy().tobytes())))


def test_decoded_batches_match_the_pil_workers_path():
    """Same geometry as the workers' PIL transform (shorter side, bicubic antialiased, centre crop), on
    landscape, portrait, square and smaller-than-target images: pixels agree to 2/255 at most and to
    0.05/255 on average (measured: 0.004/255), so both decode paths train on the same images."""
    sizes = [(375, 500), (500, 375), (333, 500), (300, 300), (64, 64), (150, 200), (375, 500)]
    data = [jpeg_bytes(photo(h, w, seed)) for seed, (h, w) in enumerate(sizes)]
    got = decode_batch(data, "cpu", 224)
    want = torch.stack([pil_path(d, 224) for d in data])
    assert got.shape == (len(sizes), 3, 224, 224) and got.dtype == torch.float32
    diff = (got - want).abs() * 255
    assert diff.max() <= 2.0 + 1e-4 and diff.mean() < 0.05


def test_one_kernel_per_size_equals_one_image_at_a_time():
    data = [jpeg_bytes(photo(*hw, seed)) for seed, hw in enumerate([(200, 300)] * 3 + [(300, 200)] * 2)]
    batched = decode_batch(data, "cpu", 96)
    single = torch.cat([decode_batch([d], "cpu", 96) for d in data])
    assert torch.equal(batched, single)


def test_grey_cmyk_and_png_files_decode_to_rgb():
    """ImageNet's training set holds grey JPEGs, CMYK JPEGs and a PNG named .JPEG: a file the batched
    JPEG decoder rejects is decoded on its own (the PNG by torchvision's generic decoder)."""
    colour = photo(120, 160, 0)
    files = {"rgb": jpeg_bytes(colour), "grey": jpeg_bytes(colour.convert("L")),
             "cmyk": jpeg_bytes(colour.convert("CMYK")), "png": jpeg_bytes(colour, "PNG")}
    got = decode_batch(list(files.values()), "cpu", 64)
    assert got.shape == (4, 3, 64, 64)
    for i, (name, data) in enumerate(files.items()):
        assert (got[i] - pil_path(data, 64)).abs().max() * 255 <= 3.0, name
    grey = got[1]
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])


def test_encoded_items_are_file_bytes_and_collate_keeps_a_list(tmp_path):
    wnids = ("n01440764", "n01443537")
    base = tmp_path / "tiny-imagenet-200"
    for k, wnid in enumerate(wnids):
        (base / "train" / wnid / "images").mkdir(parents=True)
        for i in range(2):
            photo(64, 64, 10 * k + i).save(base / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", quality=90)
    (base / "wnids.txt").write_text("\n".join(wnids))
    files = image_files(TinyImageNet(tmp_path, "train"))
    assert [label for _, label in files] == [0, 0, 1, 1]
    data = EncodedImages(files)
    raw, label, index = data[2]
    assert raw.dtype == torch.uint8 and raw.ndim == 1 and (label, index) == (1, 2)
    assert bytes(raw.numpy()) == open(files[2][0], "rb").read()
    batch, labels, indices = collate_encoded([data[i] for i in (3, 0)])
    assert isinstance(batch, list) and [len(b) for b in batch] == [len(data[3][0]), len(data[0][0])]
    assert labels.tolist() == [1, 0] and indices.tolist() == [3, 0]


def test_datasets_that_are_not_image_files_are_refused():
    with pytest.raises(ValueError, match="decode='workers'"):
        image_files(torch.utils.data.TensorDataset(torch.zeros(2, 3)))
