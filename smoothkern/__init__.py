"""smoothkern: fast, reproducible noise-averaged attribution maps (SmoothGrad and its family)."""

from __future__ import annotations

from .api import smooth_grad
from .core import precision
from .core.stats import AGGREGATES, StreamingStats
from .dataset import attribute_dataset
from .methods import (
    METHODS,
    AttributionMethod,
    GradCam,
    Gradient,
    GuidedBackprop,
    GuidedGradCam,
    InputXGradient,
    IntegratedGradients,
    Saliency,
)
from .model_cache import clear_caches
from .noise.layer import layer_activation
from .noise_grad import noise_grad
from .ops.backends import status as _backend_status
from .ops.perturb import perturb_reference

__version__ = "0.1.0"


def backend_status(device: str = "cpu") -> dict[str, str]:
    """Every backend and whether it runs on ``device``: ``{name: "available" | reason}``.

    (The kernel sets themselves: :mod:`smoothkern.ops.backends`.)
    """
    return _backend_status(device)


__all__ = ["AGGREGATES", "METHODS", "AttributionMethod", "StreamingStats", "backend_status",
           "precision",
           "clear_caches",
           "GradCam", "Gradient", "GuidedBackprop", "GuidedGradCam", "InputXGradient",
           "IntegratedGradients", "Saliency", "attribute_dataset", "layer_activation", "noise_grad",
           "perturb_reference", "smooth_grad", "__version__"]
