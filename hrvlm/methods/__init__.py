"""Robust fine-tuning methods, each one small module registered by name (see :mod:`.base`)."""
from .base import METHODS, Batch, Method, TrainContext, build_method, register_method
from .hrvlm import HRVLM

__all__ = ["METHODS", "Batch", "HRVLM", "Method", "TrainContext", "build_method", "register_method"]
