"""A Captum-compatible drop-in: change ``from captum.attr import ...`` to
``from smoothkern.captum import ...`` and NoiseTunnel runs on smoothkern's batched engine.

Every public name of ``captum.attr`` is importable from here. ``NoiseTunnel`` is smoothkern's;
the attribution classes are Captum's own (the six smoothkern has methods for are subclasses that
change nothing, so a plain ``attribute`` call is exactly Captum's). Needs captum installed
(``pip install captum``).
"""

from __future__ import annotations

try:
    import captum.attr as _captum_attr
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError("smoothkern.captum needs captum: pip install captum") from err

from .attributions import (
    GuidedBackprop,
    GuidedGradCam,
    InputXGradient,
    IntegratedGradients,
    LayerGradCam,
    Saliency,
)
from .errors import CaptumArgumentError
from .noise_tunnel import NoiseTunnel

__all__ = ["CaptumArgumentError", "GuidedBackprop", "GuidedGradCam", "InputXGradient",
           "IntegratedGradients", "LayerGradCam", "NoiseTunnel", "Saliency"]


def __getattr__(name: str):
    """Every other ``captum.attr`` name (DeepLift, LayerIntegratedGradients, ...) as Captum's."""
    try:
        return getattr(_captum_attr, name)
    except AttributeError:
        raise AttributeError(f"module 'smoothkern.captum' has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(dir(_captum_attr)))
