"""smoothkern: fast, reproducible noise-averaged attribution maps (SmoothGrad and its family)."""

from __future__ import annotations

from . import backends as _backends
from .api import smooth_grad
from .methods import METHODS, AttributionMethod
from .noise import perturb_reference
from .stats import AGGREGATES, StreamingStats

__version__ = "0.1.0"


def backends(device: str = "cpu") -> dict[str, str]:
    """Every backend and whether it runs on ``device``: ``{name: "available" | reason}``."""
    return _backends.status(device)


__all__ = ["AGGREGATES", "METHODS", "AttributionMethod", "StreamingStats", "backends",
           "perturb_reference", "smooth_grad", "__version__"]
