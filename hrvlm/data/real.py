"""The real zero-shot datasets (torchvision-backed), registered on import, and the resolution policy.

Files live under ``root``: the factory's ``root`` option, else ``$HRVLM_DATA``, else
``~/.cache/hrvlm/datasets``.  Nothing downloads unless asked (``download=True``, or
``hrvlm data fetch NAME``); a missing dataset raises :class:`DatasetMissing` with the exact command,
checked *before* torchvision is touched (some of its classes create folders, or fail cryptically).

Class names come from ``resources/classnames/<name>.json`` in torchvision's label order (sorted wnids
for ImageNet and TinyImageNet), loaded at first use; templates from ``resources/templates/<name>.json``.
Sets without an official test split (Caltech-101/256, SUN397, EuroSAT) use every image as ``test``,
as CLIP_benchmark and TeCoA do; fixed subsets (``fixed_subset``) then pick the evaluated images.

**Resolution policy** (the ε-ball depends on it: TeCoA's and FARE's
public code resize low-resolution images after, respectively before, the attack).  ``"native-then-resize"`` keeps
fixed-size low-resolution sets (CIFAR 32 px, STL-10 96, EuroSAT 64, PCAM 96, TinyImageNet 64) at their
native size and resizes inside the differentiable forward (bicubic, :func:`apply_resolution`), so the
attack's ε-ball lives in native pixels (TeCoA, PMG-AFT, TGA-ZSR, QT-AFT).  ``"resize-first"`` resizes
in the data transform, so the ε-ball lives in the model's pixels (FARE, CLIP_benchmark).  Variable-size
sets are resized (shorter side) and centre-cropped to the model's resolution under both policies.
The default is :data:`DEFAULT_RESOLUTION` = ``"native-then-resize"``: the paper compares against
TeCoA-lineage numbers, which use it.  Every evaluation record stores the policy it ran under.
"""
from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from hrvlm.core.storage import cache_dir, check_writable_folder
from hrvlm.data.archives import safe_extract, safe_extractors
from hrvlm.data.registry import DatasetSpec, load_classnames, register

DATA_ENV = "HRVLM_DATA"
RESOLUTION_POLICIES = ("native-then-resize", "resize-first")
DEFAULT_RESOLUTION = "native-then-resize"

TINYIMAGENET_URL = "https://cs231n.stanford.edu/tiny-imagenet-200.zip"
TORCHVISION_MD5 = "md5 pinned by torchvision"


class DatasetMissing(FileNotFoundError):
    """A real dataset's files are not under the data root; the message says how to get them."""


def data_root(root: str | os.PathLike | None = None) -> Path:
    """Where real datasets live: ``root``, else ``$HRVLM_DATA``, else ``<hrvlm cache>/datasets``."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get(DATA_ENV)
    return Path(env).expanduser() if env else cache_dir("datasets")


def check_resolution(policy: str) -> str:
    if policy not in RESOLUTION_POLICIES:
        raise ValueError(f"unknown resolution policy {policy!r}; use one of {RESOLUTION_POLICIES} "
                         f"(default {DEFAULT_RESOLUTION!r})")
    return policy


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bicubic resize of a ``[B, 3, H, W]`` batch to ``size``², differentiable, clamped back to [0, 1]
    (bicubic overshoots); antialiased when shrinking."""
    if tuple(images.shape[-2:]) == (size, size):
        return images
    shrink = images.shape[-1] > size or images.shape[-2] > size
    out = F.interpolate(images, size=(size, size), mode="bicubic", align_corners=False, antialias=shrink)
    return out.clamp(0.0, 1.0)


class InGraphResize(nn.Module):
    """A :class:`~hrvlm.models.clip.PixelCLIP` whose image encoder first resizes its input to the model's
    resolution (bicubic, differentiable): classifiers built on it take native-resolution images, so an
    attack's ε-ball lives in native pixels.  Text encoding, logit scale and ``unchecked`` pass through.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.inner = model
        self.image_size, self.name = model.image_size, model.name

    @property
    def logit_scale(self):
        return self.inner.logit_scale

    def unchecked(self):
        return self.inner.unchecked()

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        return self.inner.encode_image(resize_images(images, self.image_size), normalize=normalize)

    def encode_text(self, tokens: torch.Tensor, normalize: bool = True, project: bool = True) -> torch.Tensor:
        return self.inner.encode_text(tokens, normalize=normalize, project=project)

    def project_text(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.inner.project_text(pooled)


def apply_resolution(model: nn.Module, input_size: Sequence[int], policy: str = DEFAULT_RESOLUTION):
    """``(model', prepare)`` for batches of ``input_size`` (H, W) under ``policy``.

    ``prepare(images)`` is what the attack perturbs and ``model'`` what the classifiers encode with:
    ``resize-first`` resizes the batch (outside the graph) and keeps ``model``; ``native-then-resize``
    keeps the batch and resizes inside ``model'`` (:class:`InGraphResize`).  Batches already at the
    model's resolution pass through unchanged under both.
    """
    check_resolution(policy)
    size = model.image_size
    if tuple(input_size) == (size, size):
        return model, _identity
    if policy == "resize-first":
        return model, functools.partial(resize_images, size=size)
    return InGraphResize(model), _identity


def _identity(images):
    return images


def _to_rgb(image):
    return image.convert("RGB")


def image_transform(image_size: int, native_size: int | None, policy: str = DEFAULT_RESOLUTION):
    """PIL image → ``[3, S, S]`` tensor in [0, 1] (no normalisation: the model does it)."""
    from torchvision import transforms as T

    check_resolution(policy)
    steps = [T.Lambda(_to_rgb)]
    if native_size is None or policy == "resize-first":
        steps += [T.Resize(image_size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(image_size)]
    return T.Compose(steps + [T.ToTensor()])


class LazyClassnames(Sequence):
    """The class names of ``name``, read from its class-name file at first use (not at import)."""

    def __init__(self, name: str):
        self.name = name

    @functools.cached_property
    def _names(self) -> tuple[str, ...]:
        return tuple(load_classnames(self.name))

    def __getitem__(self, i):
        return self._names[i]

    def __len__(self) -> int:
        return len(self._names)

    def __repr__(self) -> str:
        return f"LazyClassnames({self.name!r})"


@dataclass(frozen=True)
class RealDataset:
    """How to find and build one real dataset: its torchvision class (or loader), split arguments and
    the files that must exist per split (relative to the data root)."""

    name: str
    loader: str                          # torchvision.datasets class name, or "ImageFolder"/"TinyImageNet"
    splits: dict                          # our split -> keyword arguments of the loader
    files: dict                           # our split -> paths (relative to root) that must exist
    native_size: int | None = None        # fixed square resolution of every image, if any
    description: str = ""
    fetch_note: str = ""                  # set where `hrvlm data fetch` cannot download it
    # (url, md5) of the one archive hrvlm downloads itself, where torchvision pins no checksum (or has no class)
    archive: tuple[str, str] | None = None
    checksum: str = TORCHVISION_MD5      # how a download is verified, for `hrvlm data list`

    def missing(self, root: Path, split: str) -> list[Path]:
        return [root / p for p in self.files[split] if not (root / p).exists()]


def _split(arg: str, values: dict) -> dict:
    return {s: {arg: v} for s, v in values.items()}


_IMAGENET_NOTE = ("ImageNet cannot be downloaded automatically (licence). Put the validation images as "
                  "one folder per wnid under ROOT/imagenet/val/n01440764/*.JPEG … (1,000 folders; the "
                  "official val tarball needs the usual valprep re-organisation), and the training set "
                  "likewise under ROOT/imagenet/train/ (a different data root: --root, root=... or $HRVLM_DATA).")
_CARS_NOTE = ("Stanford Cars cannot be downloaded automatically (torchvision's URL is gone). Get it from a mirror (e.g. the "
              "Kaggle copy) and arrange ROOT/stanford_cars/{devkit/, cars_train/, cars_test/, "
              "cars_test_annos_withlabels.mat} as torchvision.datasets.StanfordCars expects.")

REAL: dict[str, RealDataset] = {d.name: d for d in [
    RealDataset("cifar10", "CIFAR10", _split("train", {"test": False, "train": True}),
                {"test": ["cifar-10-batches-py/test_batch"], "train": ["cifar-10-batches-py/data_batch_5"]},
                32, "CIFAR-10 (10 classes, 32 px)"),
    RealDataset("cifar100", "CIFAR100", _split("train", {"test": False, "train": True}),
                {"test": ["cifar-100-python/test"], "train": ["cifar-100-python/train"]},
                32, "CIFAR-100 (100 classes, 32 px)"),
    RealDataset("stl10", "STL10", _split("split", {"test": "test", "train": "train"}),
                {"test": ["stl10_binary/test_X.bin"], "train": ["stl10_binary/train_X.bin"]},
                96, "STL-10 (10 classes, 96 px)"),
    RealDataset("caltech101", "Caltech101", {"test": {}}, {"test": ["caltech101/101_ObjectCategories"]},
                None, "Caltech-101 (101 classes; every image, BACKGROUND_Google excluded)"),
    RealDataset("caltech256", "Caltech256", {"test": {}}, {"test": ["caltech256/256_ObjectCategories"]},
                None, "Caltech-256 (257 folders incl. clutter; every image)"),
    RealDataset("oxford_pets", "OxfordIIITPet", _split("split", {"test": "test", "trainval": "trainval"}),
                {s: ["oxford-iiit-pet/images", f"oxford-iiit-pet/annotations/{s}.txt"] for s in ("test", "trainval")},
                None, "Oxford-IIIT Pets (37 breeds)"),
    RealDataset("flowers102", "Flowers102", _split("split", {"test": "test", "train": "train", "val": "val"}),
                {s: ["flowers-102/jpg", "flowers-102/imagelabels.mat", "flowers-102/setid.mat"]
                 for s in ("test", "train", "val")}, None, "Oxford Flowers-102"),
    RealDataset("fgvc_aircraft", "FGVCAircraft",
                {s: {"split": s, "annotation_level": "variant"} for s in ("test", "train", "val", "trainval")},
                {s: [f"fgvc-aircraft-2013b/data/images_variant_{s}.txt"] for s in ("test", "train", "val", "trainval")},
                None, "FGVC-Aircraft (100 variants)",
                # torchvision downloads it unverified; the md5 is the one VGG publishes beside the archive
                archive=("https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/archives/fgvc-aircraft-2013b.tar.gz",
                         "d4acdd33327262359767eeaa97a4f732"), checksum="md5 published by VGG (Oxford)"),
    RealDataset("stanford_cars", "StanfordCars", _split("split", {"test": "test", "train": "train"}),
                {"test": ["stanford_cars/devkit", "stanford_cars/cars_test", "stanford_cars/cars_test_annos_withlabels.mat"],
                 "train": ["stanford_cars/devkit", "stanford_cars/cars_train"]},
                None, "Stanford Cars (196 models)", _CARS_NOTE, checksum="manual download"),
    RealDataset("sun397", "SUN397", {"test": {}}, {"test": ["SUN397/ClassName.txt"]},
                None, "SUN397 (397 scenes; every image)"),
    RealDataset("food101", "Food101", _split("split", {"test": "test", "train": "train"}),
                {s: [f"food-101/meta/{s}.json", "food-101/images"] for s in ("test", "train")},
                None, "Food-101"),
    RealDataset("eurosat", "EuroSAT", {"test": {}}, {"test": ["eurosat/2750"]},
                64, "EuroSAT RGB (10 land-use classes, 64 px; every image)"),
    RealDataset("dtd", "DTD", {s: {"split": s, "partition": 1} for s in ("test", "train", "val")},
                {s: [f"dtd/dtd/labels/{s}1.txt", "dtd/dtd/images"] for s in ("test", "train", "val")},
                None, "Describable Textures (47 classes, partition 1)"),
    RealDataset("pcam", "PCAM", _split("split", {"test": "test", "train": "train", "val": "val"}),
                {s: [f"pcam/camelyonpatch_level_2_split_{f}_x.h5", f"pcam/camelyonpatch_level_2_split_{f}_y.h5"]
                 for s, f in (("test", "test"), ("train", "train"), ("val", "valid"))},
                96, "PatchCamelyon (2 classes, 96 px; needs h5py)"),
    RealDataset("imagenet", "ImageFolder", {"val": {"folder": "imagenet/val"}, "train": {"folder": "imagenet/train"}},
                {"val": ["imagenet/val"], "train": ["imagenet/train"]}, None,
                "ImageNet-1k from a local folder (val: 50,000 images)", _IMAGENET_NOTE, checksum="manual download"),
    RealDataset("tinyimagenet", "TinyImageNet", {"val": {}, "train": {}},
                {"val": ["tiny-imagenet-200/wnids.txt", "tiny-imagenet-200/val/val_annotations.txt"],
                 "train": ["tiny-imagenet-200/wnids.txt", "tiny-imagenet-200/train"]},
                64, "TinyImageNet (200 classes, 64 px)",
                # Stanford publishes no checksum; this is the md5 that third-party TinyImageNet loaders pin
                archive=(TINYIMAGENET_URL, "90528d7ca1a48142e341f4ef8d21d0de"),
                checksum="md5 of third-party loaders (Stanford publishes none)"),
]}


class TinyImageNet(torch.utils.data.Dataset):
    """TinyImageNet from the official zip as extracted, no re-organisation needed.

    ``train`` reads ``train/<wnid>/images/*.JPEG``; ``val`` reads ``val/images/*.JPEG`` with labels from
    ``val/val_annotations.txt`` (file name, wnid, box) instead of moving files into class folders.
    Labels index the sorted wnids of ``wnids.txt``.
    """

    def __init__(self, root: Path, split: str, transform=None):
        base = Path(root) / "tiny-imagenet-200"
        self.wnids = sorted((base / "wnids.txt").read_text().split())
        index = {w: i for i, w in enumerate(self.wnids)}
        if split == "train":
            self.items = [(p, index[w]) for w in self.wnids for p in sorted((base / "train" / w / "images").glob("*.JPEG"))]
        else:
            lines = (base / "val" / "val_annotations.txt").read_text().splitlines()
            rows = sorted(line.split("\t")[:2] for line in lines if line.strip())
            self.items = [(base / "val" / "images" / f, index[w]) for f, w in rows]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        from PIL import Image

        path, label = self.items[i]
        with Image.open(path) as image:
            image = image.convert("RGB")
        return (self.transform(image) if self.transform else image), label


def _require_files(info: RealDataset, root: Path, split: str) -> None:
    missing = info.missing(root, split)
    if missing:
        how = info.fetch_note.replace("ROOT", str(root)) if info.fetch_note else (
            f"Download it with `hrvlm data fetch {info.name} --root {root}` (or, in Python, "
            f"get_dataset({info.name!r}, split={split!r}, download=True)).")
        raise DatasetMissing(f"dataset {info.name!r} (split {split!r}) is not under {root}: missing "
                             f"{', '.join(str(p) for p in missing)}. {how}")


# torchvision classes that check their files against the md5s of the published files, and their folder
MD5_CHECKED = {"CIFAR10": "cifar-10-batches-py", "CIFAR100": "cifar-100-python", "STL10": "stl10_binary",
               "Flowers102": "flowers-102"}


def _checked_against(cls, root: Path):
    """``cls``, or for a fabricated root (:mod:`hrvlm.data.marker`) a subclass whose md5 tables are the
    marker's md5s of the fabricated files: torchvision's own integrity check then verifies them."""
    from hrvlm.data.marker import checksums

    sums, folder = checksums(root), MD5_CHECKED.get(cls.__name__)
    if not sums or folder is None:
        return cls
    attrs = {}
    for attr in ("train_list", "test_list"):  # CIFAR, STL-10: [[file, md5], ...]
        if hasattr(cls, attr):
            attrs[attr] = [[f, sums.get(f"{folder}/{f}", md5)] for f, md5 in getattr(cls, attr)]
    if isinstance(getattr(cls, "meta", None), dict):  # CIFAR's label-name file
        attrs["meta"] = {**cls.meta, "md5": sums.get(f"{folder}/{cls.meta['filename']}", cls.meta["md5"])}
    if isinstance(getattr(cls, "_file_dict", None), dict):  # Flowers-102: {key: (file, md5)}
        attrs["_file_dict"] = {k: (f, sums.get(f"{folder}/{f}", md5)) for k, (f, md5) in cls._file_dict.items()}
    return type(cls.__name__, (cls,), attrs)


def _construct(info: RealDataset, root: Path, split: str, transform, download: bool):
    if info.loader == "TinyImageNet":
        return TinyImageNet(root, split, transform)
    import torchvision

    kwargs = dict(info.splits[split])
    if info.loader == "ImageFolder":
        return torchvision.datasets.ImageFolder(str(root / kwargs["folder"]), transform=transform)
    cls = _checked_against(getattr(torchvision.datasets, info.loader), root)
    data = cls(str(root), transform=transform, download=download, **kwargs)
    if info.loader == "SUN397":  # torchvision lists its files with rglob, in the file system's order: sorted,
        pairs = sorted(zip(map(str, data._image_files), data._labels))  # item i is the same on every machine
        data._image_files, data._labels = [Path(p) for p, _ in pairs], [label for _, label in pairs]
    return data


def labelled_options(name: str, options: dict) -> dict:
    """``options`` with ``"fabricated": True`` added when ``name`` is a real dataset read from a fabricated
    root (:mod:`hrvlm.data.marker`): records and runs keyed by these options are told apart from real
    ones, and carry the label.  Unchanged for real roots and generated datasets."""
    from hrvlm.data.marker import is_fabricated

    if name not in REAL or not is_fabricated(data_root(options.get("root"))):
        return dict(options)
    return {**options, "fabricated": True}


def build(name: str, split: str = "test", root: str | os.PathLike | None = None, download: bool = False,
          image_size: int = 224, resolution: str = DEFAULT_RESOLUTION, fabricated: bool | None = None):
    """The ``split`` of real dataset ``name`` yielding ``(image [3, s, s] in [0, 1], label)``.

    ``s`` is ``image_size`` except for fixed-size low-resolution sets under ``native-then-resize``
    (their native size).  Raises :class:`DatasetMissing` if the files are absent and not ``download``.
    ``fabricated`` (set by :func:`labelled_options`), if given, must say what the root is: a record or run
    made for a fabricated root is never computed on a real one, nor the other way round.
    """
    from hrvlm.data.marker import is_fabricated

    info = REAL[name]
    if split not in info.splits:
        raise ValueError(f"dataset {name!r} has no split {split!r}; its splits are {list(info.splits)}")
    root = data_root(root)
    check_resolution(resolution)
    if fabricated is not None and bool(fabricated) != is_fabricated(root):
        raise ValueError(f"dataset {name!r}: the data root {root} is {'not ' if fabricated else ''}a fabricated "
                         f"root, but the request was made for {'fabricated' if fabricated else 'real'} data")
    if download:
        fetch(name, root, splits=(split,))
    _require_files(info, root, split)  # before importing torchvision: a missing set fails at once
    return _construct(info, root, split, image_transform(image_size, info.native_size, resolution), download=False)


def fetch(name: str, root: str | os.PathLike | None = None, splits: Sequence[str] | None = None) -> Path:
    """Download ``name`` (the given splits, default all) into ``root`` through torchvision.

    The only code path that downloads.  Datasets that cannot be downloaded (ImageNet, Stanford Cars)
    raise :class:`DatasetMissing` with the manual steps.  Every download is checked against an md5
    (:attr:`RealDataset.checksum` says whose) and every archive extracts only inside ``root``
    (:mod:`hrvlm.data.archives`).  Returns the data root.
    """
    if name not in REAL:
        raise KeyError(f"unknown real dataset {name!r}; known: {sorted(REAL)}")
    from hrvlm.data.marker import is_fabricated

    info, root = REAL[name], data_root(root)
    if is_fabricated(root):
        raise ValueError(f"{root} is a fabricated root (test data, hrvlm data fabricate): fetch real datasets into "
                         f"another data root (--root, or $HRVLM_DATA)")
    splits = list(splits or info.splits)
    unknown = [s for s in splits if s not in info.splits]
    if unknown:
        raise ValueError(f"dataset {name!r} has no split {unknown}; its splits are {list(info.splits)}")
    for split in splits:
        if not info.missing(root, split):
            continue
        if info.fetch_note:
            _require_files(info, root, split)
        check_writable_folder(root, "data root", "; give --root (or $HRVLM_DATA) a writable folder")
        root.mkdir(parents=True, exist_ok=True)
        try:
            with safe_extractors():  # torchvision's own downloads extract only inside the root too
                if info.archive is not None:
                    from torchvision.datasets.utils import download_url

                    url, md5 = info.archive
                    download_url(url, str(root), md5=md5)  # verified: a corrupt or altered file is an error
                    safe_extract(root / os.path.basename(url), root)
                else:
                    _construct(info, root, split, transform=None, download=True)
        except (OSError, RuntimeError) as err:  # urllib's URLError (offline), HTTP errors, failed checksums
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise DatasetMissing(
                f"downloading {name} (split {split!r}) from {download_source(name)} failed ({reason}). Without "
                f"network, download it elsewhere and extract it under {root} (needed: "
                f"{', '.join(str(p) for p in info.missing(root, split))})") from None
        _require_files(info, root, split)
    return root


def download_source(name: str) -> str:
    """Where ``hrvlm data fetch NAME`` downloads from (torchvision's URL for the set, as far as it says)."""
    info = REAL[name]
    if info.archive is not None:
        return info.archive[0]
    import torchvision

    cls = getattr(torchvision.datasets, info.loader, None)
    for attr in ("url", "_URL", "_DATASET_URL", "_download_url_prefix"):
        if isinstance(getattr(cls, attr, None), str):
            return getattr(cls, attr)
    resources = getattr(cls, "_RESOURCES", None)
    if resources:
        return resources[0][0].rsplit("/", 1)[0] + "/"
    return f"the URLs of torchvision.datasets.{info.loader}"


def require_files(name: str, split: str, root: str | os.PathLike | None = None) -> None:
    """Raise :class:`DatasetMissing` (saying how to get them) unless real dataset ``name``'s ``split``
    files are under the data root; checks files only, imports nothing."""
    _require_files(REAL[name], data_root(root), split)


def _register_all() -> None:
    for info in REAL.values():
        register(DatasetSpec(
            name=info.name, world="real", classnames=LazyClassnames(info.name), templates=info.name,
            factory=functools.partial(build, info.name), hierarchy=info.name, splits=tuple(info.splits),
            description=info.description, image_files=info.loader in ("ImageFolder", "TinyImageNet")),
            replace=True)


_register_all()
