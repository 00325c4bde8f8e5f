"""The plain gradient of the target logit with respect to the input (SmoothGrad's base)."""

from __future__ import annotations

from torch import Tensor, nn

from .base import AttributionMethod, input_gradient, vmap_input_gradient


class Gradient(AttributionMethod):
    """Signed gradient ``d f_target(x) / d x``."""

    name = "gradient"
    shares_graphs = True
    supports_vmap = True
    supports_layer_noise = True

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor) -> Tensor:
        return input_gradient(model, inputs, target)

    def vmap_attribute(self, model: nn.Module, inputs: Tensor, target: Tensor) -> Tensor:
        return vmap_input_gradient(model, inputs, target)
