"""Classification heads (images → logits per tree level), chosen by kind from a registry."""
from .base import HEADS, Head, LevelHead, build_head, register_head
from .cosine import CosineHead
from .poincare import PoincareHead

__all__ = ["HEADS", "Head", "LevelHead", "CosineHead", "PoincareHead", "build_head", "register_head"]
