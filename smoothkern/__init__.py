"""smoothkern: fast, reproducible noise-averaged attribution maps (SmoothGrad and its family)."""

from __future__ import annotations

from .api import smooth_grad
from .backends import status as _backend_status
from .dataset import attribute_dataset
from .layer_noise import layer_activation
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
from .noise import perturb_reference
from .noise_grad import noise_grad
from .core import precision
from .core.stats import AGGREGATES, StreamingStats

__version__ = "0.1.0"


def backend_status(device: str = "cpu") -> dict[str, str]:
    """Every backend and whether it runs on ``device``: ``{name: "available" | reason}``.

    (A function, not ``smoothkern.backends``, which is the subpackage of backend modules.)
    """
    return _backend_status(device)


__all__ = ["AGGREGATES", "METHODS", "AttributionMethod", "StreamingStats", "backend_status",
           "GradCam", "Gradient", "GuidedBackprop", "GuidedGradCam", "InputXGradient",
           "IntegratedGradients", "Saliency", "attribute_dataset", "layer_activation", "noise_grad",
           "perturb_reference", "smooth_grad", "__version__"]
