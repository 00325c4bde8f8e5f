"""One batched job for all the explanations a sensitivity metric needs, when they are smoothkern's.

The unfused metric calls the explanation once for the clean inputs (rows 0..B-1) and once per
chunk of perturbations (rows 0..k·B-1 of that chunk). smoothkern's counter-based noise is keyed
by a row's index, which in each of those calls is its position in the call. Here all rows go into
one call (or a few: within the engine's memory budget for a pass, and of at most
``max_examples_per_batch`` rows) with ``example_index`` set to those positions: every row gets
the noise it gets in the unfused calls, so the explanations, and the metric, are the same (up to
the model's float rounding, which may depend on the batch size). Joining the rows:
:mod:`.sensitivity_rows`; the drop-in's noise is keyed by its ``example_index=``.

Recognised explanation functions (anything else runs unfused):

- ``smoothkern.smooth_grad`` and ``smoothkern.noise_grad``: the function itself with ``model=``
  among the metric's keywords, or a ``functools.partial`` binding the model;
- ``smoothkern.captum.NoiseTunnel(...).attribute`` (bound, or a partial of it) on one of the
  classes smoothkern has a method for, with its default counter-based noise.

A call whose result would not be one tensor (or tuple) per row, whose noise is not keyed by rows
(Captum's RNG, baselines drawn from a distribution), or whose per-example arguments cannot be
joined runs unfused.
"""

from __future__ import annotations

import functools
import inspect
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..api import smooth_grad
from ..core.planning import forward_measuring_saved_bytes, memory_budget
from ..noise_grad import noise_grad
from .sensitivity_rows import Segment, join_segments, split_segments

# The smooth_grad / noise_grad keywords whose values make a call's result something else than
# one map per row (a dict, a sweep, snapshots), or tie it to a batch (adaptive counts).
_ROW_BREAKING = ("snapshots", "tolerance")
# NoiseTunnel.attribute keywords that are per-example (joined across calls).
_PER_ROW_CAPTUM = ("target", "additional_forward_args", "baselines")


def as_tuple(value: Any) -> tuple[Tensor, ...]:
    """An explanation's result as a tuple of tensors."""
    parts = value if isinstance(value, tuple) else (value,)
    for t in parts:
        if not isinstance(t, Tensor):
            raise TypeError(f"the explanation function must return a Tensor or a tuple of "
                            f"Tensors, got {type(t).__name__}")
    return parts


class FusableExplainer:
    """A smoothkern explanation function the metric can run as one batched job.

    Subclasses say how one unfused call runs (``call``) and how a block of joined rows runs with
    the noise keyed by the rows' positions in their unfused calls (``call_rows``).
    """

    per_row: tuple[str, ...] = ()

    def call(self, segment: Segment) -> Any:
        """The unfused call (Captum's ``explanation_func(inputs, **kwargs)``)."""
        raise NotImplementedError

    def call_rows(self, inputs: tuple[Tensor, ...], kwargs: dict[str, Any], index: Tensor
                  ) -> Any:
        """Explanations of joined rows; ``index`` (LongTensor[rows]): each row's position in its
        unfused call."""
        raise NotImplementedError

    def row_limit(self, clean: Segment) -> int:
        """Rows one joined call may hold: as many as the engine's memory budget for one pass
        takes (a call's pass holds at least one sample of each of its rows)."""
        raise NotImplementedError

    def explain(self, segments: Sequence[Segment], rows_per_call: int | None
                ) -> list[tuple[Tensor, ...]]:
        """Every segment's explanations, from balanced joined calls of at most
        ``rows_per_call`` rows (None: the engine's limit), or from the unfused calls when the
        segments cannot be joined."""
        joined = join_segments(segments, self.per_row)
        if joined is not None:
            inputs, kwargs, index = joined
            total = index.shape[0]
            limit = self.row_limit(segments[0])
            if rows_per_call is not None:
                limit = min(limit, rows_per_call)
            calls = math.ceil(total / max(1, limit))
            step = math.ceil(total / calls)
            pieces = []
            for start in range(0, total, step):
                stop = min(total, start + step)
                pieces.append(as_tuple(self.call_rows(
                    tuple(x[start:stop] for x in inputs),
                    {k: v.rows(start, stop) for k, v in kwargs.items()}, index[start:stop])))
            return split_segments(pieces, [s.rows for s in segments])
        return [as_tuple(self.call(s)) for s in segments]


class NoiseFunction(FusableExplainer):
    """``smooth_grad`` or ``noise_grad`` with its model bound (one tensor input)."""

    per_row = ("target",)

    def __init__(self, func: Callable[..., Any], model: Any, options: dict[str, Any],
                 offset: int) -> None:
        self.func, self.model, self.options, self.offset = func, model, options, offset

    def row_limit(self, clean: Segment) -> int:
        x = _single(clean.inputs)
        _, row_bytes = forward_measuring_saved_bytes(self.model, x)
        return _rows_in_memory(row_bytes, x.device, self.options.get("memory_limit"))

    def call(self, segment: Segment) -> Any:
        options = {**self.options, **_targets(segment.kwargs)}
        if self.offset:
            options["example_index"] = self.offset
        return self.func(self.model, _single(segment.inputs), **options)

    def call_rows(self, inputs: tuple[Tensor, ...], kwargs: dict[str, Any], index: Tensor
                  ) -> Any:
        return self.func(self.model, inputs[0], **{**self.options, **_targets(kwargs)},
                         example_index=index + self.offset)


def _targets(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The per-row keyword of smooth_grad and noise_grad (the rest are fixed options).

    A one-element integer tensor is one class for every row, as Captum reads it (it is not
    expanded to the perturbed rows), so it goes to smooth_grad as a 0-dim tensor."""
    if "target" not in kwargs:
        return {}
    target = kwargs["target"]
    if isinstance(target, Tensor) and target.numel() == 1 and not target.is_floating_point():
        target = target.reshape(())
    return {"target": target}


class DropInNoiseTunnel(FusableExplainer):
    """``smoothkern.captum.NoiseTunnel(...).attribute`` with its default counter-based noise."""

    per_row = _PER_ROW_CAPTUM

    def __init__(self, attribute: Callable[..., Any], options: dict[str, Any]) -> None:
        self.attribute, self.options = attribute, options

    def row_limit(self, clean: Segment) -> int:
        options = {**self.options, **clean.kwargs}
        model = _ForwardOfFirstInput(self.attribute.__self__.attribution_method.forward_func,
                                     clean.inputs[1:], options.get("additional_forward_args"))
        x = clean.inputs[0]
        _, row_bytes = forward_measuring_saved_bytes(model, x)
        return _rows_in_memory(row_bytes, x.device, None)

    def call(self, segment: Segment) -> Any:
        return self.attribute(segment.inputs, **{**self.options, **segment.kwargs})

    def call_rows(self, inputs: tuple[Tensor, ...], kwargs: dict[str, Any], index: Tensor
                  ) -> Any:
        options = {**self.options, **kwargs}
        return self.attribute(inputs, **options, example_index=index)


def _rows_in_memory(row_bytes: int, device: torch.device, memory_limit: Any) -> int:
    """Rows whose saved activations fit the engine's pass budget (and the caller's limit).

    Not the engine's CPU row limit: that one sizes passes from samples, and splitting the joined
    rows below it only makes more passes (on a busy CPU, measured slower).
    """
    budget = memory_budget(device)
    if isinstance(memory_limit, int) and not isinstance(memory_limit, bool) and memory_limit > 0:
        budget = min(budget, memory_limit)
    return max(1, budget // max(1, row_bytes))


class _ForwardOfFirstInput(nn.Module):
    """The drop-in's forward as a function of its first input alone, the others and the
    additional arguments fixed: what the engine's memory probe takes."""

    def __init__(self, forward_func: Any, others: tuple[Tensor, ...], args: Any) -> None:
        super().__init__()
        self.forward_func = forward_func    # a module's parameters are then not counted
        self.others = others
        self.args = () if args is None else (args if isinstance(args, tuple) else (args,))

    def forward(self, x: Tensor) -> Any:
        return self.forward_func(x, *self.others, *self.args)


def fusable(explanation_func: Any, kwargs: dict[str, Any], batch: int
            ) -> FusableExplainer | None:
    """The explainer as a :class:`FusableExplainer`, or None when it must run unfused.

    Args:
        kwargs: the metric's keywords for the explanation function.
        batch: B, the examples (a tensor option with B rows is per example: unfused).
    """
    func, bound_args, bound = _unwrap(explanation_func)
    if func in (smooth_grad, noise_grad) and not bound_args and "model" not in bound and \
            "model" not in kwargs:
        raise TypeError(f"{func.__name__} as the explanation function needs its model: pass "
                        f"model=... to the metric, or functools.partial({func.__name__}, model)")
    if func in (smooth_grad, noise_grad):
        return _noise_function(func, bound_args, {**bound, **kwargs}, batch)
    nt = _drop_in_noise_tunnel(func, bound_args)
    if nt is not None:
        return _drop_in(func, bound, kwargs, batch)
    return None


# ----------------------------------------------------------------------------------------------
# recognising the explainers


def _unwrap(func: Any) -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
    """(function, its bound positional arguments, bound keywords) through functools.partial."""
    args: tuple[Any, ...] = ()
    keywords: dict[str, Any] = {}
    while isinstance(func, functools.partial):
        args, keywords = func.args + args, {**func.keywords, **keywords}
        func = func.func
    return func, args, keywords


def _noise_function(func: Callable[..., Any], bound_args: tuple[Any, ...],
                    options: dict[str, Any], batch: int) -> NoiseFunction | None:
    options = dict(options)
    if len(bound_args) == 1 and "model" not in options:
        model = bound_args[0]
    elif not bound_args and "model" in options:
        model = options.pop("model")
    else:
        return None
    offset = options.pop("example_index", None)
    if offset is None:
        offset = 0
    elif isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        return None
    options.pop("target", None)      # per row, from the segments
    if not isinstance(options.get("aggregate", "mean"), str):
        return None
    if any(options.get(name) is not None for name in _ROW_BREAKING):
        return None
    for name in ("noise_level", "stdevs"):
        value = options.get(name)
        if isinstance(value, (list, tuple)) or (isinstance(value, Tensor) and value.dim() > 0):
            return None              # a sweep, or one σ per example of one call
    if _has_per_example_tensor(options, batch):
        return None
    return NoiseFunction(func, model, options, offset)


def _drop_in_noise_tunnel(func: Any, bound_args: tuple[Any, ...]) -> Any:
    """The smoothkern NoiseTunnel whose own ``attribute`` ``func`` is, else None."""
    module = sys.modules.get("smoothkern.captum.noise_tunnel")
    if module is None or bound_args or not inspect.ismethod(func):
        return None
    owner = func.__self__
    if isinstance(owner, module.NoiseTunnel) and func.__func__ is module.NoiseTunnel.attribute:
        return owner
    return None


def _drop_in(attribute: Any, bound: dict[str, Any], call_kwargs: dict[str, Any], batch: int
             ) -> DropInNoiseTunnel | None:
    from ..captum.attributions import native_name

    options = {**bound, **call_kwargs}
    if options.get("rng", "smoothkern") != "smoothkern" or \
            options.get("draw_baseline_from_distrib") or \
            options.get("return_convergence_delta") or \
            options.get("example_index") is not None or \
            not isinstance(options.get("nt_type", "smoothgrad"), str):
        return None
    tunnel_parameters = set(inspect.signature(attribute).parameters)
    algorithm_options = {k: v for k, v in options.items()
                         if k not in tunnel_parameters and k not in _PER_ROW_CAPTUM}
    if not native_name(attribute.__self__.attribution_method, algorithm_options):
        return None
    fixed = {k: v for k, v in bound.items() if k not in call_kwargs}
    if _has_per_example_tensor(fixed, batch) or _has_per_example_tensor(
            {k: v for k, v in call_kwargs.items() if k not in _PER_ROW_CAPTUM}, batch):
        return None
    return DropInNoiseTunnel(attribute, fixed)


def _has_per_example_tensor(options: dict[str, Any], batch: int) -> bool:
    """Whether an option holds a tensor with a row per example, which the unfused calls would
    pass unexpanded to calls of other sizes."""
    def per_example(value: Any) -> bool:
        if isinstance(value, (tuple, list)):
            return any(per_example(v) for v in value)
        return isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == batch > 1
    return any(per_example(v) for v in options.values())


def _single(inputs: tuple[Tensor, ...]) -> Tensor:
    if len(inputs) != 1:
        raise TypeError(f"smooth_grad and noise_grad explain one input tensor, got a tuple of "
                        f"{len(inputs)}")
    return inputs[0]
