"""Triton perturb: replicate, draw, scale, add and cast in one pass (and a raw-bits kernel).

Same counters as :func:`smoothkern.ops.perturb.perturb_reference`: ``tl.philox(seed, j, i, b, 0)``
(b: ``example_index[b]`` when the caller gives the examples' indices),
``uint_to_uniform_float`` and Box-Muller's first output, so the raw integers match the reference
exactly and the floats to rounding. The sampling designs are drawn in the kernel (``SAMPLING``,
a :class:`~smoothkern.noise.sampling.Sampling`'s ``code``): antithetic negates sample 2k's
i.i.d. draw for sample 2k + 1; stratified follows the chain of :mod:`.sampling`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from ...noise.kinds import NoiseKind
from ...noise.philox import check_seed
from ...noise.sampling import Sampling, parse_sampling
from ..perturb import check_perturb_args
from .launch import interpreted, on_device_of, perturb_grid
from .sampling import bit_length, stratified_word, word_to_noise

# Elements per program. GPU: 1024 with 4 warps (8 per thread in flight; benchmarks/gpu.py
# reports the bandwidth). Interpreter: every program costs milliseconds, so one program covers
# a whole example.
GPU_BLOCK = 1024
GPU_WARPS = 4
INTERPRETER_MAX_BLOCK = 1 << 16
SQRT3 = tl.constexpr(1.7320508075688772)  # a constexpr: jit code may not read plain globals
GAUSSIAN = tl.constexpr(NoiseKind.GAUSSIAN.code)  # the NOISE constexpr's values
ANTITHETIC = tl.constexpr(Sampling.ANTITHETIC.code)  # the SAMPLING constexpr's values
STRATIFIED = tl.constexpr(Sampling.STRATIFIED.code)


def block_size(n: int) -> int:
    if interpreted():
        return min(triton.next_power_of_2(n), INTERPRETER_MAX_BLOCK)
    return GPU_BLOCK


@triton.jit
def standard_noise(seed, element, sample, example, NOISE: tl.constexpr):
    """z(seed, b, i, j) in float32 for a block of elements (integer vectors/scalars).

    ``NOISE`` is a :class:`~smoothkern.noise.NoiseKind`'s ``code``.

    Box-Muller as ``tl.random.pair_uniform_to_normal``'s first output, but with the correctly
    rounded square root (``sqrt_rn``; ``tl.sqrt`` is ``sqrt.approx`` on NVIDIA GPUs), as the C++
    and CUDA kernels.
    """
    zero = tl.zeros_like(element).to(tl.uint32)
    r0, r1, _, _ = tl.philox(seed, element.to(tl.uint32), zero + sample, zero + example, zero)
    u1 = tl.random.uint_to_uniform_float(r0)
    if NOISE == GAUSSIAN:
        u2 = tl.random.uint_to_uniform_float(r1)
        u1 = tl.maximum(1.0e-7, u1)  # noise.GAUSS_U1_FLOOR; 2 pi below: noise.TWO_PI
        z = tl.sqrt_rn(-2.0 * tl.log(u1)) * tl.cos(6.283185307179586 * u2)
    else:
        z = SQRT3 * (2.0 * u1 - 1.0)
    return z


@triton.jit
def sampled_noise(seed, element, sample, example, NOISE: tl.constexpr, SAMPLING: tl.constexpr):
    """z(seed, b, i, j) in float32 under a sampling design (``SAMPLING``: a
    :class:`~smoothkern.noise.sampling.Sampling`'s ``code``); i.i.d. is :func:`standard_noise`.

    ``element`` is a vector, ``sample`` and ``example`` uint32 scalars.
    """
    if SAMPLING == STRATIFIED:
        steps = (bit_length(sample) + 1).to(tl.int32)        # the longest chain
        z = word_to_noise(stratified_word(seed, element.to(tl.uint32), sample, example, steps),
                          NOISE == GAUSSIAN)
    elif SAMPLING == ANTITHETIC:
        z = standard_noise(seed, element, (sample >> 1) << 1, example, NOISE)
        z = tl.where((sample & 1) == 1, -z, z)
    else:
        z = standard_noise(seed, element, sample, example, NOISE)
    return z


# start, seed and the sizes vary between calls of one run: no specialisation on their value
# (== 1, divisible by 16), which would recompile the kernel when a chunk starts elsewhere.
@triton.jit(do_not_specialize=["n", "batch", "levels", "rows", "seed", "start"])
def _perturb_kernel(x_ptr, sigma_ptr, index_ptr, out_ptr, n, batch, levels, rows, seed, start,
                    BLOCK: tl.constexpr, NOISE: tl.constexpr, PER_ELEMENT: tl.constexpr,
                    HAS_INDEX: tl.constexpr, SAMPLING: tl.constexpr):
    # Grid: (element blocks, min(rows, 65535)); rows r = i * batch + b strided along y.
    # All offsets are int64: batch * n and the element index itself can pass 2**31.
    # HAS_INDEX: row b draws as example index_ptr[b] (int64, < 2**32), else as example b.
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    n64 = tl.zeros([], tl.int64) + n
    batch64 = tl.zeros([], tl.int64) + batch
    level_stride = batch64 * n64                  # one noise level further in out
    for row in range(tl.program_id(1), rows, tl.num_programs(1)):
        row64 = tl.zeros([], tl.int64) + row
        b = row64 % batch64
        i = row64 // batch64
        x = tl.load(x_ptr + b * n64 + offs, mask=mask, other=0.0).to(tl.float32)
        if HAS_INDEX:
            example = tl.load(index_ptr + b).to(tl.uint32)
        else:
            example = b.to(tl.uint32)
        z = sampled_noise(seed, offs, (start + i).to(tl.uint32), example, NOISE, SAMPLING)
        out_row = out_ptr + (i * levels * batch64 + b) * n64 + offs
        for s in range(levels):
            if PER_ELEMENT:  # sigma[s, b, j]
                sd = tl.load(sigma_ptr + (s * batch64 + b) * n64 + offs, mask=mask, other=0.0)
            else:            # sigma[s, b]
                sd = tl.load(sigma_ptr + s * batch64 + b)
            tl.store(out_row, (x + sd * z).to(out_ptr.dtype.element_ty), mask=mask)
            out_row += level_stride


@triton.jit(do_not_specialize=["total", "seed"])
def _philox_bits_kernel(example_ptr, sample_ptr, element_ptr, out_ptr, total, seed,
                        BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < total
    example = tl.load(example_ptr + offs, mask=mask, other=0).to(tl.uint32)
    sample = tl.load(sample_ptr + offs, mask=mask, other=0).to(tl.uint32)
    element = tl.load(element_ptr + offs, mask=mask, other=0).to(tl.uint32)
    r0, r1, r2, r3 = tl.philox(seed, element, sample, example, tl.zeros_like(element))
    base = out_ptr + offs * 4
    tl.store(base, r0.to(tl.int64), mask=mask)
    tl.store(base + 1, r1.to(tl.int64), mask=mask)
    tl.store(base + 2, r2.to(tl.int64), mask=mask)
    tl.store(base + 3, r3.to(tl.int64), mask=mask)


def perturb(x: Tensor, sigma: Tensor, seed: int, start: int, count: int,
            noise: NoiseKind | str = NoiseKind.GAUSSIAN, *,
            example_index: Tensor | None = None,
            sampling: Sampling | str = Sampling.IID) -> Tensor:
    """Noisy copies; the contract of :mod:`smoothkern.ops.perturb`.

    Args:
        x (Tensor[B, ...]): clean inputs, N elements per example.
        sigma (Tensor[S, B] or Tensor[S, B, N]): standard deviations per example or per element
            (cast to float32), on x's device.
        seed, start, count, noise: as the reference; ``start + count <= 2**32``.
        example_index (Tensor[B] int64 or None): the examples' indices in the caller's data
            (counter word 2 of row b, taken modulo 2**32; values not checked here), on x's
            device. None: the position in the batch.
        sampling: the design, as :func:`~smoothkern.ops.perturb.perturb_reference`: "iid",
            "antithetic" or "stratified" (a :class:`~smoothkern.noise.sampling.Sampling`).

    Returns:
        Tensor[count * S * B, ...] in ``x.dtype``, row ``(i * S + s) * B + b``.

    Raises:
        ValueError: :func:`~smoothkern.ops.perturb.check_perturb_args`, or an unknown design.
    """
    kind = check_perturb_args(x, sigma, start, count, noise, example_index)
    design = parse_sampling(sampling)
    seed = check_seed(seed)
    batch = x.shape[0]
    levels = sigma.shape[0]
    x = x.contiguous()
    sigma = sigma.to(torch.float32).contiguous()
    n = x.numel() // batch
    out = torch.empty((count * levels * batch, *x.shape[1:]), dtype=x.dtype, device=x.device)
    if out.numel() == 0:
        return out
    has_index = example_index is not None
    # Without indices the pointer is never read (HAS_INDEX is a constexpr): pass sigma.
    index = example_index.contiguous() if has_index else sigma
    block = block_size(n)
    grid = perturb_grid(count * batch, n, block)
    with on_device_of(x):
        # No fused multiply-add: float(x) + sigma * z rounds like the reference.
        _perturb_kernel[grid](x, sigma, index, out, n, batch, levels, count * batch, seed, start,
                              BLOCK=block, NOISE=kind.code,
                              PER_ELEMENT=sigma.dim() == 3, HAS_INDEX=has_index,
                              SAMPLING=design.code, num_warps=GPU_WARPS, enable_fp_fusion=False)
    return out


def philox_bits(seed: int, example: Tensor, sample: Tensor, element: Tensor) -> Tensor:
    """The four Philox words for counters (element, sample, example, 0), int64 [..., 4]."""
    seed = check_seed(seed)
    if not (example.shape == sample.shape == element.shape):
        raise ValueError("philox_bits: indices must have the same shape")
    if not (example.device == sample.device == element.device):
        raise ValueError("philox_bits: indices must be on one device")
    shape = example.shape
    example, sample, element = (t.reshape(-1).contiguous() for t in (example, sample, element))
    out = torch.empty((example.numel(), 4), dtype=torch.int64, device=example.device)
    total = example.numel()
    if total:
        block = block_size(total)
        with on_device_of(example):
            _philox_bits_kernel[(triton.cdiv(total, block),)](example, sample, element, out,
                                                             total, seed, BLOCK=block)
    return out.view(*shape, 4)
