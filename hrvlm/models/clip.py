"""CLIP models through open_clip, taking images in [0, 1] pixel space.

CLIP's mean/std normalisation happens *inside* the module (as FARE does), so attacks, ε-balls and
clamping all live in pixel space, whatever the backbone.  Model architectures are open_clip configs:
the built-in ones (``ViT-B-32-quickgelu`` …) plus the tiny ones shipped as JSON in
``hrvlm/resources/model_configs`` (registered on first use).
"""
from __future__ import annotations

import functools
import logging
import os
import warnings
import socket
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from hrvlm.core.resources import RESOURCES

CONFIG_DIR = RESOURCES / "model_configs"

_HUB_HOST = ("huggingface.co", 443)

# huggingface_hub imports tqdm.auto, which warns in kernels without ipywidgets; bars are not needed there.
warnings.filterwarnings("ignore", message="IProgress not found")


class PretrainedUnavailable(RuntimeError):
    """Pretrained weights were asked for but cannot be had (no network, unknown tag)."""


class ConvTower(nn.Module):
    """A small VGG-style CNN image tower for 32-px mini-world images, in timm's model interface.

    open_clip builds non-ViT towers through timm by name, so the tower is registered with timm as
    ``hrvlm_convnet<width>`` (see :func:`register_configs`).  Why a CNN: on the mini world a 2-layer ViT
    and timm's stride-4-stem ResNets learn shapes several times slower per CPU second than three
    3×3-conv stages that downsample late (measured in the mini-world chapter's notes).
    """

    # All convolutions: stored and fed channels-last, a step (forward and backward) of batch 128 takes
    # 0.080 s instead of 0.100 s on two CPU threads (see :meth:`PixelCLIP.set_channels_last`).
    prefers_channels_last = True

    def __init__(self, width: int = 16, num_classes: int = 0, global_pool: str = "avg", in_chans: int = 3, **_):
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

        w = width
        self.features = nn.Sequential(block(in_chans, w), block(w, w), nn.MaxPool2d(2), block(w, 2 * w),
                                      block(2 * w, 2 * w), nn.MaxPool2d(2), block(2 * w, 4 * w), nn.MaxPool2d(2),
                                      block(4 * w, 4 * w))
        self.num_features = 4 * w
        self.default_cfg: dict = {}  # timm metadata open_clip reads (no pretrained weights exist)
        self.reset_classifier(num_classes, global_pool)

    def reset_classifier(self, num_classes: int, global_pool: str = "avg") -> None:
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()) if global_pool else nn.Identity()
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    # eval-mode BatchNorm folded into its convolution (:func:`_folded_block`); off only to measure what it buys
    # (`hrvlm bench attacks`)
    fold_batchnorm = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.features:
            fold = self.fold_batchnorm and isinstance(layer, nn.Sequential) and not layer[1].training
            x = _folded_block(layer, x) if fold else layer(x)
        return self.fc(self.pool(x))


def _folded_block(block: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """conv → BatchNorm (eval mode) → ReLU as one convolution: BN(W∗x) = (s·W)∗x + (β − s·μ) with
    s = γ / √(σ² + ε), BN's own guard ε.  The same function, and the same gradients for W, γ and β (autograd
    goes through the product), with half the backward passes: about 1.5× faster forward and backward on one CPU
    thread (measured on 32-px batches; BN's backward was a fifth of the time).  In training mode (pretraining,
    ``batchnorm="batch"``) BN runs as it is, its statistics moving."""
    conv, bn, _ = block
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    weight = conv.weight * scale.view(-1, 1, 1, 1)
    return F.relu(F.conv2d(x, weight, bn.bias - bn.running_mean * scale, conv.stride, conv.padding), inplace=True)


CONV_TOWER_WIDTHS = (16,)


@functools.lru_cache(maxsize=1)
def register_configs() -> list[str]:
    """Register hrvlm's JSON model configs with open_clip, and its image towers with timm, once."""
    import open_clip
    from timm.models import is_model, register_model

    for width in CONV_TOWER_WIDTHS:
        name = f"hrvlm_convnet{width}"
        if not is_model(name):
            factory = functools.partial(lambda w, pretrained=False, **kw: ConvTower(w, **kw), width)
            factory.__name__, factory.__module__ = name, __name__
            register_model(factory)
    open_clip.add_model_config(CONFIG_DIR)
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


class PixelCLIP(nn.Module):
    """An open_clip CLIP whose image input is a float tensor ``[B, 3, S, S]`` with values in [0, 1].

    ``check_inputs`` validates shape and range on every call; attacks, which clamp their own iterates,
    may switch it off (:meth:`unchecked`) to avoid a host synchronisation per step.
    """

    def __init__(self, clip: nn.Module, mean, std, image_size: int, name: str, pretrained: str | None,
                 head_spec: dict | None = None):
        super().__init__()
        self.clip = clip
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.image_size = int(image_size)
        self.name = name
        self.pretrained = pretrained
        # the classification head these weights are meant for (hrvlm.heads.build_head; None = cosine):
        # a fine-tuned run sets it, evaluation builds and records it
        self.head_spec = head_spec
        self.check_inputs = True
        self.channels_last = False
        # run the text tower over a batch's used columns only (trimmed_text_features): off where weights are
        # made whose cache key predates it (pretraining), since the trim changes float rounding
        self.trim_text_padding = True

    @property
    def logit_scale(self) -> nn.Parameter:
        return self.clip.logit_scale

    @property
    def embed_dim(self) -> int:
        return int(self.clip.text_projection.shape[1])

    def check_images(self, images: torch.Tensor) -> None:
        """Raise a ValueError that says what to do if ``images`` is not a non-empty floating-point
        ``[B, 3, S, S]`` batch of finite values in [0, 1] (NaN passes a range test, so it is checked first)."""
        s = self.image_size
        if not torch.is_tensor(images) or not images.is_floating_point():
            raise ValueError(f"{self.name}: images must be a floating-point tensor, got {type(images).__name__}"
                             f"{'' if not torch.is_tensor(images) else ' of ' + str(images.dtype)}")
        if images.dim() != 4 or images.shape[1] != 3 or tuple(images.shape[2:]) != (s, s):
            raise ValueError(f"{self.name}: images must have shape [batch, 3, {s}, {s}], got {list(images.shape)}; "
                             f"resize with the model's preprocess (or torch.nn.functional.interpolate) first")
        if images.shape[0] == 0:
            raise ValueError(f"{self.name}: the batch is empty (shape {list(images.shape)}); pass at least one image")
        if not bool(torch.isfinite(images).all()):
            raise ValueError(f"{self.name}: images contain NaN or inf; they must be finite values in [0, 1]")
        lo, hi = images.aminmax()
        if lo < 0 or hi > 1:
            raise ValueError(f"{self.name}: images must be in [0, 1] pixel space (CLIP's normalisation is applied "
                             f"inside the model), got values in [{lo.item():.3g}, {hi.item():.3g}]")

    def set_channels_last(self, on: bool) -> "PixelCLIP":
        """Store the image tower's 4-D weights channels-last (``on``) or contiguous, and feed it images in
        the same layout.  Convolutions pick other kernels in each layout, so results differ by float
        rounding only; :func:`load_clip` turns it on for towers that say they run faster that way."""
        self.clip.visual.to(memory_format=torch.channels_last if on else torch.contiguous_format)
        self.channels_last = bool(on)
        return self

    @contextmanager
    def unchecked(self):
        """Skip input validation inside the block (the caller guarantees [0, 1] and the shape)."""
        previous, self.check_inputs = self.check_inputs, False
        try:
            yield self
        finally:
            self.check_inputs = previous

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        if self.check_inputs:
            self.check_images(images)
        # Any floating dtype is accepted (float64 from numpy, float16 from a pipeline) and cast, inside the
        # graph, to the weights' dtype: gradients still flow back to the caller's tensor.
        x = images.to(self.logit_scale.dtype)
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.clip.encode_image(x, normalize=normalize)

    def encode_text(self, tokens: torch.Tensor, normalize: bool = True, project: bool = True) -> torch.Tensor:
        """Text features of ``tokens`` ``[B, context_length]``, run over the batch's used columns only
        (:func:`trimmed_text_features`) when the tower allows it and ``trim_text_padding`` is on, else
        through open_clip as it is.  ``project=False``: the pooled transformer output before CLIP's text
        projection (:meth:`project_text` maps it on: the same operations, so the same result)."""
        if self.trim_text_padding and trims_padding(self.clip):
            x = trimmed_text_features(self.clip, tokens)
        else:
            projection, self.clip.text_projection = self.clip.text_projection, None  # open_clip then pools only
            try:
                x = self.clip.encode_text(tokens)
            finally:
                self.clip.text_projection = projection
        x = self.project_text(x) if project else x
        return F.normalize(x, dim=-1) if normalize else x

    def project_text(self, pooled: torch.Tensor) -> torch.Tensor:
        """CLIP's text projection (a matrix or a ``Linear``; none: the identity) of pooled text features."""
        projection = self.clip.text_projection
        if projection is None:
            return pooled
        return projection(pooled) if isinstance(projection, nn.Linear) else pooled @ projection

    def forward(self, images: torch.Tensor, tokens: torch.Tensor):
        """``(image_features, text_features, logit_scale.exp())``, features L2-normalised."""
        return self.encode_image(images), self.encode_text(tokens), self.logit_scale.exp()


PAD_TOKEN = 0  # open_clip's tokenizers fill a prompt's context after its end-of-text token with 0


def trims_padding(clip: nn.Module) -> bool:
    """Whether the text tower's features are unchanged when trailing padding columns are dropped: an
    open_clip ``CLIP`` whose text attention is causal (its ``attn_mask``), so no position sees a later one,
    and which pools the end-of-text position (``argmax``/``eos``), which lies before the padding."""
    from open_clip.model import CLIP

    return isinstance(clip, CLIP) and getattr(clip, "attn_mask", None) is not None \
        and getattr(clip, "text_pool_type", None) in ("argmax", "eos")


def trimmed_text_features(clip: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """open_clip's ``CLIP.encode_text`` up to the pooling (before the text projection) on ``tokens[:, :L]``,
    with ``L`` the batch's last column holding a non-padding token, and the positional embedding and causal
    mask cut to ``L``.

    Why: a prompt fills a few of the 77 (or 32) context positions and the rest are padding; with a causal
    mask the positions up to the end-of-text token, the pooled one, never attend to the padding after it,
    so dropping it is the same function (equal to open_clip's pass in float64, tested) at a fraction of the
    cost: a ViT-B/32 pass over 256 ImageNet class prompts 6.4× faster on one CPU thread.  Only for a tower
    :func:`trims_padding` accepts."""
    from open_clip.transformer import text_global_pool

    used = (tokens != PAD_TOKEN).any(dim=0).nonzero()
    length = int(used.max()) + 1 if used.numel() else 1
    tokens = tokens[:, :length]
    cast_dtype = clip.transformer.get_cast_dtype()
    x = clip.token_embedding(tokens).to(cast_dtype) + clip.positional_embedding[:length].to(cast_dtype)
    x = clip.ln_final(clip.transformer(x, attn_mask=clip.attn_mask[:length, :length]))
    return text_global_pool(x, tokens, clip.text_pool_type, eos_token_id=getattr(clip, "text_eos_id", None))


class _DropMessage(logging.Filter):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def _network_reachable(timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection(_HUB_HOST, timeout=timeout):
            return True
    except Exception:  # a probe never fails: any error (OSError offline, a test's socket guard) = unreachable
        return False


def _hub_offline_requested() -> bool:
    """``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` as huggingface_hub reads them, now (not at its import)."""
    from huggingface_hub import constants

    return constants.HF_HUB_OFFLINE or any(
        os.environ.get(k, "").upper() in ("1", "ON", "YES", "TRUE") for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


@contextmanager
def _hub_offline():
    """Make huggingface_hub resolve files from its cache only, without a request.

    Why patch the constant: huggingface_hub reads ``HF_HUB_OFFLINE`` once, when its ``constants`` module
    is imported (open_clip imports it), so setting the environment variable later has no effect, and an
    offline download retries for ~47 s.  ``constants.is_offline_mode()`` reads the module attribute.
    """
    from huggingface_hub import constants

    previous, constants.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE, True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = previous


def cached_weights(name: str, tag: str) -> Path | None:
    """The local file of open_clip's pretrained ``name``/``tag`` if a previous download left it in the
    Hugging Face hub cache (or open_clip's URL cache, ``~/.cache/clip``); ``None`` otherwise.  Never
    touches the network.  Mirrors open_clip's choice: the hub entry (preferring ``.safetensors``), else the URL.
    """
    import open_clip
    from huggingface_hub import try_to_load_from_cache
    from open_clip.constants import HF_WEIGHTS_NAME
    from open_clip.pretrained import _get_safe_alternatives  # open_clip's own rule, not a copy of it

    cfg = open_clip.get_pretrained_cfg(name, tag) or {}
    if cfg.get("hf_hub"):
        repo, filename = os.path.split(cfg["hf_hub"])
        filename = filename or HF_WEIGHTS_NAME
        for candidate in [*_get_safe_alternatives(filename), filename]:
            found = try_to_load_from_cache(repo, candidate)
            if isinstance(found, str):
                return Path(found)
        return None
    if cfg.get("url"):
        path = Path("~/.cache/clip").expanduser() / os.path.basename(cfg["url"])
        return path if path.is_file() else None
    return None


def _check_hub_weights(name: str, tag: str) -> bool:
    """True if the weights of an open_clip tag are cached (load them offline); else check that the
    network is there to download them, and fail at once, in one line, when it is not."""
    if cached_weights(name, tag) is not None:
        return True
    if _hub_offline_requested():
        why = "HF_HUB_OFFLINE is set"
    elif not _network_reachable():
        why = f"{_HUB_HOST[0]} is unreachable"
    else:
        return False
    raise PretrainedUnavailable(
        f"pretrained weights {name}/{tag} are not cached and {why}: download them once with network access "
        f"(load_clip({name!r}, {tag!r}) online), or use a local checkpoint file, 'mini', or pretrained=None")


def check_model_name(name) -> None:
    """A ``KeyError`` naming the choices unless ``name`` is an hrvlm or open_clip model config (a
    ``TypeError`` unless it is a non-empty string); hrvlm's configs are registered first."""
    import open_clip

    register_configs()
    if not isinstance(name, str) or not name:
        raise TypeError(f"model name must be a non-empty string such as 'hrvlm-tiny-cnn' or 'ViT-B-32-quickgelu', "
                        f"got {name!r}")
    if open_clip.get_model_config(name) is None:
        raise KeyError(f"unknown model {name!r}; hrvlm configs: {register_configs()}, "
                       f"or any of open_clip.list_models()")


def _refuse_plain_folder(name: str, pretrained) -> None:
    """A folder given as ``pretrained`` that is not a hrvlm run or checkpoint (nor an open_clip tag) is
    an error, not a tag to look up."""
    import open_clip

    if Path(pretrained).is_dir() and not open_clip.get_pretrained_cfg(name, str(pretrained)):
        raise ValueError(f"pretrained={str(pretrained)!r} is a folder that is not a hrvlm run/checkpoint; pass a "
                         f"checkpoint file (.safetensors, .pt), a run folder or name, a registered tag (e.g. 'mini') "
                         f"or an open_clip tag")


def check_pretrained_tag(name: str, tag: str) -> None:
    """Refuse unknown tags and activation mismatches (OpenAI weights need the QuickGELU variant)."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(name, tag)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(name)
        raise PretrainedUnavailable(f"open_clip has no pretrained tag {tag!r} for {name!r}; known tags: {tags or 'none'}")
    wants_quick = bool(cfg.get("quick_gelu", False))
    has_quick = bool((open_clip.get_model_config(name) or {}).get("quick_gelu", False))
    if wants_quick != has_quick:
        fix = f"{name}-quickgelu" if wants_quick else name.removesuffix("-quickgelu")
        raise ValueError(f"pretrained weights {tag!r} were trained with {'QuickGELU' if wants_quick else 'GELU'} but "
                         f"{name!r} uses {'QuickGELU' if has_quick else 'GELU'}; load {fix!r} with {tag!r} instead")


def load_state(clip: nn.Module, path: Path) -> None:
    """Load a ``.safetensors`` (or torch) state dict of the inner open_clip model, strictly."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    clip.load_state_dict(state, strict=True)


def load_clip(name: str, pretrained: str | os.PathLike | None = None, device: str | torch.device = "cpu"):
    """Build an open_clip model as a :class:`PixelCLIP`; returns ``(model, preprocess, tokenizer)``.

    ``pretrained``: ``None`` (random init; never touches the network), ``"random-init"``
    (:data:`hrvlm.models.weights.RANDOM_INIT`: random init drawn with a fixed seed, the same weights on every
    call and machine, the rng state outside unchanged), a checkpoint file, a fine-tuning
    run (its folder or name, :mod:`hrvlm.models.runs`; the model then carries the run's ``head_spec``), a tag
    registered with :func:`hrvlm.models.weights.register_weights` (the mini world's ``mini``, ``mini-smoke``),
    or an open_clip tag (e.g. ``"openai"`` with ``"ViT-B-32-quickgelu"``), which downloads — and fails
    within seconds, with a message, offline.
    ``preprocess`` maps a PIL image to a [0, 1] tensor at the model's resolution (no normalisation).
    """
    import open_clip

    check_model_name(name)
    from hrvlm.models.weights import RANDOM_INIT, RANDOM_INIT_SEED, resolve

    seeded = pretrained is not None and str(pretrained) == RANDOM_INIT
    local = None if pretrained is None or seeded else resolve(pretrained, name)
    tag = str(pretrained) if pretrained is not None and local is None and not seeded else None
    if tag is not None:
        _refuse_plain_folder(name, tag)
        check_pretrained_tag(name, tag)

    def create():
        # open_clip logs "No pretrained weights loaded" for pretrained=None, which is misleading when
        # hrvlm loads its own checkpoint right after; the filter drops only that message.
        quiet = _DropMessage("No pretrained weights loaded")
        logging.getLogger().addFilter(quiet)
        try:
            return open_clip.create_model_and_transforms(name, pretrained=tag, device="cpu", pretrained_text=False)
        finally:
            logging.getLogger().removeFilter(quiet)

    if tag is not None and _check_hub_weights(name, tag):
        with _hub_offline():  # cached: no request at all
            clip, _, preprocess = create()
    elif seeded:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)
            clip, _, preprocess = create()
    else:
        clip, _, preprocess = create()
    if local is not None:
        load_state(clip, local.path)

    # open_clip's eval transform ends with Normalize; drop it: the model normalises in-graph.
    transforms = [t for t in preprocess.transforms if type(t).__name__ != "Normalize"]
    preprocess.transforms = transforms
    pp = clip.visual.preprocess_cfg
    size = pp["size"] if isinstance(pp["size"], int) else pp["size"][0]
    model = PixelCLIP(clip, pp["mean"], pp["std"], size, name, None if pretrained is None else str(pretrained),
                      head_spec=None if local is None else local.record.get("head"))
    model.set_channels_last(any(getattr(m, "prefers_channels_last", False) for m in clip.visual.modules()))
    model = model.to(device).eval()
    return model, preprocess, _tokenizer(name)


@functools.lru_cache(maxsize=None)
def _tokenizer(name: str):
    """open_clip's tokenizer for ``name``, built once per process (its BPE tables take about 0.1 s to
    read, per model load otherwise); tokenizers hold no per-model state."""
    import open_clip

    return open_clip.get_tokenizer(name)


def model_image_size(name: str) -> int:
    """The input resolution of model config ``name`` without building it: its ``vision_cfg.image_size``,
    which open_clip makes the tower's ``preprocess_cfg`` size (what :func:`load_clip`'s ``image_size`` is)."""
    import open_clip

    check_model_name(name)
    size = open_clip.get_model_config(name)["vision_cfg"]["image_size"]
    return int(size if isinstance(size, int) else size[0])

