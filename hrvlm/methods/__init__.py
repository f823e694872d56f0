"""Robust fine-tuning methods, each one small module registered by name (see :mod:`.base`)."""
from .base import METHODS, Batch, Method, TrainContext, build_method, register_method
from . import clip  # noqa: F401  (each import registers its method)
from . import tecoa  # noqa: F401
from . import pmg_aft  # noqa: F401
from . import fare  # noqa: F401
from . import qtaft  # noqa: F401
from .hrvlm import HRVLM

__all__ = ["METHODS", "Batch", "HRVLM", "Method", "TrainContext", "build_method", "register_method"]
