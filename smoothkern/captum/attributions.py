"""Captum's attribution classes under their own names, and the smoothkern methods that run them
under noise.

The classes are Captum's own (subclasses that change nothing): a plain ``attribute`` call is
Captum's, to the letter: its results, its errors, ``attribute_future``,
``compute_convergence_delta``, and the hooks Captum's layer and neuron classes set on them.
What smoothkern adds is :class:`~smoothkern.captum.NoiseTunnel`: for these six classes it
builds the equivalent smoothkern method (:func:`native_method`) and runs it in the batched
engine; every other Captum algorithm runs through the generic path (``generic.py``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import captum.attr as _captum
import torch
from captum._utils.gradient import compute_gradients
from torch import Tensor, nn

from .. import methods
from ..core.state import check_eval_mode
from ..methods import AttributionMethod
from .arguments import FlatModel, Layout, as_extra_args, as_tuple, format_baselines


@dataclass
class Problem:
    """One call's inputs in the engine's form.

    Attributes:
        inputs: the caller's inputs as a tuple (each Tensor[B, ...]).
        is_tuple: whether they came as a tuple.
        layout: how they join into ``x``.
        model: the forward function on joined rows.
        x (Tensor[B, ...]): the joined clean inputs, detached.
    """

    inputs: tuple[Tensor, ...]
    is_tuple: bool
    layout: Layout
    model: FlatModel
    x: Tensor


def build_problem(forward_func: Callable[..., Tensor], inputs: Any,
                  additional_forward_args: Any, integer_ok: bool = False,
                  reuse: FlatModel | None = None) -> Problem:
    """The call's inputs in the engine's form (checked; no forward pass yet).

    Args:
        integer_ok: accept integer inputs (token ids; the noise goes to a layer).
        reuse: an earlier call's wrapper, rebound if it wraps the same ``forward_func``.
    """
    items, is_tuple = as_tuple(inputs, integer_ok)
    layout = Layout.of(items)
    batch = items[0].shape[0]
    extra = as_extra_args(additional_forward_args)
    model = reuse.bind(layout, extra, batch) if reuse is not None and \
        reuse.call() is forward_func else FlatModel(forward_func, layout, extra, batch)
    x = layout.join([t.detach() for t in items])
    return Problem(items, is_tuple, layout, model, x)


class Saliency(_captum.Saliency):
    """Captum's ``Saliency``; under :class:`NoiseTunnel` it runs in smoothkern's engine."""


class InputXGradient(_captum.InputXGradient):
    """Captum's ``InputXGradient``; under :class:`NoiseTunnel` it runs in smoothkern's engine."""


class IntegratedGradients(_captum.IntegratedGradients):
    """Captum's ``IntegratedGradients``; under :class:`NoiseTunnel` it runs in smoothkern's
    engine (integration steps and noise samples in the same batched passes)."""


class GuidedBackprop(_captum.GuidedBackprop):
    """Captum's ``GuidedBackprop``; under :class:`NoiseTunnel` it runs in smoothkern's engine
    when the model's ReLUs are ``nn.ReLU`` modules."""


class LayerGradCam(_captum.LayerGradCam):
    """Captum's ``LayerGradCam``; under :class:`NoiseTunnel` it runs in smoothkern's engine."""


class GuidedGradCam(_captum.GuidedGradCam):
    """Captum's ``GuidedGradCam``; under :class:`NoiseTunnel` it runs in smoothkern's engine."""


# Captum class name -> (``attribute`` options the native method understands, with defaults)
NATIVE_OPTIONS: dict[str, dict[str, Any]] = {
    "Saliency": {"abs": True},
    "InputXGradient": {},
    "IntegratedGradients": {"baselines": None, "n_steps": 50, "method": "gausslegendre",
                            "internal_batch_size": None},
    "GuidedBackprop": {},
    "LayerGradCam": {"attribute_to_layer_input": False, "relu_attributions": False,
                     "attr_dim_summation": True, "grad_kwargs": None},
    "GuidedGradCam": {"interpolate_mode": "nearest", "attribute_to_layer_input": False},
}


# The classes served natively: Captum's own and the drop-in's subclass of each, by name.
NATIVE_CLASSES: dict[type, str] = {
    cls: name for ours in (Saliency, InputXGradient, IntegratedGradients, GuidedBackprop,
                           LayerGradCam, GuidedGradCam)
    for name in (ours.__name__,) for cls in (ours, getattr(_captum, name))}
assert set(NATIVE_CLASSES.values()) == set(NATIVE_OPTIONS)


def native_name(algorithm: Any, options: dict[str, Any]) -> str | None:
    """The Captum class a smoothkern method reproduces for this call, or None (generic path).

    Native only when nothing customises the algorithm: Captum's own class (or ours), its
    default gradient function, only options the method understands, for the guided methods
    ``nn.ReLU`` modules to hook (Captum silently leaves functional ReLUs unguided), and a model
    in eval mode (Captum runs a training-mode BatchNorm model too; the generic path does so
    with a warning).
    """
    name = NATIVE_CLASSES.get(type(algorithm))
    if name is None:
        return None
    if getattr(algorithm, "gradient_func", compute_gradients) is not compute_gradients:
        return None
    if set(options) - set(NATIVE_OPTIONS[name]):
        return None
    if name in ("GuidedBackprop", "GuidedGradCam"):
        model = algorithm.forward_func
        if not isinstance(model, nn.Module) or not any(
                isinstance(m, nn.ReLU) for m in model.modules()):
            return None
    if name in ("LayerGradCam", "GuidedGradCam") and getattr(algorithm, "device_ids", None):
        return None
    if isinstance(algorithm.forward_func, nn.Module):
        try:
            check_eval_mode(algorithm.forward_func)
        except ValueError as err:   # Captum runs it anyway: so does the generic path, warned
            warnings.warn(f"{err} NoiseTunnel runs it as Captum does; the maps then depend on "
                          "how samples are split into passes.", stacklevel=4)
            return None
    return name


def native_method(name: str, algorithm: Any, problem: Problem, options: dict[str, Any],
                  record_delta: bool, bounded_steps: bool = False) -> AttributionMethod:
    """The smoothkern method equal to ``algorithm.attribute(..., **options)`` on one noisy
    batch. ``options`` holds only :data:`NATIVE_OPTIONS` of ``name`` (defaults filled in).

    Args:
        bounded_steps: integrated gradients without an ``internal_batch_size`` runs its steps
            in passes sized by the memory budget (its result does not depend on them) instead
            of all at once as Captum does; off under Captum's replay (Captum's rounding).
    """
    params = {**NATIVE_OPTIONS[name], **options}
    if bounded_steps and params.get("internal_batch_size", "") is None:
        params["internal_batch_size"] = "auto"
    if name == "Saliency":
        return methods.Saliency(abs=params["abs"])
    if name == "InputXGradient":
        return methods.InputXGradient()
    if name == "IntegratedGradients":
        baseline = format_baselines(params["baselines"], problem.inputs, problem.layout)
        return methods.IntegratedGradients(
            n_steps=params["n_steps"], integration=params["method"], baseline=baseline,
            multiply_by_inputs=algorithm.multiplies_by_inputs,
            internal_batch_size=params["internal_batch_size"], record_delta=record_delta)
    if name == "GuidedBackprop":
        return methods.GuidedBackprop()
    if name == "LayerGradCam":
        return methods.GradCam(algorithm.layer, **params)
    layer = algorithm.grad_cam.layer
    if problem.layout.flat:
        return GuidedGradCamPerInput(problem.layout, layer, **params)
    return methods.GuidedGradCam(layer, **params)


def input_shaped(name: str) -> bool:
    """Whether the native method's attributions have the inputs' shapes (not a layer map)."""
    return name != "LayerGradCam"


class GuidedGradCamPerInput(methods.GuidedGradCam):
    """Guided Grad-CAM on several inputs joined into flat rows (``Layout``): one guided pass,
    then each input's part times the map interpolated to it.

    Parts the map cannot be interpolated to are zeros here (the engine needs fixed shapes);
    their indices are in ``uninterpolated`` and the drop-in returns them empty.
    """

    def __init__(self, layout: Layout, layer: nn.Module, **params: Any) -> None:
        super().__init__(layer, **params)
        self.layout = layout
        self.uninterpolated: set[int] = set()

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor) -> Tensor:
        cam = self.grad_cam.layer_map(model, inputs, target)
        guided = self.guided.attribute(model, inputs, target)
        parts = []
        for i, part in enumerate(self.layout.split(guided)):
            if part.dim() == cam.dim() and 3 <= cam.dim() <= 5:
                parts.append(self.combine(part, cam))
            else:
                self.uninterpolated.add(i)
                parts.append(torch.zeros_like(part))
        return self.layout.join(parts)
