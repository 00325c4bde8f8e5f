"""Saliency: the gradient's absolute value per sample (Captum's ``Saliency`` default)."""

from __future__ import annotations

from torch import Tensor, nn

from .base import AttributionMethod, input_gradient, vmap_input_gradient


class Saliency(AttributionMethod):
    """``|d f_target(x) / d x|`` per noisy sample (``abs=False``: the signed gradient).

    The absolute value is taken per sample, before the noise average, as in Captum's
    ``NoiseTunnel(Saliency(model))``; ``smooth_grad(method="gradient", aggregate="abs")`` is the
    same number.

    Args:
        abs: take the absolute value of each sample's gradient.
    """

    name = "saliency"
    shares_graphs = True
    supports_vmap = True
    supports_layer_noise = True

    def __init__(self, abs: bool = True) -> None:  # noqa: A002 - Captum's argument name
        self.abs = bool(abs)

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor) -> Tensor:
        grad = input_gradient(model, inputs, target)
        return grad.abs() if self.abs else grad

    def vmap_attribute(self, model: nn.Module, inputs: Tensor, target: Tensor) -> Tensor:
        grad = vmap_input_gradient(model, inputs, target)
        return grad.abs() if self.abs else grad

    def __repr__(self) -> str:
        return f"Saliency(abs={self.abs})"
