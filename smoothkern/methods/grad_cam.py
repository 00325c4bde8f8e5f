"""Grad-CAM: a layer's activations weighted by their spatially averaged gradients."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import AttributionMethod
from .layers import layer_activation_and_gradient, resolve_layer


def grad_cam_map(activation: Tensor, gradient: Tensor, relu: bool,
                 sum_channels: bool = True) -> Tensor:
    """Captum's ``LayerGradCam`` arithmetic.

    Args:
        activation, gradient (Tensor[R, C, *spatial]): the layer's output and its gradient
            (or Tensor[R, C] for a layer without spatial dims).

    Returns:
        Tensor[R, 1, *spatial] (``sum_channels``) or Tensor[R, C, *spatial].
    """
    if gradient.dim() > 2:
        weights = torch.mean(gradient, dim=tuple(range(2, gradient.dim())), keepdim=True)
    else:
        weights = gradient
    cam = weights * activation
    if sum_channels:
        cam = torch.sum(cam, dim=1, keepdim=True)
    return F.relu(cam) if relu else cam


def upsample(cam: Tensor, size: tuple[int, ...], mode: str) -> Tensor:
    """``F.interpolate`` of a [R, c, *spatial] map to the input's spatial ``size``."""
    return F.interpolate(cam, size, mode=mode)


class GradCam(AttributionMethod):
    """Grad-CAM of a layer, at the layer's resolution or upsampled to the input's.

    Args:
        layer: a dotted module path (``"features.3"``) or the module itself.
        upsample: interpolate the map to the input's spatial size (inputs ``[B, C, *spatial]``).
        interpolate_mode: ``F.interpolate`` mode for upsampling ("nearest", "bilinear", ...).
        relu_attributions: ReLU on each sample's map (Grad-CAM paper; Captum's default is off).
        attribute_to_layer_input: use the layer's input instead of its output.
        attr_dim_summation: sum over channels (False keeps one map per channel).
        grad_kwargs: extra keyword arguments for ``torch.autograd.grad`` (Captum's
            ``grad_kwargs``).
    """

    name = "grad_cam"
    shares_graphs = True
    uses_model_structure = True

    def __init__(self, layer: str | nn.Module, upsample: bool = False,
                 interpolate_mode: str = "nearest", relu_attributions: bool = False,
                 attribute_to_layer_input: bool = False, attr_dim_summation: bool = True,
                 grad_kwargs: dict | None = None) -> None:
        if not isinstance(layer, (str, nn.Module)):
            raise TypeError(f"layer must be a dotted module path or an nn.Module, got "
                            f"{type(layer).__name__}")
        self.layer = layer
        self.upsample = bool(upsample)
        self.interpolate_mode = interpolate_mode
        self.relu_attributions = bool(relu_attributions)
        self.attribute_to_layer_input = bool(attribute_to_layer_input)
        self.attr_dim_summation = bool(attr_dim_summation)
        if grad_kwargs is not None and not isinstance(grad_kwargs, dict):
            raise TypeError(f"grad_kwargs must be a dict, got {type(grad_kwargs).__name__}")
        self.grad_kwargs = dict(grad_kwargs or {})

    def layer_map(self, model: nn.Module, inputs: Tensor, target: Tensor) -> Tensor:
        """The map at the layer's resolution, Tensor[R, 1 or C, *layer_spatial]."""
        layer = resolve_layer(model, self.layer)
        act, grad = layer_activation_and_gradient(model, layer, inputs, target,
                                                  self.attribute_to_layer_input, self.grad_kwargs)
        return grad_cam_map(act, grad, self.relu_attributions, self.attr_dim_summation)

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor) -> Tensor:
        cam = self.layer_map(model, inputs, target)
        if self.upsample:
            if inputs.dim() < 3 or cam.dim() != inputs.dim():
                raise ValueError(f"cannot upsample a layer map of shape {tuple(cam.shape[1:])} "
                                 f"to inputs of shape {tuple(inputs.shape[1:])}")
            cam = upsample(cam, tuple(inputs.shape[2:]), self.interpolate_mode)
        return cam

    def output_shape(self, model: nn.Module, example: Tensor) -> tuple[int, ...]:
        """(1, *layer_spatial), (C, *layer_spatial), or (1, *input_spatial) when upsampling."""
        target = torch.zeros(1, dtype=torch.int64, device=example.device)
        return tuple(self.attribute(model, example, target).shape[1:])

    def __repr__(self) -> str:
        layer = self.layer if isinstance(self.layer, str) else type(self.layer).__name__
        return (f"GradCam(layer={layer!r}, upsample={self.upsample}, "
                f"relu_attributions={self.relu_attributions})")
