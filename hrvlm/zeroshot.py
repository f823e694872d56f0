"""One-release alias (0.1 → 0.2): ``ZeroShotClassifier`` now lives in :mod:`hrvlm.heads.zeroshot`, templates in
:mod:`hrvlm.data.templates`, prompt features in :mod:`hrvlm.text.prompts`."""
import warnings

from hrvlm.data.templates import load_templates
from hrvlm.heads.zeroshot import ZeroShotClassifier, class_embeddings
from hrvlm.text.prompts import encode_prompts

warnings.warn("hrvlm.zeroshot is renamed: import ZeroShotClassifier from hrvlm.heads (this alias goes in hrvlm 0.2)",
              DeprecationWarning, stacklevel=2)

__all__ = ["ZeroShotClassifier", "class_embeddings", "encode_prompts", "load_templates"]
