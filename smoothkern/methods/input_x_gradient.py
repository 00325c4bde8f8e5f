"""Input × gradient: the noisy input times its own gradient."""

from __future__ import annotations

from torch import Tensor, nn

from .base import AttributionMethod, input_gradient, vmap_input_gradient


class InputXGradient(AttributionMethod):
    """``x̃ · d f_target(x̃) / d x̃`` for each noisy copy ``x̃`` (Captum's ``InputXGradient``)."""

    name = "input_x_gradient"
    shares_graphs = True
    supports_vmap = True
    supports_layer_noise = True

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor) -> Tensor:
        return inputs * input_gradient(model, inputs, target)

    def vmap_attribute(self, model: nn.Module, inputs: Tensor, target: Tensor) -> Tensor:
        return inputs * vmap_input_gradient(model, inputs, target)
