"""Captum-style arguments (tensor or tuple inputs, targets, additional forward args, baselines)
turned into what smoothkern's engine takes: one ``[B, ...]`` tensor and a module returning
``[R, outputs]``.

Several inputs are flattened and concatenated per example (``[B, N1 + N2 + ...]``);
:class:`FlatModel` splits the rows again before calling the user's forward function. Rows reach
it in the engine's order, where row ``r`` belongs to example ``r mod B``, so per-example
additional arguments are gathered with ``arange(R) % B``. Outputs with more than two dims are
flattened per row, and tuple targets become indices into the flattened outputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .errors import CaptumArgumentError


def as_tuple(inputs: Tensor | tuple[Tensor, ...], integer_ok: bool = False
             ) -> tuple[tuple[Tensor, ...], bool]:
    """(the inputs as a tuple, whether they came as a tuple), checked.

    Args:
        integer_ok: integer inputs (token ids) are accepted: the noise goes to a layer
            (``noise_at=``), not to them.
    """
    is_tuple = isinstance(inputs, tuple)
    items = inputs if is_tuple else (inputs,)
    if not items:
        raise ValueError("inputs is an empty tuple")
    for i, t in enumerate(items):
        if not isinstance(t, Tensor):
            raise TypeError(f"inputs[{i}] must be a Tensor, got {type(t).__name__}")
        if t.is_complex() or not (t.is_floating_point() or integer_ok):
            raise TypeError(f"inputs[{i}] must be floating point, got {t.dtype}: NoiseTunnel adds "
                            "the noise to the inputs, which cannot take it (token ids?); add it "
                            "to a layer's output instead with noise_at= (e.g. "
                            "noise_at=model.embeddings with LayerIntegratedGradients(model, "
                            "model.embeddings))")
        if t.dim() < 1 or t.shape[0] != items[0].shape[0]:
            raise ValueError(f"every input must be [B, ...] with the same B; got shapes "
                             f"{[tuple(x.shape) for x in items]}")
        if t.dtype != items[0].dtype or t.device != items[0].device:
            raise ValueError("all inputs must share one dtype and device")
    return tuple(items), is_tuple


@dataclass(frozen=True)
class Layout:
    """How a tuple of inputs maps to one tensor per example.

    Attributes:
        shapes: each input's per-example shape.
        flat: whether the inputs are flattened and concatenated (several inputs), or the single
            input is passed as it is (so spatial methods keep its shape).
    """

    shapes: tuple[tuple[int, ...], ...]
    flat: bool

    @classmethod
    def of(cls, inputs: tuple[Tensor, ...]) -> Layout:
        return cls(tuple(tuple(t.shape[1:]) for t in inputs), len(inputs) > 1)

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(int(torch.Size(s).numel()) for s in self.shapes)

    def join(self, parts: Sequence[Tensor]) -> Tensor:
        """Tensors [R, *shape_k] → one Tensor[R, ...]."""
        if not self.flat:
            return parts[0]
        return torch.cat([p.reshape(p.shape[0], -1) for p in parts], dim=1)

    def split(self, rows: Tensor) -> tuple[Tensor, ...]:
        """One Tensor[R, ...] → views [R, *shape_k] per input."""
        if not self.flat:
            return (rows,)
        pieces = torch.split(rows, list(self.sizes), dim=1)
        return tuple(p.reshape(rows.shape[0], *s) for p, s in zip(pieces, self.shapes))


def as_extra_args(additional_forward_args: Any) -> tuple:
    if additional_forward_args is None:
        return ()
    return additional_forward_args if isinstance(additional_forward_args, tuple) else (
        additional_forward_args,)


@dataclass
class _Call:
    """What one call binds a :class:`FlatModel` to. Prepared copies of the wrapper share this
    object, so a cached copy runs the current call's layout and arguments."""

    layout: Layout
    extra: tuple
    batch: int
    output_shape: tuple[int, ...] | None = None
    strict: bool = True


class FlatModel(nn.Module):
    """The user's forward function on the engine's rows.

    One wrapper serves every call of a :class:`~smoothkern.captum.NoiseTunnel` (:meth:`bind`
    rebinds it), so the engine's prepared copy of the model, cached per wrapper, is built once.

    Args:
        forward_func: the model (an nn.Module is registered as a submodule, so the engine sees
            and restores its flags, hooks and parameters) or any callable.
        layout: how rows split into the function's inputs.
        extra: additional forward args; tensors with a batch dim are per example.
        batch: B, the number of examples.
    """

    def __init__(self, forward_func: Callable[..., Tensor], layout: Layout, extra: tuple,
                 batch: int) -> None:
        super().__init__()
        if isinstance(forward_func, nn.Module):
            self.forward_func = forward_func
        else:
            self._func = forward_func
        self._call = _Call(layout, (), batch)
        self.bind(layout, extra, batch)

    def bind(self, layout: Layout, extra: tuple, batch: int) -> FlatModel:
        """This wrapper (and its prepared copies) for a new call's inputs; returns self."""
        for i, arg in enumerate(extra):
            if isinstance(arg, Tensor) and arg.dim() > 0 and arg.shape[0] != batch:
                raise ValueError(f"additional_forward_args[{i}] has {arg.shape[0]} rows; tensors "
                                 f"with a batch dim must have one row per example ({batch})")
        call = self._call                  # updated in place: the copies hold this object
        call.layout, call.extra, call.batch = layout, extra, batch
        call.output_shape, call.strict = None, True
        return self

    def release(self) -> None:
        """Drops the call's additional arguments (tensors the wrapper would keep alive)."""
        self._call.extra = ()

    @property
    def layout(self) -> Layout:
        return self._call.layout

    @property
    def extra(self) -> tuple:
        return self._call.extra

    @property
    def batch(self) -> int:
        return self._call.batch

    @property
    def output_shape(self) -> tuple[int, ...] | None:
        """One example's output shape, from the last forward."""
        return self._call.output_shape

    @output_shape.setter
    def output_shape(self, shape: tuple[int, ...] | None) -> None:
        self._call.output_shape = shape

    @property
    def strict(self) -> bool:
        """False: return the function's output unchecked (a generic Captum algorithm reads
        it)."""
        return self._call.strict

    @strict.setter
    def strict(self, value: bool) -> None:
        self._call.strict = value

    def call(self) -> Callable[..., Tensor]:
        return self.forward_func if "forward_func" in self._modules else self._func

    def forward(self, rows: Tensor) -> Tensor:
        """rows (Tensor[R, ...]) → outputs (Tensor[R, outputs]): each row's outputs flattened.

        A ``[R]`` output becomes ``[R, 1]``; ``[R, d1, d2, ...]`` becomes ``[R, d1·d2·...]`` and
        its per-row shape is kept in ``output_shape`` (for tuple targets).
        """
        index = torch.arange(rows.shape[0], device=rows.device) % self.batch
        extra = tuple(a[index.to(a.device)] if isinstance(a, Tensor) and a.dim() > 0 else a
                      for a in self.extra)
        out = self.call()(*self.layout.split(rows), *extra)
        if not self.strict:
            return out
        if not isinstance(out, Tensor):
            raise TypeError(f"the forward function must return a Tensor, got {type(out).__name__}")
        if out.dim() == 0 or out.shape[0] != rows.shape[0]:
            raise ValueError(f"the forward function must return one output row per input row "
                             f"({rows.shape[0]}), got shape {tuple(out.shape)}")
        self.output_shape = tuple(out.shape[1:])
        return out.reshape(out.shape[0], -1) if out.dim() != 2 else out


def format_target(target: Any, batch: int, output_shape: tuple[int, ...]) -> Tensor:
    """Captum's targets as a LongTensor[B] of indices into each example's flattened outputs.

    Like Captum, a target must pick one scalar output per example: None for one output per
    example, an int (or one-element tensor) for ``[B, classes]`` outputs, a tuple of ints for
    outputs with more dims (``[B, C, H]`` → ``(c, h)``), or one of these per example (a list or
    a LongTensor[B]). Negative indices count from the end, as in Python.

    Args:
        output_shape: the shape of one example's outputs (``()`` for ``[B]`` outputs).
    """
    shape = tuple(output_shape) or (1,)
    if target is None:
        if math.prod(shape) != 1:
            raise CaptumArgumentError(
                f"target is required: the model returns {math.prod(shape)} outputs "
                             "per example (Captum's target=None only works for one output)")
        return torch.zeros(batch, dtype=torch.int64)
    if isinstance(target, Tensor):
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            raise TypeError(f"a target tensor must hold integers, got dtype {target.dtype}")
        if target.numel() == 1:
            return _repeat(_flat_index(int(target.item()), shape), batch)
        if target.dim() != 1 or target.shape[0] != batch:
            raise CaptumArgumentError(
                f"a target tensor must have one entry per example ({batch}), got "
                             f"shape {tuple(target.shape)}")
        return torch.tensor([_flat_index(int(t), shape) for t in target.tolist()],
                            dtype=torch.int64)
    if isinstance(target, list):
        if len(target) != batch:
            raise CaptumArgumentError(f"a target list must have one entry per example ({batch}), "
                             f"got {len(target)}")
        return torch.tensor([_flat_index(t, shape) for t in target], dtype=torch.int64)
    return _repeat(_flat_index(target, shape), batch)


def _repeat(index: int, batch: int) -> Tensor:
    return torch.full((batch,), index, dtype=torch.int64)


def _flat_index(target: Any, shape: tuple[int, ...]) -> int:
    """One example's target (int or tuple of ints) → index into its flattened outputs."""
    is_int = isinstance(target, int) and not isinstance(target, bool)
    if not (is_int or (isinstance(target, tuple) and all(
            isinstance(t, int) and not isinstance(t, bool) for t in target))):
        raise TypeError(f"a target must be an int or a tuple of ints (one per output dim), "
                        f"got {target!r}")
    index = (target,) if is_int else target
    if len(index) != len(shape):
        raise CaptumArgumentError(f"target {target!r} must pick one output of each example's "
                         f"{shape} outputs: give {len(shape)} index(es)")
    flat = 0
    for i, size in zip(index, shape):
        if not -size <= i < size:
            raise CaptumArgumentError(
                f"target {target!r} is out of range for outputs of shape {shape}")
        flat = flat * size + i % size
    return flat


def format_baselines(baselines: Any, inputs: tuple[Tensor, ...], layout: Layout
                     ) -> float | Tensor:
    """Captum's ``baselines`` as one baseline the IG method takes (see ``expand_baseline``).

    Returns a number (one input, scalar baseline), or a Tensor shaped like the joined inputs with
    a first dim of 1 (shared) or B (per example).
    """
    items = (0,) * len(inputs) if baselines is None else (
        baselines if isinstance(baselines, tuple) else (baselines,))
    if len(items) != len(inputs):
        raise CaptumArgumentError(f"baselines must have one entry per input ({len(inputs)}), got "
                         f"{len(items)}")
    if not layout.flat and not isinstance(items[0], Tensor):
        return _number(items[0])
    batch = inputs[0].shape[0]
    per_example = any(isinstance(b, Tensor) and b.dim() == x.dim() and b.shape[0] == batch > 1
                      for b, x in zip(items, inputs))
    rows = batch if per_example else 1
    parts = []
    for i, (b, x) in enumerate(zip(items, inputs)):
        if not isinstance(b, Tensor):
            parts.append(torch.full((rows, *x.shape[1:]), _number(b), dtype=x.dtype,
                                    device=x.device))
            continue
        if b.dim() != x.dim() or tuple(b.shape[1:]) != tuple(x.shape[1:]) or \
                b.shape[0] not in (1, batch):
            raise CaptumArgumentError(
                f"baselines[{i}] of shape {tuple(b.shape)} must be [1 or B, ...] "
                             f"like inputs[{i}] {tuple(x.shape)}")
        parts.append(b.to(device=x.device).expand(rows, *x.shape[1:]))
    return layout.join(parts)


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"a baseline must be a number or a Tensor, got {type(value).__name__}")
    return value


def format_stdevs(stdevs: Any, count: int) -> tuple[float, ...]:
    """One σ per input (Captum: a float, or a tuple with one float per input)."""
    values = stdevs if isinstance(stdevs, tuple) else (stdevs,) * count
    if len(values) != count:
        raise CaptumArgumentError(f"stdevs must be a number or a tuple of {count} numbers (one per "
                         f"input), got {stdevs!r}")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0 \
                or v == float("inf"):
            raise CaptumArgumentError(f"stdevs must be finite non-negative numbers, got {stdevs!r}")
    return tuple(float(v) for v in values)
