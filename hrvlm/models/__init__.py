"""CLIP models: ``load_clip`` (:mod:`.clip`), what a ``pretrained=`` value means (:mod:`.weights`), run
folders of fine-tuned weights (:mod:`.runs`)."""
from hrvlm.models.clip import PixelCLIP, PretrainedUnavailable, check_model_name, load_clip, register_configs

__all__ = ["PixelCLIP", "PretrainedUnavailable", "check_model_name", "load_clip", "register_configs"]
