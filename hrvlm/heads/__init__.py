"""Classification heads (images → logits per tree level), chosen by kind from a registry."""
from hrvlm.heads.base import HEADS, Head, LevelHead, build_head, register_head
from hrvlm.heads.cosine import CosineHead
from hrvlm.heads.poincare import PoincareHead
from hrvlm.heads.zeroshot import ZeroShotClassifier

__all__ = ["HEADS", "Head", "LevelHead", "CosineHead", "PoincareHead", "ZeroShotClassifier", "build_head",
           "register_head"]
