"""Fabricated copies of the real datasets: their on-disk formats, their class lists, none of their images.

``hrvlm data fabricate --root DIR`` writes every dataset of :data:`hrvlm.data.real.REAL` under ``DIR``
in the layout its loader reads: torchvision's pickled CIFAR batches, STL-10's binary arrays, PCAM's
HDF5 files, the ``.mat`` annotations of Flowers-102 and Stanford Cars, the split files of DTD, Food-101,
FGVC-Aircraft and Oxford-IIIT Pets, the folder trees of Caltech, SUN397, EuroSAT and ImageNet, and
TinyImageNet as its zip extracts.  Each class gets ``per_class`` images per split (JPEGs where the
real set has JPEGs), drawn from a seed of ``(dataset, split, class, index)`` alone, so a root is the
same on every machine.  It takes seconds and needs no network: the rehearsal of the ``full`` code path.

**Labelled as test data.**  The root gets :data:`hrvlm.data.marker.MARKER` (JSON: format, what it is, the md5 of every
file written).  :func:`hrvlm.data.marker.is_fabricated` reads it; evaluation records of a fabricated root carry
``"fabricated": true`` (also in their key, through ``dataset_options``), so do training runs, and the
tables put such numbers under "(fabricated)" columns, never beside the paper's.  torchvision checks
CIFAR, STL-10 and Flowers-102 files against the md5s of the published archives, which fabricated
files cannot match; for a fabricated root the loader checks them against the marker's md5s instead
(:func:`hrvlm.data.marker.checksums`), with torchvision's own check.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hrvlm.core.storage import atomic_folder
from hrvlm.data.marker import FORMAT, MARKER, FabricatedRootError, read_marker
from hrvlm.data.registry import load_classnames

DEFAULT_PER_CLASS = 2
# Variable-size sets get small images of a few sizes (the loader resizes and centre-crops them).
_SIZES = ((48, 40), (40, 56), (64, 48))


# ----------------------------------------------------------------------------- images
def _seed(*parts) -> int:
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:8], "little")


def class_colour(name: str, label: int) -> np.ndarray:
    """The RGB colour (uint8, 64..191) of class ``label``'s fabricated images; their mean is it + 31.5,
    which is how tests check that a loader labels each image with the class it was written for."""
    return np.frombuffer(hashlib.sha256(f"{name}/{label}".encode()).digest()[:3], np.uint8) // 2 + 64


def _pixels(name: str, split: str, label: int, index: int, size: tuple[int, int]) -> np.ndarray:
    """An ``[H, W, 3]`` uint8 image: :func:`class_colour` plus uniform noise in 0..63, from its seed alone."""
    w, h = size
    base = class_colour(name, label)
    noise = np.random.default_rng(_seed(name, split, label, index)).integers(0, 64, size=(h, w, 3), dtype=np.uint8)
    return base + noise  # 64..254: no overflow


def _jpeg(pixels: np.ndarray) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=90)
    return out.getvalue()


def _size(native: int | None, index: int) -> tuple[int, int]:
    return (native, native) if native else _SIZES[index % len(_SIZES)]


def _slug(name: str, sep: str = "_") -> str:
    return "".join(c if c.isalnum() else sep for c in name).strip(sep) or "class"


def _slugs(names: Sequence[str], sep: str = "_") -> list[str]:
    """Folder names for ``names`` that sort in label order (loaders label folders by sorted name):
    the name itself where that holds, else the name behind its zero-padded label."""
    slugs = [_slug(n, sep) for n in names]
    if slugs == sorted(slugs) and len(set(slugs)) == len(slugs):
        return slugs
    return [f"{i:03d}{sep}{s}" for i, s in enumerate(slugs)]


class _Writer:
    """Writes files under a staging folder (:func:`hrvlm.core.storage.atomic_folder`: the root appears whole
    or not at all) and remembers their md5s (for the marker)."""

    def __init__(self, root: Path, per_class: int):
        self.root, self.per_class, self.md5 = root, per_class, {}

    def bytes(self, rel: str, data: bytes) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.md5[rel] = hashlib.md5(data).hexdigest()

    def text(self, rel: str, text: str) -> None:
        self.bytes(rel, text.encode())

    def jpeg(self, rel: str, name: str, split: str, label: int, index: int, native: int | None = None) -> None:
        self.bytes(rel, _jpeg(_pixels(name, split, label, index, _size(native, index))))

    def mat(self, rel: str, arrays: dict) -> None:
        from scipy.io import savemat

        out = io.BytesIO()
        savemat(out, arrays)
        self.bytes(rel, out.getvalue())

    def items(self, classes: int):
        """``(label, index)`` of every image of a split: ``per_class`` per class."""
        return [(c, i) for c in range(classes) for i in range(self.per_class)]


# ----------------------------------------------------------------------------- one writer per format
def _cifar(w: _Writer, name: str, folder: str, files: dict, label_key: str, meta: tuple[str, str]) -> None:
    names = load_classnames(name)
    for split, batches in files.items():
        items = w.items(len(names))
        for b, batch in enumerate(batches):
            mine = items[b::len(batches)]
            data = np.stack([_pixels(name, split, c, i, (32, 32)).transpose(2, 0, 1).reshape(-1) for c, i in mine]) \
                if mine else np.zeros((0, 3072), np.uint8)
            entry = {"batch_label": f"fabricated {batch}", label_key: [c for c, _ in mine], "data": data,
                     "filenames": [f"fabricated_{c}_{i}.png" for c, i in mine]}
            w.bytes(f"{folder}/{batch}", pickle.dumps(entry, protocol=2))
    meta_file, meta_key = meta
    w.bytes(f"{folder}/{meta_file}", pickle.dumps({meta_key: [n.replace(" ", "_") for n in names]}, protocol=2))


def _stl10(w: _Writer, name: str) -> None:
    names = load_classnames(name)
    for split in ("train", "test"):
        items = w.items(len(names))
        # STL-10 stores each image as [3, 96, 96] in column-major order: the loader transposes H and W back
        x = np.stack([_pixels(name, split, c, i, (96, 96)).transpose(2, 1, 0) for c, i in items])
        w.bytes(f"stl10_binary/{split}_X.bin", x.tobytes())
        w.bytes(f"stl10_binary/{split}_y.bin", np.array([c + 1 for c, _ in items], np.uint8).tobytes())
    unlabeled = np.stack([_pixels(name, "unlabeled", 0, i, (96, 96)).transpose(2, 1, 0) for i in range(w.per_class)])
    w.bytes("stl10_binary/unlabeled_X.bin", unlabeled.tobytes())  # torchvision's check wants it for every split
    w.text("stl10_binary/class_names.txt", "\n".join(names) + "\n")


def _caltech101(w: _Writer, name: str) -> None:
    base = "caltech101/101_ObjectCategories"
    folders = _slugs(load_classnames(name))
    for label, folder in enumerate(folders):
        for i in range(w.per_class):
            w.jpeg(f"{base}/{folder}/image_{i + 1:04d}.jpg", name, "test", label, i)
    for i in range(w.per_class):  # torchvision drops this folder: it must exist
        w.jpeg(f"{base}/BACKGROUND_Google/image_{i + 1:04d}.jpg", name, "background", 0, i)


def _caltech256(w: _Writer, name: str) -> None:
    for label, classname in enumerate(load_classnames(name)):  # 001.ak47 ...: the number orders them
        folder = f"{label + 1:03d}.{_slug(classname, '-')}"
        for i in range(w.per_class):
            w.jpeg(f"caltech256/256_ObjectCategories/{folder}/{label + 1:03d}_{i + 1:04d}.jpg", name, "test", label, i)


def _pets(w: _Writer, name: str) -> None:
    breeds = _slugs(load_classnames(name))
    for split in ("trainval", "test"):
        lines = []
        for c, i in w.items(len(breeds)):
            image_id = f"{breeds[c]}_{i + 1 if split == 'trainval' else 1000 + i}"
            w.jpeg(f"oxford-iiit-pet/images/{image_id}.jpg", name, split, c, i)
            lines.append(f"{image_id} {c + 1} {1 + c % 2} {c + 1}")  # id, class, species, breed id
        w.text(f"oxford-iiit-pet/annotations/{split}.txt", "\n".join(lines) + "\n")


def _flowers(w: _Writer, name: str) -> None:
    classes, ids, labels, image_id = len(load_classnames(name)), {}, [], 0
    for split, key in (("train", "trnid"), ("val", "valid"), ("test", "tstid")):
        ids[key] = []
        for c, i in w.items(classes):
            image_id += 1
            w.jpeg(f"flowers-102/jpg/image_{image_id:05d}.jpg", name, split, c, i)
            ids[key].append(image_id)
            labels.append(c + 1)
    w.mat("flowers-102/imagelabels.mat", {"labels": np.array([labels])})
    w.mat("flowers-102/setid.mat", {k: np.array([v]) for k, v in ids.items()})


def _aircraft(w: _Writer, name: str) -> None:
    variants = load_classnames(name)
    base = "fgvc-aircraft-2013b/data"
    w.text(f"{base}/variants.txt", "\n".join(variants) + "\n")
    lines = {}
    for split in ("train", "val", "test"):
        lines[split] = []
        for c, i in w.items(len(variants)):
            image = f"{_seed(name, split, c, i) % 10_000_000:07d}"
            w.jpeg(f"{base}/images/{image}.jpg", name, split, c, i)
            lines[split].append(f"{image} {variants[c]}")
    lines["trainval"] = lines["train"] + lines["val"]
    for split, rows in lines.items():
        w.text(f"{base}/images_variant_{split}.txt", "\n".join(rows) + "\n")


def _cars(w: _Writer, name: str) -> None:
    classes = load_classnames(name)
    w.mat("stanford_cars/devkit/cars_meta.mat", {"class_names": np.array([classes], dtype=object)})
    for split, folder, annos in (("train", "cars_train", "devkit/cars_train_annos.mat"),
                                 ("test", "cars_test", "cars_test_annos_withlabels.mat")):
        rows = []
        for k, (c, i) in enumerate(w.items(len(classes))):
            fname = f"{k + 1:05d}.jpg"
            w.jpeg(f"stanford_cars/{folder}/{fname}", name, split, c, i)
            rows.append((0, 0, 40, 40, c + 1, fname))  # bbox_x1, bbox_y1, bbox_x2, bbox_y2, class, fname
        fields = [("bbox_x1", "O"), ("bbox_y1", "O"), ("bbox_x2", "O"), ("bbox_y2", "O"), ("class", "O"), ("fname", "O")]
        w.mat(f"stanford_cars/{annos}", {"annotations": np.array([rows], dtype=fields)})


def _sun397(w: _Writer, name: str) -> None:
    from hrvlm.data.registry import classname_file

    paths = classname_file(name)["paths"]  # "/a/abbey", ...
    w.text("SUN397/ClassName.txt", "\n".join(paths) + "\n")
    for c, i in w.items(len(paths)):
        w.jpeg(f"SUN397{paths[c]}/sun_{_seed(name, c, i) % 10**12:012d}.jpg", name, "test", c, i)


def _food101(w: _Writer, name: str) -> None:
    classes = _slugs(load_classnames(name))
    w.text("food-101/meta/classes.txt", "\n".join(classes) + "\n")
    for split in ("train", "test"):
        meta = {c: [] for c in classes}
        for c, i in w.items(len(classes)):
            image = f"{_seed(name, split, c, i) % 10**7}"
            w.jpeg(f"food-101/images/{classes[c]}/{image}.jpg", name, split, c, i)
            meta[classes[c]].append(f"{classes[c]}/{image}")
        w.text(f"food-101/meta/{split}.json", json.dumps(meta))


def _eurosat(w: _Writer, name: str) -> None:
    for label, folder in enumerate(_slugs(load_classnames(name))):
        for i in range(w.per_class):
            w.jpeg(f"eurosat/2750/{folder}/{folder}_{i + 1}.jpg", name, "test", label, i, native=64)


def _dtd(w: _Writer, name: str) -> None:
    classes = _slugs(load_classnames(name))
    for split in ("train", "val", "test"):
        rows = []
        for c, i in w.items(len(classes)):
            image = f"{classes[c]}_{split}_{i + 1:04d}.jpg"
            w.jpeg(f"dtd/dtd/images/{classes[c]}/{image}", name, split, c, i)
            rows.append(f"{classes[c]}/{image}")
        w.text(f"dtd/dtd/labels/{split}1.txt", "\n".join(rows) + "\n")


def _pcam(w: _Writer, name: str) -> None:
    import h5py

    for split, tag in (("train", "train"), ("val", "valid"), ("test", "test")):
        items = w.items(len(load_classnames(name)))
        for kind, array in (("x", np.stack([_pixels(name, split, c, i, (96, 96)) for c, i in items])),
                            ("y", np.array([c for c, _ in items], np.uint8).reshape(-1, 1, 1, 1))):
            out = io.BytesIO()
            with h5py.File(out, "w") as f:
                f.create_dataset(kind, data=array)
            w.bytes(f"pcam/camelyonpatch_level_2_split_{tag}_{kind}.h5", out.getvalue())


def _imagenet(w: _Writer, name: str) -> None:
    from hrvlm.data.registry import classname_file

    wnids = classname_file(name)["wnids"]
    for split in ("train", "val"):
        for c, i in w.items(len(wnids)):
            w.jpeg(f"imagenet/{split}/{wnids[c]}/{wnids[c]}_{split}_{i}.JPEG", name, split, c, i)


def _tinyimagenet(w: _Writer, name: str) -> None:
    from hrvlm.data.registry import classname_file

    wnids = classname_file(name)["wnids"]
    base = "tiny-imagenet-200"
    w.text(f"{base}/wnids.txt", "\n".join(wnids) + "\n")
    rows = []
    for c, i in w.items(len(wnids)):
        w.jpeg(f"{base}/train/{wnids[c]}/images/{wnids[c]}_{i}.JPEG", name, "train", c, i, native=64)
        image = f"val_{c * w.per_class + i}.JPEG"
        w.jpeg(f"{base}/val/images/{image}", name, "val", c, i, native=64)
        rows.append(f"{image}\t{wnids[c]}\t0\t0\t63\t63")
    w.text(f"{base}/val/val_annotations.txt", "\n".join(rows) + "\n")


WRITERS = {
    "cifar10": lambda w, n: _cifar(w, n, "cifar-10-batches-py", {
        "train": [f"data_batch_{k}" for k in range(1, 6)], "test": ["test_batch"]}, "labels", ("batches.meta", "label_names")),
    "cifar100": lambda w, n: _cifar(w, n, "cifar-100-python", {"train": ["train"], "test": ["test"]}, "fine_labels",
                                    ("meta", "fine_label_names")),
    "stl10": _stl10, "caltech101": _caltech101, "caltech256": _caltech256, "oxford_pets": _pets,
    "flowers102": _flowers, "fgvc_aircraft": _aircraft, "stanford_cars": _cars, "sun397": _sun397,
    "food101": _food101, "eurosat": _eurosat, "dtd": _dtd, "pcam": _pcam, "imagenet": _imagenet,
    "tinyimagenet": _tinyimagenet,
}


def fabricate(root: str | Path, per_class: int = DEFAULT_PER_CLASS, names: Sequence[str] | None = None) -> Path:
    """Write fabricated copies of real datasets ``names`` (default all) as the folder ``root``; returns it.

    Refuses a root that holds files but no marker (it may hold real data, which this must never mix
    with); a fabricated root is replaced whole (the same bytes for the same ``per_class``).
    """
    from hrvlm.data.real import REAL

    root = Path(root).expanduser()
    if not (isinstance(per_class, int) and per_class >= 1):
        raise ValueError(f"--per-class must be an integer >= 1, got {per_class!r}")
    names = list(REAL) if names is None else list(names)
    unknown = [n for n in names if n not in REAL]
    if unknown:
        raise KeyError(f"unknown real dataset(s) {unknown}; known: {sorted(REAL)}")
    missing_writer = sorted(set(REAL) - set(WRITERS))
    assert not missing_writer, f"no fabricator for {missing_writer}"  # a registered set without one is a bug
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"--root {root} is a file; give a folder for the fabricated datasets")
    held = read_marker(root)
    if held is None and root.is_dir() and any(root.iterdir()):
        raise FabricatedRootError(f"{root} already holds files and is not a fabricated root: fabricated test data "
                                  f"is never written beside real data; give an empty or new folder")
    if "pcam" in names:
        try:
            import h5py  # noqa: F401
        except ImportError:
            raise ValueError("fabricating pcam needs h5py (as reading it does): pip install h5py") from None
    with atomic_folder(root) as staging:  # a killed run leaves no half-written root
        writer = _Writer(staging, per_class)
        for name in names:
            WRITERS[name](writer, name)
        writer.text("README.txt", f"Fabricated test data (hrvlm data fabricate), not real datasets: see {MARKER}.\n")
        writer.bytes(MARKER, (json.dumps({
            "format": FORMAT, "per_class": per_class, "datasets": sorted(names),
            "what": "fabricated test data written by `hrvlm data fabricate`: the real datasets' file formats and "
                    "class lists with generated images; numbers computed on it are not results on the real datasets",
            "md5": dict(sorted(writer.md5.items()))}, indent=1, sort_keys=True) + "\n").encode())
    return root


def ensure(root: str | Path, per_class: int = DEFAULT_PER_CLASS) -> Path:
    """``root`` fabricated with every real dataset, writing it first if it is new or lacks one."""
    from hrvlm.data.real import REAL

    held = read_marker(root)
    if held is None or set(REAL) - set(held["datasets"]):  # new, or fabricated by an older hrvlm
        fabricate(root, per_class=held["per_class"] if held else per_class)
    return Path(root)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", required=True, help="an empty or new folder (never a real data root)")
    parser.add_argument("--per-class", type=int, default=DEFAULT_PER_CLASS,
                        help=f"images per class and split (default {DEFAULT_PER_CLASS})")
    parser.add_argument("--dataset", action="append", default=None, help="only this dataset (repeatable); default all")
