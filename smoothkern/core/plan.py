"""What a call of input or layer noise needs before its job is built: the clean forward (the
target, the bytes a row costs), the noise source, the method as the passes run it, the pass
size and the model the passes call (a prepared copy when that is safe)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..methods import AttributionMethod
from ..model_cache import (
    clean_forward,
    fingerprint,
    known_row_facts,
    prepared_model,
    returns_tensor,
    saved_bytes_per_row,
    usable_preparations,
)
from ..model_io import ModelCall, inner_model, logits_of
from ..noise.layer import AtLayer, clean_forward_at_layer, resolve_layer
from ..noise.sigma import plan_sigma
from ..noise.sources import NoiseSource
from .builder import Options
from .checks import check_target
from .planning import choose_samples_per_pass, forward_measuring_saved_bytes
from .precision import autocast


@dataclass
class Plan:
    """A planned call.

    Attributes:
        method: the method the passes run (wrapped for layer noise).
        source: the noise source.
        target (LongTensor[B]): the explained outputs.
        samples_per_pass: samples per model pass.
        call: the module the passes call: the caller's model, or a
            :class:`~smoothkern.model_io.ModelCall` around it.
        x (Tensor[B, ...]): the clean inputs; logits (Tensor[B, classes] or None): their
            clean output when it was computed.
        state: the model's fingerprint when it was taken (None otherwise).
    """

    method: AttributionMethod
    source: NoiseSource
    target: Tensor
    samples_per_pass: int
    call: nn.Module
    x: Tensor
    logits: Tensor | None
    state: tuple | None

    def runner(self, preparations: tuple[str, ...], passes: str) -> nn.Module:
        """The module the passes run: a prepared copy of the caller's model (inside the call's
        adapter) unless the method hooks the caller's modules; call inside the model session."""
        if self.method.uses_model_structure or not preparations:
            return self.call
        return prepared_call(self.call, self.x, self.logits,
                             usable_preparations(preparations, passes), self.state)


def prepared_call(call: nn.Module, x: Tensor, logits: Tensor | None,
                  preparations: tuple[str, ...], state: tuple | None = None) -> nn.Module:
    """A prepared copy of the caller's model, inside ``call``'s adapter when there is one
    (:class:`~smoothkern.model_io.ModelCall`: the copy's checks run with its other inputs).

    Args:
        x (Tensor[B, ...]): the clean inputs; logits (Tensor[B, classes] or None): their output.
        state: the model's fingerprint when taken already.
    """
    model = inner_model(call)
    if not isinstance(call, ModelCall):
        return prepared_model(model, x, logits, preparations, state)
    prepared = prepared_model(model, x, logits, preparations, state,
                              run=lambda module, rows: call.around(module)(rows))
    return call if prepared is model else call.around(prepared)


def plan_input_noise(model: nn.Module, call: nn.Module, x: Tensor, target: Any,
                     options: Options, method: AttributionMethod, sigma: Tensor) -> Plan:
    """Noise on the inputs ``x`` (Tensor[B, ...]) with σ ``sigma`` (Tensor[S, B])."""
    adapted = call is not model
    state = None if adapted else fingerprint(model)    # one walk of the model for the caches
    known = None if target is None or adapted else known_row_facts(model, x, state)
    if known is not None and returns_tensor(model, x):
        logits, (row_bytes, classes) = None, known   # no clean forward is needed
    else:
        if adapted:
            logits, row_bytes = _measured(call, x)
        else:
            logits, row_bytes = clean_forward(model, x)
            if not returns_tensor(model, x):           # a ModelOutput or a mapping: adapt it
                call = ModelCall(model, batch=x.shape[0])
        classes = logits.shape[1]
    target = check_target(logits.argmax(dim=1) if target is None else target, x.shape[0],
                          classes, x.device)
    per_pass = options.samples_per_pass or planned_samples_per_pass(
        call, x, row_bytes, method.rows_per_sample, sigma.shape[0], options, state)
    return Plan(method, options.input_noise(x, sigma), target, per_pass, call, x, logits, state)


def planned_samples_per_pass(call: nn.Module, x: Tensor, row_bytes: int, rows_per_sample: int,
                             levels: int, options: Options, state: tuple | None = None) -> int:
    """Samples per pass for ``options`` (:func:`~smoothkern.core.planning.choose_samples_per_pass`
    from the float32 bytes a row saves, ``row_bytes``); with a ``compute_dtype``, from the bytes
    a row saves under autocast, measured on ``call`` (Tensor[B, ...] ``x``).

    Args:
        state: the model's fingerprint when taken already (``call`` is then the model).
    """
    row_scale = 1.0
    if options.compute_dtype is not None:
        reduced = _reduced_precision_row_bytes(call, x, options.compute_dtype, state)
        row_scale, row_bytes = max(1.0, row_bytes / max(1, reduced)), reduced
    return choose_samples_per_pass(rows_per_sample, x, row_bytes, levels, options.n_samples,
                                   options.memory_limit, row_scale)


def plan_layer_noise(model: nn.Module, call: nn.Module, x: Tensor, target: Any,
                     options: Options, method: AttributionMethod, noise_at: Any,
                     noise_level: Any, stdevs: Any) -> tuple[Plan, bool]:
    """Noise at the output of the module ``noise_at`` of ``model``; returns the plan and
    whether σ is a sweep."""
    layer = resolve_layer(model, noise_at)
    out, activation, row_bytes = clean_forward_at_layer(call, layer, x)
    if not isinstance(out, Tensor) and call is model:
        call = ModelCall(model, batch=x.shape[0])
    logits = logits_of(out, None, x.shape[0]) if call is model else out
    wrapped = AtLayer(method, layer, x)
    sigma, sweep = plan_sigma(activation, noise_level, stdevs)
    target = check_target(logits.argmax(dim=1) if target is None else target, x.shape[0],
                          logits.shape[1], x.device)
    per_pass = options.samples_per_pass or choose_samples_per_pass(
        wrapped.rows_per_sample, activation, row_bytes, sigma.shape[0], options.n_samples,
        options.memory_limit)
    plan = Plan(wrapped, options.input_noise(activation, sigma), target, per_pass, call, x,
                logits, None)
    return plan, sweep


def _reduced_precision_row_bytes(call: nn.Module, x: Tensor, dtype: torch.dtype,
                                 state: tuple | None) -> int:
    """Bytes a row saves when the passes run under autocast in ``dtype`` (about half the
    float32 bytes for bf16): measured on one row, cached per model, shape and dtype.

    Args:
        state: the model's fingerprint when taken already (``call`` is then the model).
    """
    with autocast(x.device, dtype):
        return saved_bytes_per_row(call, x, state)


def _measured(call: nn.Module, x: Tensor) -> tuple[Tensor, int]:
    """The adapted model's logits for the clean inputs and the bytes a row saves (not cached:
    they depend on the call's other inputs)."""
    out, row_bytes = forward_measuring_saved_bytes(call, x)
    return out.detach(), row_bytes


__all__ = ["Plan", "plan_input_noise", "plan_layer_noise", "planned_samples_per_pass",
           "prepared_call"]
