"""hrvlm: hierarchy-aware robust zero-shot CLIP fine-tuning, reproducibly (HRVLM, CVPR 2026; QT-AFT)."""
__version__ = "0.1.0"
