"""Robust fine-tuning methods, each one small module registered by name (see :mod:`.base`)."""
from hrvlm.methods.base import METHODS, Batch, Method, TrainContext, build_method, register_method
from hrvlm.methods import clip  # noqa: F401  (each import registers its method)
from hrvlm.methods import tecoa  # noqa: F401
from hrvlm.methods import pmg_aft  # noqa: F401
from hrvlm.methods import fare  # noqa: F401
from hrvlm.methods import qtaft  # noqa: F401
from hrvlm.methods.hrvlm import HRVLM

__all__ = ["METHODS", "Batch", "HRVLM", "Method", "TrainContext", "build_method", "register_method"]
