"""Triton accumulate: one read of chunk[k, N] updates the running statistics in place.

Each program owns BLOCK elements, runs Welford over the k rows in registers, then Chan-merges
the chunk's moments into the state (as ``StreamingStats._merge_moments``). Everything runs in
the state's dtype: the counts arrive as integers and Chan's weights are computed in the kernel
(a Python float argument would be typed float32 by Triton, so a float64 state would only be
float32-accurate on a GPU), and eps arrives as the bits of its value in the state's dtype.
Rounding as the C++ and CUDA kernels: ``1 / (r + 1)`` correctly rounded (``div_rn``; Triton's
``/`` is an approximate division for float32), then a product; no fused multiply-adds.
"""

from __future__ import annotations

import struct

import torch
import triton
import triton.language as tl
from torch import Tensor

from ..accumulate import AccumulatorState, check_accumulate_args
from .launch import accumulate_grid, interpreted, on_device_of

# GPU: 512 elements (4 per thread at 4 warps): keeps the k-row loop's loads in flight while
# leaving more programs for small states; benchmarks/gpu.py reports the achieved bandwidth.
GPU_BLOCK = 512
GPU_WARPS = 4
INTERPRETER_MAX_BLOCK = 1 << 16


@triton.jit(do_not_specialize=["k", "n", "seen", "eps_bits"])
def _accumulate_kernel(chunk_ptr, mean_ptr, m2_ptr, abs_ptr, log_ptr, k, n, seen, eps_bits,
                       BLOCK: tl.constexpr, ACC64: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    if ACC64:
        acc = tl.float64
        eps = (tl.zeros([], tl.int64) + eps_bits).to(tl.float64, bitcast=True)
    else:
        acc = tl.float32
        eps = (tl.zeros([], tl.int32) + eps_bits).to(tl.float32, bitcast=True)
    c_mean = tl.zeros([BLOCK], dtype=acc)
    c_m2 = tl.zeros([BLOCK], dtype=acc)
    c_abs = tl.zeros([BLOCK], dtype=acc)
    c_log = tl.zeros([BLOCK], dtype=acc)
    row = chunk_ptr + offs
    one = tl.full([], 1.0, acc)
    for r in range(k):
        a = tl.load(row, mask=mask, other=0.0).to(acc)
        rows = tl.full([], r + 1, acc)
        if ACC64:
            inv = one / rows                   # float64 division is IEEE (div.rn.f64)
        else:
            inv = tl.math.div_rn(one, rows)
        delta = a - c_mean
        c_mean += delta * inv
        c_m2 += delta * (a - c_mean)
        mag = tl.abs(a)
        c_abs += mag
        c_log += tl.log(mag + eps)
        row += n  # pointer arithmetic: 64-bit offsets without casting the loop variable
    # Chan's weights in float64 from the integer counts, then rounded to the state's dtype, as
    # the C++ kernel and the Python reference (a float64 quotient times a float32 tensor).
    seen64 = (tl.zeros([], tl.int64) + seen).to(tl.float64)
    k64 = (tl.zeros([], tl.int64) + k).to(tl.float64)
    w_mean = (k64 / (seen64 + k64)).to(acc)
    w_m2 = (seen64 * k64 / (seen64 + k64)).to(acc)
    mean = tl.load(mean_ptr + offs, mask=mask)
    delta = c_mean - mean
    tl.store(mean_ptr + offs, mean + delta * w_mean, mask=mask)
    m2 = tl.load(m2_ptr + offs, mask=mask)
    tl.store(m2_ptr + offs, m2 + (c_m2 + delta * delta * w_m2), mask=mask)
    tl.store(abs_ptr + offs, tl.load(abs_ptr + offs, mask=mask) + c_abs, mask=mask)
    tl.store(log_ptr + offs, tl.load(log_ptr + offs, mask=mask) + c_log, mask=mask)


def eps_bits(eps: float, acc64: bool) -> int:
    """The bits of ``eps`` rounded to the state's dtype, as a signed integer of that width."""
    if acc64:
        return struct.unpack("<q", struct.pack("<d", eps))[0]
    return struct.unpack("<i", struct.pack("<f", eps))[0]


def accumulate(state: AccumulatorState, chunk: Tensor) -> None:
    """Adds chunk[k, N] to ``state`` (element shape [N], contiguous) in place; count += k.

    Args:
        state: float32 or float64 running statistics, element shape [N], on the chunk's device.
        chunk (Tensor[k, N]): attributions, fp32/fp16/bf16/fp64.
    """
    check_accumulate_args(state, chunk)
    k, n = chunk.shape
    if k == 0 or n == 0:
        return
    chunk = chunk.contiguous()
    acc64 = state.dtype == torch.float64
    block = min(triton.next_power_of_2(n), INTERPRETER_MAX_BLOCK) if interpreted() else GPU_BLOCK
    with on_device_of(chunk):
        _accumulate_kernel[accumulate_grid(n, block)](
            chunk, state.mean, state.m2, state.abs_sum, state.log_sum, k, n, state.count,
            eps_bits(state.eps, acc64), BLOCK=block, ACC64=acc64, num_warps=GPU_WARPS,
            enable_fp_fusion=False)  # the reference's rounding, like the C++ and CUDA kernels
    state.count += k

