"""Captum-named attribution classes backed by smoothkern's methods.

Each class takes Captum's constructor arguments and has Captum's ``attribute`` signature and
output structure (a tensor, or a tuple for tuple inputs; ``(attributions, delta)`` when asked
for). :class:`~smoothkern.captum.NoiseTunnel` uses them (or Captum's own objects) to build the
smoothkern method that runs under noise.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .. import methods
from ..methods import AttributionMethod
from ..planning import forward_measuring_saved_bytes
from ..state import check_eval_mode, preserved
from .inputs import FlatModel, Layout, as_extra_args, as_tuple, format_baselines, format_target


@dataclass
class Problem:
    """One call's inputs in the engine's form.

    Attributes:
        inputs: the caller's inputs as a tuple (each Tensor[B, ...]).
        is_tuple: whether they came as a tuple.
        layout: how they join into ``x``.
        model: the forward function on joined rows.
        x (Tensor[B, ...]): the joined clean inputs, detached.
        target (LongTensor[B]): the output index per example.
        clean: the clean forward's (logits detached, saved bytes per row), for the engine;
            None unless built with ``measure=True``.
    """

    inputs: tuple[Tensor, ...]
    is_tuple: bool
    layout: Layout
    model: FlatModel
    x: Tensor
    target: Tensor
    clean: tuple[Tensor, int] | None


def build_problem(forward_func: Callable[..., Tensor], inputs: Any, target: Any,
                  additional_forward_args: Any, measure: bool = False) -> Problem:
    """The call's inputs in the engine's form.

    Args:
        measure: run the clean forward with the engine's memory probe (``Problem.clean``), for
            a call that goes through the engine; otherwise a plain no-grad forward.
    """
    items, is_tuple = as_tuple(inputs)
    layout = Layout.of(items)
    batch = items[0].shape[0]
    model = FlatModel(forward_func, layout, as_extra_args(additional_forward_args), batch)
    check_eval_mode(model)
    x = layout.join([t.detach() for t in items])
    # This forward records the per-example output shape the targets index into; the engine
    # needs it too (its logits and the memory probe), so a measured one is handed on.
    if measure:
        clean = forward_measuring_saved_bytes(model, x)
    else:
        clean = None
        with torch.no_grad():
            model(x)
    return Problem(items, is_tuple, layout, model, x,
                   format_target(target, batch, model.output_shape).to(x.device), clean)


class Attribution:
    """Shared machinery; subclasses say which ``attribute`` options configure their method.

    Attributes:
        method_params: Captum ``attribute`` keyword arguments (with defaults) that configure the
            smoothkern method.
        input_shaped: attributions have the inputs' shapes (False: a layer's map).
    """

    method_params: dict[str, Any] = {}
    input_shaped = True

    def __init__(self, forward_func: Callable[..., Tensor]) -> None:
        self.forward_func = forward_func

    def has_convergence_delta(self) -> bool:
        return False

    @property
    def multiplies_by_inputs(self) -> bool:
        return False

    def make_method(self, problem: Problem, params: dict[str, Any],
                    record_delta: bool = False) -> AttributionMethod:
        raise NotImplementedError

    def part_shapes(self, problem: Problem, method: AttributionMethod) -> list[tuple[int, ...]]:
        """Per-example shape of each returned tensor."""
        if self.input_shaped:
            return list(problem.layout.shapes)
        return [method.output_shape(problem.model, problem.x[:1])]

    def split_params(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Method options from ``kwargs`` (removed from it), defaults filled in."""
        return {name: kwargs.pop(name, default) for name, default in self.method_params.items()}

    def format_result(self, problem: Problem, result: Tensor | tuple[Tensor, ...],
                      method: AttributionMethod) -> Tensor | tuple[Tensor, ...]:
        """Tensor[B, ...] (joined) or a tuple of parts → Captum's output structure."""
        if isinstance(result, Tensor):
            parts = problem.layout.split(result) if self.input_shaped else (result,)
        else:
            parts = tuple(result)
        return parts if (self.input_shaped and problem.is_tuple) else parts[0]

    def _attribute(self, inputs: Any, target: Any, additional_forward_args: Any,
                   params: dict[str, Any], return_convergence_delta: bool = False) -> Any:
        problem = build_problem(self.forward_func, inputs, target, additional_forward_args)
        method = self.make_method(problem, params, record_delta=return_convergence_delta)
        with preserved(problem.model, problem.x), method.session(problem.model):
            out = method.attribute(problem.model, problem.x, problem.target)
        result = self.format_result(problem, out, method)
        if return_convergence_delta:
            return result, method.deltas[0]
        return result


class Saliency(Attribution):
    """Captum's ``Saliency``: ``attribute(inputs, target, abs=True, additional_forward_args)``."""

    method_params = {"abs": True}

    def attribute(self, inputs: Tensor | tuple[Tensor, ...], target: Any = None,
                  abs: bool = True,  # noqa: A002 - Captum's name
                  additional_forward_args: Any = None) -> Tensor | tuple[Tensor, ...]:
        return self._attribute(inputs, target, additional_forward_args, {"abs": abs})

    def make_method(self, problem, params, record_delta=False):
        return methods.Saliency(abs=params["abs"])


class InputXGradient(Attribution):
    """Captum's ``InputXGradient``."""

    @property
    def multiplies_by_inputs(self) -> bool:
        return True

    def attribute(self, inputs: Tensor | tuple[Tensor, ...], target: Any = None,
                  additional_forward_args: Any = None) -> Tensor | tuple[Tensor, ...]:
        return self._attribute(inputs, target, additional_forward_args, {})

    def make_method(self, problem, params, record_delta=False):
        return methods.InputXGradient()


class IntegratedGradients(Attribution):
    """Captum's ``IntegratedGradients(forward_func, multiply_by_inputs=True)``."""

    method_params = {"baselines": None, "n_steps": 50, "method": "gausslegendre",
                     "internal_batch_size": None}

    def __init__(self, forward_func: Callable[..., Tensor], multiply_by_inputs: bool = True
                 ) -> None:
        super().__init__(forward_func)
        self._multiply_by_inputs = bool(multiply_by_inputs)

    def has_convergence_delta(self) -> bool:
        return True

    @property
    def multiplies_by_inputs(self) -> bool:
        return self._multiply_by_inputs

    def attribute(self, inputs: Tensor | tuple[Tensor, ...], baselines: Any = None,
                  target: Any = None, additional_forward_args: Any = None, n_steps: int = 50,
                  method: str = "gausslegendre", internal_batch_size: int | None = None,
                  return_convergence_delta: bool = False) -> Any:
        params = {"baselines": baselines, "n_steps": n_steps, "method": method,
                  "internal_batch_size": internal_batch_size}
        return self._attribute(inputs, target, additional_forward_args, params,
                               return_convergence_delta)

    def make_method(self, problem, params, record_delta=False):
        baseline = format_baselines(params["baselines"], problem.inputs, problem.layout)
        return methods.IntegratedGradients(
            n_steps=params["n_steps"], integration=params["method"], baseline=baseline,
            multiply_by_inputs=self._multiply_by_inputs,
            internal_batch_size=params["internal_batch_size"], record_delta=record_delta)


class GuidedBackprop(Attribution):
    """Captum's ``GuidedBackprop(model)``; the model's ReLUs must be ``nn.ReLU`` modules."""

    def __init__(self, model: nn.Module) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError("GuidedBackprop needs an nn.Module to hook its ReLU layers")
        super().__init__(model)
        self.model = model

    def attribute(self, inputs: Tensor | tuple[Tensor, ...], target: Any = None,
                  additional_forward_args: Any = None) -> Tensor | tuple[Tensor, ...]:
        return self._attribute(inputs, target, additional_forward_args, {})

    def make_method(self, problem, params, record_delta=False):
        return methods.GuidedBackprop()


class LayerGradCam(Attribution):
    """Captum's ``LayerGradCam(forward_func, layer)``; ``layer`` must be inside forward_func."""

    method_params = {"attribute_to_layer_input": False, "relu_attributions": False,
                     "attr_dim_summation": True, "grad_kwargs": None}
    input_shaped = False

    def __init__(self, forward_func: Callable[..., Tensor], layer: nn.Module,
                 device_ids: list[int] | None = None) -> None:
        super().__init__(forward_func)
        self.layer = layer
        self.device_ids = device_ids

    def attribute(self, inputs: Tensor | tuple[Tensor, ...], target: Any = None,
                  additional_forward_args: Any = None, attribute_to_layer_input: bool = False,
                  relu_attributions: bool = False, attr_dim_summation: bool = True,
                  grad_kwargs: dict | None = None) -> Tensor:
        params = {"attribute_to_layer_input": attribute_to_layer_input,
                  "relu_attributions": relu_attributions,
                  "attr_dim_summation": attr_dim_summation, "grad_kwargs": grad_kwargs}
        return self._attribute(inputs, target, additional_forward_args, params)

    def make_method(self, problem, params, record_delta=False):
        return methods.GradCam(self.layer, **params)


class GuidedGradCam(Attribution):
    """Captum's ``GuidedGradCam(model, layer)``.

    With several inputs, each input's guided gradient is multiplied by the Grad-CAM map
    interpolated to that input's spatial size; an input the map cannot be interpolated to (a
    different number of spatial dims) gets an empty tensor and a warning, as in Captum.
    """

    method_params = {"interpolate_mode": "nearest", "attribute_to_layer_input": False}

    def __init__(self, model: nn.Module, layer: nn.Module,
                 device_ids: list[int] | None = None) -> None:
        super().__init__(model)
        self.model = model
        self.layer = layer
        self.device_ids = device_ids

    def attribute(self, inputs: Tensor | tuple[Tensor, ...], target: Any = None,
                  additional_forward_args: Any = None, interpolate_mode: str = "nearest",
                  attribute_to_layer_input: bool = False) -> Tensor | tuple[Tensor, ...]:
        params = {"interpolate_mode": interpolate_mode,
                  "attribute_to_layer_input": attribute_to_layer_input}
        return self._attribute(inputs, target, additional_forward_args, params)

    def make_method(self, problem, params, record_delta=False):
        if problem.layout.flat:
            return GuidedGradCamPerInput(problem.layout, self.layer, **params)
        return methods.GuidedGradCam(self.layer, **params)

    def format_result(self, problem, result, method):
        out = super().format_result(problem, result, method)
        empty = getattr(method, "uninterpolated", set())
        if not empty:
            return out
        warnings.warn(f"Grad-CAM's map cannot be interpolated to inputs {sorted(empty)} (other "
                      "spatial dims); their attributions are empty tensors, as in Captum",
                      stacklevel=3)
        return tuple(torch.empty(0, device=t.device) if i in empty else t
                     for i, t in enumerate(out))


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


_CAPTUM_NAMES = {"Saliency": Saliency, "InputXGradient": InputXGradient,
                 "IntegratedGradients": IntegratedGradients, "GuidedBackprop": GuidedBackprop,
                 "LayerGradCam": LayerGradCam, "GuidedGradCam": GuidedGradCam}


def adopt(attribution: Any) -> Attribution:
    """Ours unchanged, or the smoothkern counterpart of a ``captum.attr`` object."""
    if isinstance(attribution, Attribution):
        return attribution
    name = type(attribution).__name__
    if not type(attribution).__module__.startswith("captum.") or name not in _CAPTUM_NAMES:
        raise TypeError(f"NoiseTunnel takes one of {sorted(_CAPTUM_NAMES)} (smoothkern.captum "
                        f"or captum.attr); got {type(attribution).__module__}.{name}")
    if name == "IntegratedGradients":
        return IntegratedGradients(attribution.forward_func, attribution.multiplies_by_inputs)
    if name == "LayerGradCam":
        return LayerGradCam(attribution.forward_func, attribution.layer)
    if name == "GuidedGradCam":
        return GuidedGradCam(attribution.forward_func, attribution.grad_cam.layer)
    return _CAPTUM_NAMES[name](attribution.forward_func)
