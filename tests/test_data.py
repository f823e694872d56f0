import argparse
import time

import numpy as np
import pytest
import torch

from hrvlm.data import PAPER_DATASETS, fixed_subset, get_dataset, get_spec, list_datasets
from hrvlm.cli import main
from hrvlm.data import cli as data_cli
from hrvlm.data.real import (DEFAULT_RESOLUTION, REAL, DatasetMissing, InGraphResize, apply_resolution,
                             image_transform)
from hrvlm.core.storage import config_hash
from hrvlm.hierarchy.trees import REAL_DATASETS
from hrvlm.profiles import get_profile
from hrvlm.data.templates import load_templates

CLASS_COUNTS = {"cifar10": 10, "cifar100": 100, "stl10": 10, "caltech101": 101, "caltech256": 257,
                "oxford_pets": 37, "flowers102": 102, "fgvc_aircraft": 100, "stanford_cars": 196, "sun397": 397,
                "food101": 101, "eurosat": 10, "dtd": 47, "pcam": 2, "imagenet": 1000, "tinyimagenet": 200}


def test_real_datasets_are_registered_with_names_templates_and_hierarchy():
    assert set(CLASS_COUNTS) == set(REAL) and set(REAL) <= set(list_datasets("real"))
    for name, count in CLASS_COUNTS.items():
        spec = get_spec(name)
        assert spec.world == "real" and spec.hierarchy == name
        assert spec.num_classes == count, name
        templates = load_templates(spec.templates)
        assert templates and all(t.format(c="x") != t for t in templates)
    assert load_templates("eurosat") == ["a centered satellite photo of {c}."]
    assert len(load_templates("openai_imagenet")) == 80


def test_the_papers_dataset_list_has_one_home():
    assert len(PAPER_DATASETS) == 15 and PAPER_DATASETS[0] == "imagenet" and set(PAPER_DATASETS) < set(REAL)
    assert set(REAL_DATASETS) == set(REAL)  # every real dataset has its forest
    for name in ("full", "rehearsal"):  # profiles.json lists no datasets for them: the paper's are the default
        assert get_profile(name).eval_datasets == PAPER_DATASETS


def test_unknown_dataset_is_a_clear_error():
    with pytest.raises(KeyError, match=r"unknown dataset 'cifar11'.*Did you mean.*cifar10"):
        get_spec("cifar11")
    with pytest.raises(ValueError, match="no split 'test'.*'val'"):
        get_dataset("imagenet", split="test")


@pytest.mark.parametrize("name", sorted(REAL))
def test_missing_real_dataset_gives_the_instruction_at_once(name, tmp_path):
    split = get_spec(name).splits[0]
    start = time.perf_counter()
    with pytest.raises(DatasetMissing) as err:
        get_dataset(name, split=split, root=tmp_path)  # the network guard would fail any download attempt
    assert time.perf_counter() - start < 2
    message = str(err.value)
    if name in ("imagenet", "stanford_cars"):
        assert "cannot be downloaded" in message and str(tmp_path / name) in message
    else:
        assert f"hrvlm data fetch {name} --root {tmp_path}" in message
    assert list(tmp_path.iterdir()) == []  # nothing created (torchvision never constructed)


def test_data_root_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("HRVLM_DATA", str(tmp_path / "elsewhere"))
    with pytest.raises(DatasetMissing, match="elsewhere"):
        get_dataset("cifar10")


def test_fixed_subset_ids_are_stable():
    ids = fixed_subset("cifar10", 10000, 1000)
    # pinned: the same 1,000 CIFAR-10 test images on every machine and every version
    assert config_hash(ids.tolist(), 16) == "cf7e44fa994afb5e" and ids[:5].tolist() == [12, 34, 35, 40, 43]
    assert np.array_equal(ids, fixed_subset("cifar10", 10000, 1000))
    assert len(np.unique(ids)) == 1000 and np.all(np.diff(ids) > 0)
    assert set(fixed_subset("cifar10", 10000, 100)) <= set(ids)  # larger n extends smaller n
    assert not np.array_equal(ids, fixed_subset("cifar100", 10000, 1000))
    assert np.array_equal(fixed_subset("cifar10", 50, None), np.arange(50))


def _tiny_imagenet(root, size=64):
    from PIL import Image

    base = root / "tiny-imagenet-200"
    wnids = ["n02", "n01", "n03"]  # unsorted on purpose: labels follow sorted wnids
    (base / "val" / "images").mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    rows = []
    for i, w in enumerate(["n03", "n01", "n02", "n01"]):
        Image.fromarray(np.full((size, size, 3), 60 * i, dtype=np.uint8)).save(base / "val" / "images" / f"val_{i}.JPEG")
        rows.append(f"val_{i}.JPEG\t{w}\t0\t0\t10\t10")
    (base / "val" / "val_annotations.txt").write_text("\n".join(rows) + "\n")
    for w in wnids:
        (base / "train" / w / "images").mkdir(parents=True)
        Image.fromarray(np.zeros((size, size, 3), dtype=np.uint8), "RGB").convert("L").save(
            base / "train" / w / "images" / f"{w}_0.JPEG")  # grayscale file: converted to RGB


def test_tinyimagenet_reads_val_annotations_without_reorganising(tmp_path):
    _tiny_imagenet(tmp_path)
    val = get_dataset("tinyimagenet", split="val", root=tmp_path, image_size=32)
    assert len(val) == 4 and [val[i][1] for i in range(4)] == [2, 0, 1, 0]
    assert val[0][0].shape == (3, 64, 64)  # native resolution under the default policy
    assert abs(val[1][0].mean().item() - 60 / 255) < 0.02
    first = get_dataset("tinyimagenet", split="val", root=tmp_path, image_size=32, resolution="resize-first")
    assert first[0][0].shape == (3, 32, 32) and 0 <= first[0][0].min() and first[0][0].max() <= 1
    train = get_dataset("tinyimagenet", split="train", root=tmp_path)
    assert sorted(train[i][1] for i in range(3)) == [0, 1, 2] and train[0][0].shape == (3, 64, 64)


def test_image_transform_follows_the_policy():
    from PIL import Image

    wide = Image.fromarray(np.zeros((40, 80), dtype=np.uint8))  # grayscale, not square
    assert image_transform(32, None)(wide).shape == (3, 32, 32)  # variable-size sets: always resized
    small = Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8))
    assert image_transform(32, 16, "native-then-resize")(small).shape == (3, 16, 16)
    assert image_transform(32, 16, "resize-first")(small).shape == (3, 32, 32)
    with pytest.raises(ValueError, match="resolution policy"):
        image_transform(32, 16, "resize-later")


class _Encoder(torch.nn.Module):
    """The smallest model with PixelCLIP's image interface (records the size it is given)."""

    image_size, name = 32, "probe"

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))
        self.seen = None

    def encode_image(self, images, normalize=True):
        self.seen = tuple(images.shape[-2:])
        return images.flatten(1).sum(1, keepdim=True) * self.w


def test_native_then_resize_attacks_native_pixels_through_the_graph():
    model = _Encoder()
    native = torch.rand(2, 3, 16, 16, requires_grad=True)
    wrapped, prepare = apply_resolution(model, (16, 16), "native-then-resize")
    assert DEFAULT_RESOLUTION == "native-then-resize" and isinstance(wrapped, InGraphResize)
    x = prepare(native)
    assert x is native
    wrapped.encode_image(x).sum().backward()
    assert model.seen == (32, 32) and native.grad.shape == (2, 3, 16, 16) and native.grad.abs().sum() > 0

    same, prepare = apply_resolution(model, (16, 16), "resize-first")
    resized = prepare(native.detach())
    assert same is model and resized.shape == (2, 3, 32, 32) and 0 <= resized.min() and resized.max() <= 1
    at_size = apply_resolution(model, (32, 32), "native-then-resize")
    assert at_size[0] is model  # nothing to resize


def _data_cli(*argv):
    parser = argparse.ArgumentParser()
    data_cli.configure_parser(parser)
    return data_cli.run(parser.parse_args(list(argv)))


def test_data_cli_lists_and_refuses_without_hanging(tmp_path, capsys):
    assert _data_cli("list", "--root", str(tmp_path)) == 0
    out = capsys.readouterr().out
    assert "cifar10" in out and "missing test,train" in out and "mini-finetune" in out
    assert main(["data", "fetch", "imagenet", "--root", str(tmp_path)]) == 2
    assert "one folder per wnid" in capsys.readouterr().err
    assert main(["data", "fetch", "mini-finetune"]) == 2
    assert "generated, not fetched" in capsys.readouterr().err
    _tiny_imagenet(tmp_path)
    assert _data_cli("fetch", "tinyimagenet", "--root", str(tmp_path)) == 0  # present: nothing downloaded
    assert "present" in capsys.readouterr().out
    with pytest.raises(ValueError, match="no split"):
        data_cli.fetch("cifar10", tmp_path, splits=["validation"])


def test_loader_processes_by_default_only_where_a_gpu_computes(monkeypatch):
    from hrvlm.data import default_num_workers

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert default_num_workers(torch.device("cpu")) == 0 and default_num_workers(torch.device("cuda")) == 8
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert default_num_workers(torch.device("cuda", 0)) == 1 and default_num_workers("cuda:0") == 1


# ----------------------------------------------------------------------------- fabricated roots
@pytest.fixture(scope="module")
def fabricated(tmp_path_factory):
    from hrvlm.data import fabricate

    return fabricate.fabricate(tmp_path_factory.mktemp("fabricated") / "root", per_class=1)


def _mean_colour(image: torch.Tensor) -> np.ndarray:
    return image.mean(dim=(1, 2)).numpy() * 255


@pytest.mark.parametrize("name", sorted(REAL))
def test_every_fabricated_dataset_and_split_loads_through_the_registry_with_its_labels(name, fabricated):
    """Every split of every real dataset loads from a fabricated root through get_dataset (torchvision's
    own loaders and checks), one image per class, each image labelled with the class it was written for
    (its mean colour is that class's), at the loader's size."""
    from hrvlm.data import fabricate

    spec, info = get_spec(name), REAL[name]
    for split in spec.splits:
        data = get_dataset(name, split, root=fabricated, fabricated=True)
        union = split == "trainval" and {"train", "val"} <= set(spec.splits)  # FGVC's: train + val
        assert len(data) == spec.num_classes * (2 if union else 1), (name, split)
        for i in np.linspace(0, len(data) - 1, min(len(data), 12)).astype(int):
            image, label = data[int(i)]
            assert image.dtype == torch.float32 and 0 <= float(image.min()) and float(image.max()) <= 1
            side = info.native_size or 224
            assert tuple(image.shape) == (3, side, side), (name, split, tuple(image.shape))
            expected = fabricate.class_colour(name, int(label)) + 31.5
            assert np.abs(_mean_colour(image) - expected).max() < 6, (name, split, int(i), int(label))


def test_a_fabricated_root_is_labelled_and_checked(fabricated, tmp_path):
    from hrvlm.data import fabricate, marker
    from hrvlm.data.real import labelled_options

    entry = marker.read_marker(fabricated)
    assert entry["datasets"] == sorted(REAL) and "not results on the real datasets" in entry["what"]
    assert labelled_options("cifar10", {"root": str(fabricated)}) == {"root": str(fabricated), "fabricated": True}
    assert labelled_options("cifar10", {"root": str(tmp_path)}) == {"root": str(tmp_path)}
    assert labelled_options("mini-heldout", {"size": "mini"}) == {"size": "mini"}
    # torchvision's md5 check still runs: against the marker's md5s, so a damaged file is refused
    copy = tmp_path / "copy"
    fabricate.fabricate(copy, per_class=1, names=["cifar10"])
    batch = copy / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes(batch.read_bytes()[:-1] + b"\0")
    with pytest.raises(RuntimeError, match="corrupted"):
        get_dataset("cifar10", "test", root=copy)
    with pytest.raises(ValueError, match="is a fabricated root"):
        get_dataset("cifar10", "test", root=fabricated, fabricated=False)


def test_fabricating_is_deterministic_and_never_writes_beside_real_data(tmp_path, capsys):
    from hrvlm.data import fabricate, marker

    a, b = (fabricate.fabricate(tmp_path / k, per_class=1, names=["dtd", "stl10"]) for k in "ab")
    assert marker.checksums(a) == marker.checksums(b) and len(marker.checksums(a)) > 100
    real = tmp_path / "real"
    (real / "cifar-10-batches-py").mkdir(parents=True)
    with pytest.raises(marker.FabricatedRootError, match="never written beside real data"):
        fabricate.fabricate(real)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "real"]  # no staging folder left
    assert main(["data", "fabricate", "--root", str(tmp_path / "c"), "--dataset", "pcam", "--per-class", "1"]) == 0
    assert "fabricated test data (not the real datasets)" in capsys.readouterr().out
    assert data_cli.status("pcam", tmp_path / "c") == "present (fabricated)"


def test_sun397_items_are_in_path_order_whatever_the_file_system_lists(fabricated, monkeypatch):
    """torchvision's SUN397 lists images with rglob (the file system's order); fixed subsets need item i
    to be the same image on every machine, so hrvlm sorts them."""
    from pathlib import Path

    listed = Path.rglob
    monkeypatch.setattr(Path, "rglob", lambda self, pattern: list(reversed(sorted(listed(self, pattern)))))
    data = get_dataset("sun397", "test", root=fabricated)
    files = [str(f) for f in data._image_files]
    assert files == sorted(files) and len(files) == get_spec("sun397").num_classes
    assert [data[i][1] for i in (0, len(data) - 1)] == [data._labels[0], data._labels[-1]]
