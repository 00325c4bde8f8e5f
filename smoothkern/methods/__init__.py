"""Base attribution methods under noise, one module each, and the name registry."""

from __future__ import annotations

from typing import Any

from .base import AttributionMethod
from .grad_cam import GradCam
from .gradient import Gradient
from .guided_backprop import GuidedBackprop
from .guided_grad_cam import GuidedGradCam
from .input_x_gradient import InputXGradient
from .integrated_gradients import IntegratedGradients
from .saliency import Saliency

METHODS: dict[str, type[AttributionMethod]] = {
    cls.name: cls for cls in (Gradient, Saliency, InputXGradient, IntegratedGradients,
                              GuidedBackprop, GradCam, GuidedGradCam)
}


def resolve_method(method: str | AttributionMethod, **options: Any) -> AttributionMethod:
    """A method object from a name plus keyword options, or the given object unchanged."""
    if isinstance(method, AttributionMethod):
        if options:
            raise TypeError(f"options {sorted(options)} given together with a method object; "
                            "pass them to the method's constructor instead")
        return method
    if not isinstance(method, str):
        raise TypeError(f"method must be a name or an AttributionMethod, got "
                        f"{type(method).__name__}")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {tuple(METHODS)}")
    try:
        return METHODS[method](**options)
    except TypeError as err:
        raise TypeError(f"bad options for method {method!r}: {err}") from None


__all__ = ["METHODS", "AttributionMethod", "GradCam", "Gradient", "GuidedBackprop", "GuidedGradCam",
           "InputXGradient", "IntegratedGradients", "Saliency", "resolve_method"]
