"""The three profiles as data: which model, weights, datasets, ε unit and sizes each one uses.

``smoke`` (CI, seconds) and ``mini`` (the offline default) live in the mini world; ``full`` is the
paper's setting (CLIP ViT-B/32 from OpenAI, ImageNet, 14 zero-shot sets); ``rehearsal`` is ``full``'s
names with random-init weights, tiny sizes and fabricated datasets (:mod:`hrvlm.data.fabricate`), so
that ``full``'s code path runs end to end on a CPU.  Chapters take a profile name
and read everything else from here, so the code path is the same in all three.  ``eps_unit`` is the
analogue of 1/255: the paper's attacks at 1, 2 and 4/255 become 1×, 2× and 4× it.  The values are in
``hrvlm/resources/profiles.json``, the one home of profiles: the pretraining configuration
(:mod:`hrvlm.training.pretrain`), the training loop's settings (:mod:`hrvlm.training.train`) and every method's settings
per profile are read from there too.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from fractions import Fraction

from hrvlm.core.resources import RESOURCES
from hrvlm.data.registry import PAPER_DATASETS

PROFILE_FILE = RESOURCES / "profiles.json"


@dataclass(frozen=True)
class Profile:
    name: str
    model: str                        # open_clip / hrvlm model config
    pretrained: str                   # pretrained tag for hrvlm.models.clip.load_clip
    train_dataset: str                # the fine-tuning set (ImageNet or its analogue)
    eval_datasets: tuple[str, ...]    # the fine-tuning set first, then the zero-shot sets (default: PAPER_DATASETS)
    eps_unit: float                   # L∞ ε in [0, 1] pixel units playing the role of 1/255
    eval_n: int | None                # images per evaluation set (fixed subsets)
    base_options: dict                # profiles.json's dataset_options (e.g. mini sizes)
    pretrain: dict | None = None      # PretrainConfig overrides (None: the weights are an open_clip tag)
    train: dict | None = None         # hrvlm.training.train.TrainConfig settings
    methods: dict | None = None       # method name -> its settings (+ optional "loop": train overrides)
    book: dict | None = None          # sizes of the book's theory and hierarchy chapters (see "book_keys")
    # images per evaluation batch (a record key field); full: 256, what `hrvlm bench attacks` measures at:
    # ViT-B/32 at 64 leaves an H100 waiting on kernel launches
    eval_batch_size: int = 128
    # a folder under <cache>/fabricated: the profile reads fabricated real datasets from there (hrvlm.data.fabricate,
    # written on first use), never a real data root
    fabricated_root: str | None = None

    @property
    def dataset_options(self) -> dict:
        """Options passed to every dataset factory: ``dataset_options`` of profiles.json, and for a
        profile with a ``fabricated_root`` that root as ``root`` (fabricated first if absent)."""
        options = dict(self.base_options)
        if self.fabricated_root:
            from hrvlm.data.fabricate import ensure
            from hrvlm.core.storage import cache_dir

            options["root"] = str(ensure(cache_dir("fabricated") / self.fabricated_root))
        return options

    def eps(self, multiple: float = 1.0) -> float:
        """``multiple`` × the profile's ε unit (the analogue of ``multiple``/255)."""
        return float(multiple) * self.eps_unit

    @property
    def zeroshot_datasets(self) -> tuple[str, ...]:
        return tuple(d for d in self.eval_datasets if d != self.train_dataset)

    def method(self, name: str) -> dict:
        """The settings of method ``name`` in this profile (a ``ValueError`` if the profile lacks it)."""
        methods = self.methods or {}
        if name not in methods:
            raise ValueError(f"profile {self.name!r} has no settings for method {name!r} (it has {sorted(methods)}); "
                             f"add profiles.{self.name}.methods.{name!r} to {PROFILE_FILE.name}")
        return dict(methods[name])


@functools.lru_cache(maxsize=None)
def get_profile(name: str) -> Profile:
    """The profile ``name`` (``smoke``, ``mini``, ``full`` or ``rehearsal``)."""
    table = _table()
    if name not in table:
        raise KeyError(f"unknown profile {name!r}; choose one of {sorted(table)}")
    entry = dict(table[name])
    entry["eps_unit"] = float(Fraction(entry["eps_unit"]))
    entry["eval_datasets"] = tuple(entry.get("eval_datasets", PAPER_DATASETS))
    entry["base_options"] = entry.pop("dataset_options")
    return Profile(name=name, **entry)


def profile_names() -> list[str]:
    return sorted(_table())


@functools.lru_cache(maxsize=1)
def _table() -> dict:
    return json.loads(PROFILE_FILE.read_text())["profiles"]
