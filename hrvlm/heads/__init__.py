"""Classification heads (images → logits per tree level), chosen by kind from a registry."""
from .base import HEADS, Head, LevelHead, build_head, register_head
from .cosine import CosineHead

__all__ = ["HEADS", "Head", "LevelHead", "CosineHead", "build_head", "register_head"]
