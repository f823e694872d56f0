"""One-release alias (0.1 → 0.2): evaluation now lives in :mod:`hrvlm.evaluation`."""
import warnings

from hrvlm.evaluation.evaluate import evaluate

warnings.warn("hrvlm.evaluate is renamed: from hrvlm.evaluation.evaluate import evaluate (this alias goes in hrvlm 0.2)",
              DeprecationWarning, stacklevel=2)

__all__ = ["evaluate"]
