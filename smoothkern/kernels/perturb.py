"""Triton perturb: replicate, draw, scale, add and cast in one pass (and a raw-bits kernel).

Same counters as :func:`smoothkern.noise.perturb_reference`: ``tl.philox(seed, j, i, b, 0)``,
``uint_to_uniform_float`` and ``pair_uniform_to_normal`` (first output), so the raw integers
match the reference exactly and the floats to rounding.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch import Tensor

from ..noise import check_noise_kind, check_seed

# Elements per program. GPU: 1024 with 4 warps (8 per thread, enough in flight to saturate
# bandwidth on A100/H100-class parts; not yet measured here, benchmarks/gpu.py reports it).
# Interpreter: every program costs milliseconds, so one program covers a whole example.
GPU_BLOCK = 1024
GPU_WARPS = 4
INTERPRETER_MAX_BLOCK = 1 << 16
SQRT3 = tl.constexpr(1.7320508075688772)  # a constexpr: jit code may not read plain globals


def interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def block_size(n: int) -> int:
    if interpreted():
        return min(triton.next_power_of_2(n), INTERPRETER_MAX_BLOCK)
    return GPU_BLOCK


@triton.jit
def standard_noise(seed, element, sample, example, GAUSSIAN: tl.constexpr):
    """z(seed, b, i, j) in float32 for a block of elements (int32/uint32 vectors/scalars)."""
    zero = tl.zeros_like(element).to(tl.uint32)
    r0, r1, _, _ = tl.philox(seed, element.to(tl.uint32), zero + sample, zero + example, zero)
    u1 = tl.random.uint_to_uniform_float(r0)
    if GAUSSIAN:
        u2 = tl.random.uint_to_uniform_float(r1)
        z, _ = tl.random.pair_uniform_to_normal(u1, u2)
    else:
        z = SQRT3 * (2.0 * u1 - 1.0)
    return z


@triton.jit
def _perturb_kernel(x_ptr, sigma_ptr, out_ptr, n, batch, levels, seed, start,
                    BLOCK: tl.constexpr, GAUSSIAN: tl.constexpr):
    # Grid: (count * batch rows, element blocks). row = i * batch + b.
    row = tl.program_id(0)
    b = row % batch
    i = row // batch
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + b.to(tl.int64) * n + offs, mask=mask, other=0.0).to(tl.float32)
    z = standard_noise(seed, offs, (start + i).to(tl.uint32), b.to(tl.uint32), GAUSSIAN)
    out_row = out_ptr + (i.to(tl.int64) * levels * batch + b) * n + offs
    for s in range(levels):
        sd = tl.load(sigma_ptr + s * batch + b)
        tl.store(out_row, (x + sd * z).to(out_ptr.dtype.element_ty), mask=mask)
        out_row += batch * n


@triton.jit
def _philox_bits_kernel(example_ptr, sample_ptr, element_ptr, out_ptr, total, seed,
                        BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < total
    example = tl.load(example_ptr + offs, mask=mask, other=0).to(tl.uint32)
    sample = tl.load(sample_ptr + offs, mask=mask, other=0).to(tl.uint32)
    element = tl.load(element_ptr + offs, mask=mask, other=0).to(tl.uint32)
    r0, r1, r2, r3 = tl.philox(seed, element, sample, example, tl.zeros_like(element))
    base = out_ptr + offs.to(tl.int64) * 4
    tl.store(base, r0.to(tl.int64), mask=mask)
    tl.store(base + 1, r1.to(tl.int64), mask=mask)
    tl.store(base + 2, r2.to(tl.int64), mask=mask)
    tl.store(base + 3, r3.to(tl.int64), mask=mask)


def perturb(x: Tensor, sigma: Tensor, seed: int, start: int, count: int,
            noise: str = "gaussian") -> Tensor:
    """Noisy copies; the contract of :func:`smoothkern.noise.perturb_reference`.

    Args:
        x (Tensor[B, ...]): clean inputs.
        sigma (Tensor[S, B]): float32 standard deviations, on x's device.

    Returns:
        Tensor[count * S * B, ...] in ``x.dtype``, row ``(i * S + s) * B + b``.
    """
    check_noise_kind(noise)
    seed = check_seed(seed)
    if x.dim() < 1 or x.shape[0] < 1:
        raise ValueError(f"x must be [B, ...] with B >= 1, got {tuple(x.shape)}")
    batch = x.shape[0]
    if sigma.dim() != 2 or sigma.shape[1] != batch:
        raise ValueError(f"sigma must be [S, {batch}], got {tuple(sigma.shape)}")
    if sigma.device != x.device:
        raise ValueError(f"sigma is on {sigma.device}, x on {x.device}")
    levels = sigma.shape[0]
    x = x.contiguous()
    sigma = sigma.to(torch.float32).contiguous()
    n = x.numel() // batch
    out = torch.empty((count * levels * batch, *x.shape[1:]), dtype=x.dtype, device=x.device)
    if out.numel() == 0:
        return out
    block = block_size(n)
    grid = (count * batch, triton.cdiv(n, block))
    # No fused multiply-add: float(x) + sigma * z rounds like the reference (uniform: bit-equal).
    _perturb_kernel[grid](x, sigma, out, n, batch, levels, seed, start, BLOCK=block,
                          GAUSSIAN=noise == "gaussian", num_warps=GPU_WARPS,
                          enable_fp_fusion=False)
    return out


def philox_bits(seed: int, example: Tensor, sample: Tensor, element: Tensor) -> Tensor:
    """The four Philox words for counters (element, sample, example, 0), int64 [..., 4]."""
    seed = check_seed(seed)
    shape = example.shape
    example, sample, element = (t.reshape(-1).contiguous() for t in (example, sample, element))
    out = torch.empty((example.numel(), 4), dtype=torch.int64, device=example.device)
    total = example.numel()
    if total:
        block = block_size(total)
        _philox_bits_kernel[(triton.cdiv(total, block),)](example, sample, element, out, total,
                                                         seed, BLOCK=block)
    return out.view(*shape, 4)
