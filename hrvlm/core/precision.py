"""The mixed-precision policy: one decision, per device, of the autocast dtype, of loss scaling and of
the attacks' dtype.

==========  =========================  ==========  ====================================  =========
device      condition                  autocast    GradScaler                            attacks
==========  =========================  ==========  ====================================  =========
CUDA        compute capability ≥ 8.0   bfloat16    no (bf16 has float32's exponent range)  bfloat16
CUDA        compute capability < 8.0   float16     yes (T4, V100: fp16 gradients underflow) float32
CPU, other  —                          none        no (float32; CPU autocast does not pay)  float32
==========  =========================  ==========  ====================================  =========

Attacks never run in float16.  An attack needs the input gradient of every image, and float16 loses it
for the confidently classified ones: their cross-entropy gradient ``1 − p_y`` (e.g. 1e-5) becomes
exactly zero or loses its sign once cast into the half-precision backward, so PGD cannot move those
images and robust accuracy comes out too high (measured on ViT-B/32: at ``1 − p_y ≈ 5e-5`` float16
zeroed 10–20 % of the input-gradient entries and agreed in sign with float32 on 70–85 % of them, bfloat16
on 99 %; at ``1 − p_y < 1e-7`` float16 zeroed all of them).  A GradScaler cannot help: its one scale per
batch cannot span per-image gradients ten orders of magnitude apart.  bfloat16 has float32's exponent
range and keeps them.  The training step itself still runs in float16 with loss scaling.

Why capability and not ``torch.cuda.is_bf16_supported()``: the latter is True on a T4 too, where bf16
is emulated and slower than float32.  Geometry stays in float32 inside autocast regardless
(:func:`hrvlm.geometry.poincare.float32`); the policy only chooses the dtype of the network's forward.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

CHOICES = ("auto", "bf16", "fp16", "fp32")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}
BF16_CAPABILITY = (8, 0)  # Ampere: native bf16 tensor cores


@dataclass(frozen=True)
class Precision:
    """What a device runs in: ``dtype`` for ``torch.autocast`` (None = plain float32) and ``scaled``
    (a :class:`torch.amp.GradScaler` must scale the loss, i.e. fp16)."""

    device_type: str
    dtype: torch.dtype | None
    scaled: bool
    reason: str

    @property
    def name(self) -> str:
        return dtype_name(self.dtype)

    @property
    def attack_dtype(self) -> torch.dtype | None:
        """The autocast dtype of attacks (their ``autocast=``): :attr:`dtype`, except float32 for float16."""
        return None if self.dtype == torch.float16 else self.dtype

    def autocast(self):
        """``torch.autocast`` for :attr:`dtype` on this device type, or a no-op context for float32."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A GradScaler that scales only when :attr:`scaled` (otherwise its calls pass through)."""
        return torch.amp.GradScaler(self.device_type, enabled=self.scaled)

    def to_dict(self) -> dict:
        return {"precision": self.name, "grad_scaler": self.scaled, "attacks": dtype_name(self.attack_dtype),
                "reason": self.reason}


def dtype_name(dtype: torch.dtype | None) -> str:
    """``"bf16"``, ``"fp16"`` or ``"fp32"`` (None: plain float32)."""
    return next(k for k, v in DTYPES.items() if v == dtype)


def precision_policy(device: str | torch.device, force: str = "auto",
                     capability: tuple[int, int] | None = None) -> Precision:
    """The precision a run on ``device`` uses: the contract for training, evaluation and benchmarks.

    ``force``: ``"auto"`` (the table in this module's docstring), or ``"bf16"``, ``"fp16"``, ``"fp32"``
    to override it (tests force the fp16 path on CPU, where autocast supports both half types).
    ``capability``: the CUDA compute capability, read from ``device`` when None (tests pass one, so
    the decision is testable without a GPU).  Forcing ``"bf16"`` on a GPU below capability 8.0 is an
    error, since emulated bf16 is slower than float32.

    How a training step uses it (``scaler`` is a pass-through unless ``scaled``)::

        prec = precision_policy(device, profile_setting)     # once per run; record prec.to_dict()
        scaler = prec.grad_scaler()                          # checkpoint scaler.state_dict() to resume
        with prec.autocast():
            loss = method.loss(batch, method.perturb(batch))  # attacks take autocast=prec.attack_dtype
        scaler.scale(loss).backward()
        scaler.step(optimizer)                               # skips the step if gradients overflowed
        scaler.update()
    """
    if force not in CHOICES:
        raise ValueError(f"unknown precision {force!r}; choose one of {', '.join(CHOICES)}")
    device = torch.device(device)
    if device.type == "cuda" and capability is None:
        capability = torch.cuda.get_device_capability(device)
    if force == "auto":
        if device.type != "cuda":
            return Precision(device.type, None, False, f"{device.type}: float32")
        if tuple(capability) >= BF16_CAPABILITY:
            return Precision("cuda", torch.bfloat16, False, f"GPU capability {capability[0]}.{capability[1]}: bf16")
        return Precision("cuda", torch.float16, True,
                         f"GPU capability {capability[0]}.{capability[1]} < 8.0 (no native bf16): fp16 + loss scaling")
    if force == "bf16" and device.type == "cuda" and tuple(capability) < BF16_CAPABILITY:
        raise ValueError(f"this GPU (capability {capability[0]}.{capability[1]}) has no native bf16; "
                         f"use precision 'fp16' or 'auto'")
    return Precision(device.type, DTYPES[force], force == "fp16", f"forced: {force}")
