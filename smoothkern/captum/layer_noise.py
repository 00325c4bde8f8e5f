"""``NoiseTunnel.attribute(..., noise_at=layer)``: the noise at a layer's output, for Captum's
layer attributions of that layer.

Captum's NoiseTunnel adds the noise to the raw inputs, which cannot work on token ids
(pytorch/captum issues 1281, 771). With ``noise_at=`` the drop-in draws the noise on the layer's
clean activation instead (counter-based, :mod:`smoothkern.noise.layer`) and runs the wrapped
layer algorithm's arithmetic with respect to the noisy activation:

- ``LayerIntegratedGradients(model, layer)``: integrated gradients in the layer's space, from
  the activation of ``baselines`` (input baselines, zeros by default, as Captum) to the noisy
  activation;
- ``LayerGradientXActivation(model, layer)``: noisy activation × its gradient (the gradient
  alone with ``multiply_by_inputs=False``).
"""

from __future__ import annotations

from typing import Any

import captum.attr as _captum
import torch
from torch import Tensor, nn

from .. import methods
from ..core.planning import choose_samples_per_pass
from ..methods import AttributionMethod
from ..noise.layer import AtLayer, activation_of, clean_forward_at_layer
from ..noise.sigma import plan_sigma
from .arguments import format_baselines, format_stdevs, format_target
from .attributions import Problem
from .errors import CaptumArgumentError

# Captum class name -> the ``attribute`` options it takes under noise_at (besides the call's)
LAYER_OPTIONS: dict[str, tuple[str, ...]] = {
    "LayerIntegratedGradients": ("baselines", "n_steps", "method", "internal_batch_size",
                                 "attribute_to_layer_input", "grad_kwargs"),
    "LayerGradientXActivation": ("attribute_to_layer_input", "grad_kwargs"),
}
_CALL_OPTIONS = ("target", "additional_forward_args")


class LayerNoiseRun:
    """A NoiseTunnel call with ``noise_at``: the layer algorithm as a smoothkern method at the
    layer (:class:`~smoothkern.noise.layer.AtLayer`), the clean activation to draw noise on.

    Args:
        algorithm: a ``LayerIntegratedGradients`` or ``LayerGradientXActivation`` object.
        problem: the call's inputs (any dtype the model takes: token ids too).
        noise_at: the layer (the module, or its dotted path in the forward function), which
            must be the algorithm's layer.
        options: the ``attribute`` keyword arguments (``return_convergence_delta`` removed).
        want_delta: keep integrated gradients' completeness errors.
    """

    native = True

    def __init__(self, algorithm: Any, problem: Problem, noise_at: Any, options: dict[str, Any],
                 want_delta: bool) -> None:
        self.problem = problem
        name = _layer_class(algorithm)
        layer = _check_layer(algorithm, name, noise_at)
        options = _check_options(name, options)
        self.logits, self.activation, self.row_bytes = clean_forward_at_layer(
            problem.model, layer, problem.x)
        self.target = format_target(options.get("target"), problem.x.shape[0],
                                    problem.model.output_shape).to(problem.x.device)
        self.method = AtLayer(self._base_method(name, algorithm, layer, options, want_delta),
                              layer, problem.x)

    def _base_method(self, name: str, algorithm: Any, layer: nn.Module, options: dict[str, Any],
                     want_delta: bool) -> AttributionMethod:
        if name == "LayerGradientXActivation":
            return methods.InputXGradient() if algorithm.multiplies_by_inputs else \
                methods.Gradient()
        size = options.get("internal_batch_size")
        return methods.IntegratedGradients(
            n_steps=options.get("n_steps", 50), integration=options.get("method", "gausslegendre"),
            baseline=self._baseline_activation(layer, options.get("baselines")),
            multiply_by_inputs=algorithm.multiplies_by_inputs,
            internal_batch_size="auto" if size is None else size, record_delta=want_delta)

    def _baseline_activation(self, layer: nn.Module, baselines: Any) -> Tensor:
        """The layer's activation for the input ``baselines`` (Captum's meaning: zeros when
        None, a number, or Tensor[1 or B, ...] per input), Tensor[B, *layer_out]."""
        problem = self.problem
        x = problem.x
        joined = format_baselines(baselines, problem.inputs, problem.layout)
        rows = torch.full_like(x, joined) if not isinstance(joined, Tensor) else \
            joined.to(x.device).expand(x.shape[0], *x.shape[1:])
        return activation_of(problem.model, layer, rows)

    @property
    def result_dtype(self) -> torch.dtype:
        return self.activation.dtype

    def sigma(self, stdevs: Any, noise_level: Any) -> Tensor:
        """σ at the layer, Tensor[1, B]: ``stdevs`` absolute, or ``noise_level`` relative to
        each example's activation range (one number: the layer has one output)."""
        if noise_level is not None:
            (level,) = _one_number(noise_level, "noise_level")
            return plan_sigma(self.activation, level, None)[0]
        (stdev,) = _one_number(stdevs, "stdevs")
        return plan_sigma(self.activation, None, stdev)[0]

    def runner(self, passes: str) -> nn.Module:
        """The wrapped forward function itself: the layer is its module (nothing prepared)."""
        return self.problem.model

    def part_shapes(self) -> list[tuple[int, ...]]:
        return [tuple(self.activation.shape[1:])]

    def samples_per_pass(self, nt_samples: int) -> int:
        return choose_samples_per_pass(self.method.rows_per_sample, self.activation,
                                       self.row_bytes, 1,
                                       nt_samples)

    def split(self, flat: Tensor) -> tuple[Tensor, ...]:
        return (flat,)

    def format(self, parts: tuple[Tensor, ...]) -> Tensor:
        return parts[0]

    def deltas(self) -> Tensor:
        """Per-pass deltas (engine order s*B + b) → Captum's order: per chunk, b*k + s."""
        batch = self.problem.x.shape[0]
        return torch.cat([d.view(-1, batch).t().reshape(-1) for d in self.method.deltas])


def _layer_class(algorithm: Any) -> str:
    for name in LAYER_OPTIONS:
        if isinstance(algorithm, getattr(_captum, name)):
            return name
    raise CaptumArgumentError(
        f"noise_at= attributes with respect to the noisy layer output: wrap a layer algorithm of "
        f"that layer, LayerIntegratedGradients(model, layer) or LayerGradientXActivation(model, "
        f"layer); got {type(algorithm).__name__}")


def _check_layer(algorithm: Any, name: str, noise_at: Any) -> nn.Module:
    """The noised module: ``noise_at`` (a module or a dotted path inside the forward
    function), which must be the algorithm's one layer."""
    layer = algorithm.layer
    if not isinstance(layer, nn.Module) or isinstance(layer, (list, nn.ModuleList)):
        raise CaptumArgumentError(f"noise_at= needs a {name} of one layer, got "
                                  f"{type(layer).__name__}")
    if isinstance(noise_at, str):
        func = algorithm.forward_func
        if not isinstance(func, nn.Module):
            raise CaptumArgumentError("noise_at as a dotted path needs the forward function to "
                                      "be an nn.Module; pass the module itself")
        try:
            noise_at = func.get_submodule(noise_at)
        except AttributeError:
            raise CaptumArgumentError(f"the model has no layer {noise_at!r}") from None
    if not isinstance(noise_at, nn.Module):
        raise TypeError(f"noise_at must be a module or a dotted module path, got "
                        f"{type(noise_at).__name__}")
    if noise_at is not layer:
        raise CaptumArgumentError(f"noise_at must be the layer the {name} attributes to "
                                  f"({type(layer).__name__}); got another module "
                                  f"({type(noise_at).__name__})")
    return layer


def _check_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    unknown = set(options) - set(LAYER_OPTIONS[name]) - set(_CALL_OPTIONS)
    if unknown:
        raise CaptumArgumentError(f"{name} under noise_at= takes no {sorted(unknown)}")
    if options.get("attribute_to_layer_input"):
        raise CaptumArgumentError("noise_at= adds the noise to the layer's output: "
                                  "attribute_to_layer_input=True is not available")
    if options.get("grad_kwargs"):
        raise CaptumArgumentError("grad_kwargs is not available with noise_at=")
    return options


def _one_number(value: Any, name: str) -> tuple[float]:
    values = format_stdevs(value, 1) if not isinstance(value, tuple) or len(value) == 1 else None
    if values is None:
        raise CaptumArgumentError(f"{name} with noise_at= is one number (the layer has one "
                                  f"output), got {value!r}")
    return values
