"""The accumulate op: one read of a chunk of attributions updates the running statistics.

Contract
--------
::

    accumulate(state, chunk[k, N]) -> None          (in place; state.count += k)

``state`` is a :class:`~smoothkern.core.stats.StreamingStats` of element shape ``[N]``
(float32 or float64 tensors ``mean``, ``m2``, ``abs_sum``, ``log_sum``, contiguous, on the
chunk's device). The chunk's moments are computed with Welford's update in the state's dtype
and merged into the state with Chan's formula (weights ``k / (seen + k)`` and
``seen * k / (seen + k)`` in float64, rounded to the state's dtype); ``abs_sum`` gains
``Σ |a|`` and ``log_sum`` gains ``Σ log(|a| + eps)``. Chunks of any split give the same state
to float rounding; ``var`` never goes negative.

Implementations, each tested against :func:`accumulate_reference`:

* :func:`accumulate_reference` (below): pure torch, the "torch" kernel set;
* ``torch.ops.smoothkern.accumulate_``: the C++ CPU kernel (``csrc/cpu/accumulate.cpp``) and the
  CUDA kernel (``csrc/cuda/accumulate.cu``), schema in ``csrc/smoothkern.cpp``;
  :func:`accumulate` wraps it;
* :func:`smoothkern.ops.triton.accumulate.accumulate`: the Triton kernel.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from . import extension


class AccumulatorState(Protocol):
    """What the op updates: :class:`smoothkern.core.stats.StreamingStats` of element shape
    ``[N]`` (the op layer does not import it: the statistics sit above the ops)."""

    mean: Tensor
    m2: Tensor
    abs_sum: Tensor
    log_sum: Tensor
    count: int
    eps: float

    @property
    def dtype(self) -> torch.dtype: ...

    def _merge_moments(self, n_b: int, mean_b: Tensor, m2_b: Tensor) -> None: ...



def accumulate_reference(state: AccumulatorState, chunk: Tensor) -> None:
    """Adds a chunk of attributions to ``state`` in place (pure torch, several reads).

    Args:
        state: the running statistics, element shape ``[N]``.
        chunk (Tensor[k, N]): k attributions, any floating dtype.
    """
    a = chunk.to(state.dtype)
    k = a.shape[0]
    chunk_mean = a.mean(dim=0)
    chunk_m2 = (a - chunk_mean).square().sum(dim=0)
    abs_a = a.abs()
    state.abs_sum += abs_a.sum(dim=0)
    state.log_sum += torch.log(abs_a + state.eps).sum(dim=0)
    state._merge_moments(k, chunk_mean, chunk_m2)


def check_accumulate_args(state: AccumulatorState, chunk: Tensor) -> None:
    """The launchers' checks: a floating chunk[k, N], a flat contiguous state on its device.

    Raises:
        ValueError: anything else.
    """
    if chunk.dim() != 2 or state.mean.dim() != 1 or chunk.shape[1] != state.mean.numel():
        raise ValueError(f"chunk must be [k, {state.mean.numel()}] for a flat state, got "
                         f"{tuple(chunk.shape)}")
    if not chunk.is_floating_point():
        raise ValueError(f"chunk must be floating point, got {chunk.dtype}")
    for t in (state.mean, state.m2, state.abs_sum, state.log_sum):
        if not t.is_contiguous() or t.device != chunk.device or t.dtype != state.dtype:
            raise ValueError("state tensors must be contiguous, share one dtype, and sit on "
                             "the chunk's device")


if extension.has_ops():
    @torch.library.register_fake("smoothkern::accumulate_")
    def _accumulate_fake(mean: Tensor, m2: Tensor, abs_sum: Tensor, log_sum: Tensor,
                         chunk: Tensor, count: int, eps: float) -> None:
        torch._check(chunk.dim() == 2 and chunk.shape[1] == mean.shape[0])


def accumulate(state: AccumulatorState, chunk: Tensor) -> None:
    """Adds chunk[k, N] to ``state`` (element shape [N]) in place with the compiled op.

    Call only when :func:`smoothkern.ops.extension.has_ops` is true. The op checks its
    arguments itself (``csrc/checks.h``).
    """
    torch.ops.smoothkern.accumulate_(state.mean, state.m2, state.abs_sum, state.log_sum, chunk,
                                     state.count, state.eps)
    state.count += chunk.shape[0]
