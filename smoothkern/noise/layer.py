"""Noise at a layer: the noise is added to one module's output, and the attribution is taken
with respect to that output.

The engine's pipeline does not change. The noise source is :class:`~smoothkern.noise.sources.
CounterNoise` drawn on the layer's *clean activation* ``h[B, *layer_out]`` (one clean forward
records it), so the noise stays a pure function of (seed, example, sample, element of the layer
output). The method is the base method wrapped by :class:`AtLayer`: it runs the model on the
clean inputs (token ids, images) and replaces the layer's output by the noisy activations it is
given, so the base method's "inputs" are the activations and its attribution is
``d logit / d h̃`` (gradient), ``h̃ · d logit / d h̃`` (input × gradient) or integrated
gradients from a baseline activation to ``h̃``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from ..core.planning import counting_saved_bytes
from ..core.state import check_eval_mode, preserved
from ..methods import AttributionMethod
from ..methods.layers import resolve_layer
from ..model_cache.toggles import attention_fast_path_off
from ..ops.backends import PassStrategy

__all__ = ["AtLayer", "LayerInjection", "activation_of", "check_layer_method",
           "check_layer_strategy", "clean_forward_at_layer", "layer_activation", "resolve_layer"]


def check_layer_method(method: AttributionMethod) -> None:
    """Refuses a method that has no meaning with respect to a noisy layer output.

    Gradient, saliency, input × gradient and integrated gradients attribute to whatever the
    model's "input" is, so they take the activation's place; guided backprop and the Grad-CAMs
    hook the model's own modules and explain its input (or a layer of their own).
    """
    if not isinstance(method, AttributionMethod):
        raise TypeError(f"method must be an AttributionMethod, got {type(method).__name__}")
    if not method.supports_layer_noise:
        raise ValueError(f"method {method.name!r} cannot attribute to a noisy layer output "
                         "(noise_at=); use 'gradient', 'saliency', 'input_x_gradient' or "
                         "'integrated_gradients'")


def check_layer_strategy(passes: str) -> None:
    """Layer noise runs batched passes or the loop reference: under ``torch.func.vmap`` each
    call sees one row and cannot tell which example's inputs the model should run on."""
    if PassStrategy(passes) is PassStrategy.VMAP:
        raise ValueError("noise_at= cannot run under backend 'vmap'; use 'auto', a kernel set "
                         "('torch', 'cpp', ...) or 'loop'")


@contextlib.contextmanager
def _hooked(layer: nn.Module, hook: Any) -> Iterator[None]:
    """``hook`` on the layer's output; torch's fused attention fast path is off meanwhile: in
    eval mode without gradients, nn.TransformerEncoderLayer would skip the submodules (and
    their hooks) that a layer inside it needs."""
    handle = layer.register_forward_hook(hook)
    try:
        with attention_fast_path_off():       # counted: overlapping calls restore it once
            yield
    finally:
        handle.remove()


def _check_output(out: object, rows: int) -> Tensor:
    if not isinstance(out, Tensor):
        raise TypeError(f"noise_at needs a layer whose output is a single Tensor, got "
                        f"{type(out).__name__} (pick the module that returns the tensor)")
    if not out.is_floating_point():
        raise TypeError(f"noise_at needs a layer with a floating-point output, got {out.dtype}")
    if out.dim() < 1 or out.shape[0] != rows:
        raise ValueError(f"the noise_at layer's output must have one row per example on dim 0 "
                         f"({rows}), got shape {tuple(out.shape)} (for nn.Transformer* layers "
                         "use batch_first=True)")
    return out


def _ran_once(calls: int) -> None:
    if calls == 0:
        raise ValueError("the noise_at layer did not run in the model's forward pass (a fused "
                         "path that skips its submodules, or a module the forward never calls)")
    if calls != 1:
        raise ValueError(f"the noise_at layer ran {calls} times in one forward pass; it must run "
                         "exactly once (a module used twice cannot take one noisy output)")


def clean_forward_at_layer(model: nn.Module, layer: nn.Module, inputs: Tensor
                           ) -> tuple[Tensor, Tensor, int]:
    """One clean forward: the model's output, the layer's activation and the bytes autograd
    saves per row when the activation requires grad and the parameters do not (the noisy
    passes' graph; the model's state comes back as it was).

    Args:
        inputs (Tensor[B, ...]): clean inputs, any dtype the model takes (token ids too).

    Returns:
        (output (Tensor[B, ...], detached), activation (Tensor[B, *layer_out], detached,
        contiguous), saved bytes per row)
    """
    batch = inputs.shape[0]
    seen: list[Tensor] = []
    calls = 0

    def record(module: nn.Module, args: tuple, out: Tensor) -> Tensor:
        nonlocal calls
        calls += 1
        leaf = _check_output(out, batch).detach().requires_grad_(True)
        seen.append(leaf)
        return leaf.clone()      # the model may modify the output in place (ReLU(inplace))

    with preserved(model), torch.enable_grad(), _hooked(layer, record), \
            counting_saved_bytes(model) as saved:
        out = model(inputs.detach())
    _ran_once(calls)
    activation = seen[0].detach().contiguous()
    per_row = max(saved() // batch, activation[0].numel() * activation.element_size())
    return (out.detach() if isinstance(out, Tensor) else out), activation, per_row


def layer_activation(model: nn.Module, layer: str | nn.Module, inputs: Tensor) -> Tensor:
    """The output of ``layer`` (a dotted path or a submodule of ``model``) for ``inputs``.

    For a baseline activation of integrated gradients under ``noise_at=``: the embedding of
    padding tokens, say ``layer_activation(model, "embeddings", pad_ids)``.

    Args:
        inputs (Tensor[B, ...]): what the model takes (token ids, images).

    Returns:
        Tensor[B, *layer_out], detached.
    """
    check_eval_mode(model)      # as smooth_grad: a train-mode Dropout/BatchNorm is refused
    return activation_of(model, resolve_layer(model, layer), inputs)


def activation_of(model: Any, layer: nn.Module, inputs: Tensor) -> Tensor:
    """:func:`layer_activation` for a module object, which the forward function (any callable)
    is trusted to call."""
    seen: list[Tensor] = []

    def record(mod: nn.Module, args: tuple, out: Tensor) -> None:
        seen.append(_check_output(out, inputs.shape[0]).detach().clone())  # before in-place ops

    with torch.no_grad(), _hooked(layer, record):
        model(inputs.detach())
    _ran_once(len(seen))
    return seen[0]


class LayerInjection(nn.Module):
    """The model as a function of the layer's output: row ``r`` of the activations replaces the
    layer's output for the clean inputs of example ``r mod B`` (the engine's row order
    ``(i·S + s)·B + b``, also after integrated gradients stacks its steps).

    Args:
        model: the model the passes run (the caller's).
        layer: the module whose output is replaced (a submodule of ``model``).
        inputs (Tensor[B, ...]): the clean inputs of the examples.
    """

    def __init__(self, model: nn.Module, layer: nn.Module, inputs: Tensor) -> None:
        super().__init__()
        self.model = model
        self.layer = [layer]            # a list: not registered twice as a submodule
        self.inputs = inputs

    def forward(self, activations: Tensor) -> Tensor:
        """activations (Tensor[R, *layer_out]) → the model's output for those rows."""
        rows = activations.shape[0]
        index = torch.arange(rows, device=self.inputs.device) % self.inputs.shape[0]
        calls = 0

        def replace(module: nn.Module, args: tuple, out: Tensor) -> Tensor:
            nonlocal calls
            calls += 1
            out = _check_output(out, rows)
            if out.shape != activations.shape:
                raise ValueError(f"the noise_at layer's output has shape {tuple(out.shape)}, "
                                 f"the activations {tuple(activations.shape)}")
            # autocast's dtype; a copy, as the model may modify it in place (ReLU(inplace));
            # the gradient flows back to the activations either way
            return activations.to(out.dtype).clone()

        with _hooked(self.layer[0], replace):
            out = self.model(self.inputs[index])
        _ran_once(calls)
        return out


class AtLayer(AttributionMethod):
    """A base method attributing with respect to a layer's (noisy) output.

    The engine hands it rows of noisy activations ``h̃[R, *layer_out]``; it runs ``method`` on
    :class:`LayerInjection` of the pass's model, so the base method's inputs are the
    activations. Its options keep their meaning in the layer's space (integrated gradients'
    ``baseline`` is a baseline activation: a number, Tensor[*layer_out], [1, *layer_out] or
    [B, *layer_out]).

    Args:
        method: a method with ``supports_layer_noise`` (gradient, saliency, input × gradient,
            integrated gradients, or a user method that declares it).
        layer: the noised module, a submodule of the model the engine runs.
        inputs (Tensor[B, ...]): the clean inputs of the examples.
    """

    uses_model_structure = True      # the layer is the caller's module: no prepared copy

    def __init__(self, method: AttributionMethod, layer: nn.Module, inputs: Tensor) -> None:
        check_layer_method(method)
        self.method, self.layer, self.inputs = method, layer, inputs
        self.name = method.name
        self.rows_per_sample = method.rows_per_sample
        self._injection: LayerInjection | None = None

    def _model(self, model: nn.Module) -> LayerInjection:
        """One wrapper per model, so that methods caching per model (IG's probe) see one."""
        if self._injection is None or self._injection.model is not model:
            self._injection = LayerInjection(model, self.layer, self.inputs)
        return self._injection

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor,
                  **extras: Tensor) -> Tensor:
        """inputs (Tensor[R, *layer_out]): noisy activations → Tensor[R, *layer_out]."""
        return self.method.attribute(self._model(model), inputs, target, **extras)

    def output_shape(self, model: nn.Module, example: Tensor) -> tuple[int, ...]:
        """example (Tensor[1, *layer_out]): one activation; the attribution has its shape."""
        return tuple(example.shape[1:])

    def subset(self, index: Tensor) -> AtLayer:
        return AtLayer(self.method.subset(index), self.layer,
                       self.inputs[index.to(self.inputs.device)])

    def session(self, model: nn.Module):
        return self.method.session(model)

    @property
    def deltas(self) -> list[Tensor]:
        """Integrated gradients' completeness errors, when the base method records them."""
        return getattr(self.method, "deltas", [])

    def __repr__(self) -> str:
        return f"AtLayer({self.method!r}, {type(self.layer).__name__})"
