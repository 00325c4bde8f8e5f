"""Triton accumulate: one read of chunk[k, N] updates the running statistics in place.

Each program owns BLOCK elements, runs Welford over the k rows in registers, then Chan-merges
the chunk's moments into the state (as ``StreamingStats._merge_moments``).
"""

from __future__ import annotations

import triton
import triton.language as tl
from torch import Tensor

from ..stats import StreamingStats
from .perturb import interpreted

# GPU: 512 elements (4 per thread at 4 warps): keeps the k-row loop's loads in flight while
# leaving more programs for small states; benchmarks/gpu.py reports the achieved bandwidth.
GPU_BLOCK = 512
GPU_WARPS = 4
INTERPRETER_MAX_BLOCK = 1 << 16


@triton.jit
def _accumulate_kernel(chunk_ptr, mean_ptr, m2_ptr, abs_ptr, log_ptr, k, n, w_mean, w_m2, eps,
                       BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    acc = mean_ptr.dtype.element_ty
    c_mean = tl.zeros([BLOCK], dtype=acc)
    c_m2 = tl.zeros([BLOCK], dtype=acc)
    c_abs = tl.zeros([BLOCK], dtype=acc)
    c_log = tl.zeros([BLOCK], dtype=acc)
    row = chunk_ptr + offs
    for r in range(k):
        a = tl.load(row, mask=mask, other=0.0).to(acc)
        delta = a - c_mean
        c_mean += delta / (r + 1.0)
        c_m2 += delta * (a - c_mean)
        mag = tl.abs(a)
        c_abs += mag
        c_log += tl.log(mag + eps)
        row += n  # pointer arithmetic: 64-bit offsets without casting the loop variable
    mean = tl.load(mean_ptr + offs, mask=mask)
    delta = c_mean - mean
    tl.store(mean_ptr + offs, mean + delta * w_mean, mask=mask)
    m2 = tl.load(m2_ptr + offs, mask=mask)
    tl.store(m2_ptr + offs, m2 + (c_m2 + delta * delta * w_m2), mask=mask)
    tl.store(abs_ptr + offs, tl.load(abs_ptr + offs, mask=mask) + c_abs, mask=mask)
    tl.store(log_ptr + offs, tl.load(log_ptr + offs, mask=mask) + c_log, mask=mask)


def accumulate(state: StreamingStats, chunk: Tensor) -> None:
    """Adds chunk[k, N] to ``state`` (element shape [N], contiguous) in place; count += k."""
    if chunk.dim() != 2 or chunk.shape[1] != state.mean.numel() or state.mean.dim() != 1:
        raise ValueError(f"chunk must be [k, {state.mean.numel()}] for a flat state, got "
                         f"{tuple(chunk.shape)}")
    for t in (state.mean, state.m2, state.abs_sum, state.log_sum):
        if not t.is_contiguous() or t.device != chunk.device or t.dtype != state.dtype:
            raise ValueError("state tensors must be contiguous, share one dtype, and sit on "
                             "the chunk's device")
    k, n = chunk.shape
    if k == 0 or n == 0:
        return
    chunk = chunk.contiguous()
    seen, total = state.count, state.count + k
    block = min(triton.next_power_of_2(n), INTERPRETER_MAX_BLOCK) if interpreted() else GPU_BLOCK
    _accumulate_kernel[(triton.cdiv(n, block),)](
        chunk, state.mean, state.m2, state.abs_sum, state.log_sum, k, n, k / total,
        seen * k / total, state.eps, BLOCK=block, num_warps=GPU_WARPS,
        enable_fp_fusion=False)  # the reference's rounding, like the C++ and CUDA kernels
    state.count = total
