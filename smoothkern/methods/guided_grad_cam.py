"""Guided Grad-CAM: guided backprop times the (ReLU'd) Grad-CAM map upsampled to the input."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import Tensor, nn

from .base import AttributionMethod
from .grad_cam import GradCam, upsample
from .guided_backprop import GuidedBackprop


class GuidedGradCam(AttributionMethod):
    """Captum's ``GuidedGradCam``: ``guided_backprop(x) · interpolate(relu(grad_cam(x)))``.

    Two forward/backward passes per batch: Grad-CAM's layer gradient must be the plain one, so it
    cannot share the guided pass.

    Args:
        layer: a dotted module path or the module (inputs ``[B, C, *spatial]``).
        interpolate_mode: ``F.interpolate`` mode for the Grad-CAM map ("nearest" like Captum).
        attribute_to_layer_input: Grad-CAM of the layer's input instead of its output.
    """

    name = "guided_grad_cam"
    uses_model_structure = True

    def __init__(self, layer: str | nn.Module, interpolate_mode: str = "nearest",
                 attribute_to_layer_input: bool = False) -> None:
        self.grad_cam = GradCam(layer, relu_attributions=True,
                                attribute_to_layer_input=attribute_to_layer_input)
        self.guided = GuidedBackprop()
        self.interpolate_mode = interpolate_mode

    @contextlib.contextmanager
    def session(self, model: nn.Module) -> Iterator[None]:
        with self.guided.session(model):
            yield

    def combine(self, guided: Tensor, cam: Tensor) -> Tensor:
        """guided (Tensor[R, C, *spatial]) · cam (Tensor[R, 1, *layer_spatial]) upsampled."""
        if guided.dim() < 3 or cam.dim() != guided.dim():
            raise ValueError(f"guided Grad-CAM needs inputs [B, C, *spatial] and a layer with the "
                             f"same number of spatial dims; got inputs {tuple(guided.shape[1:])} "
                             f"and layer map {tuple(cam.shape[1:])}")
        return guided * upsample(cam, tuple(guided.shape[2:]), self.interpolate_mode)

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor) -> Tensor:
        cam = self.grad_cam.layer_map(model, inputs, target)
        return self.combine(self.guided.attribute(model, inputs, target), cam)
