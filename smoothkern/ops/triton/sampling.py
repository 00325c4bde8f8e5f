"""The stratified design in Triton: the nested Latin hypercube's word and its z.

The same chain as :func:`smoothkern.noise.sampling.stratified_bits` and ``csrc/sampling.h``
(``stratified_word``, ``word_to_noise``): sample i of level l = bit_length(i) takes the parent
``swap_or_not(i - 2**(l-1))`` keyed by Philox counter (j, l, b, STRATA_STREAM), shares its first
l - 1 bits, flips bit l and keeps its own Philox word (j, i, b, 0) below. Every lane of a block
follows its own element's chain; the chains have different lengths, so the loop runs the
longest one possible (levels strictly fall: bit_length(i) + 1 steps) with finished lanes
masked. The words are bit-identical to the reference; z is Acklam's inverse normal CDF in
float64 (as the C++ and CUDA kernels), within one float32 rounding of the reference's ndtri.

All integer work is uint32 (wrapping products, logical shifts, unsigned compares). Every
float64 constant is built with ``tl.full(..., tl.float64)``, so its bits do not depend on how a
Triton version types a Python float literal (float32 where it stands alone); the compile test
reads them back from the PTX.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from ...noise import sampling as ref
from ...noise.kinds import NoiseKind, parse_noise_kind
from ...noise.philox import check_seed
from .launch import interpreted, on_device_of

# constexprs: jit code may not read plain globals on the GPU compiler
STRATA_STREAM = tl.constexpr(ref.STRATA_STREAM)
SWAP_ROUNDS = tl.constexpr(ref.SWAP_ROUNDS)
GOLDEN = tl.constexpr(ref.GOLDEN)
MIX_M0 = tl.constexpr(ref.MIX_M0)
MIX_M1 = tl.constexpr(ref.MIX_M1)
TOP_BIT = tl.constexpr(0x80000000)
ALL_BITS = tl.constexpr(0xFFFFFFFF)
SQRT3_F64 = tl.constexpr(1.7320508075688772)
# Acklam's rational approximation (csrc/sampling.h), highest power first, Horner's order:
# tail (t < T_LOW) p(q) / r(q) with q = sqrt(-2 log t); middle c a(c^2) / b(c^2), c = t - 1/2.
T_LOW = tl.constexpr(0.02425)
TAIL_P = tl.constexpr((-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
                       -2.549732539343734e+00, 4.374664141464968e+00, 2.938163982698783e+00))
TAIL_R = tl.constexpr((7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
                       3.754408661907416e+00, 1.0))
MID_A = tl.constexpr((-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02,
                      1.383577518672690e+02, -3.066479806614716e+01, 2.506628277459239e+00))
MID_B = tl.constexpr((-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
                      6.680131188771972e+01, -1.328068155288572e+01, 1.0))


@triton.jit
def f64(value: tl.constexpr):
    """A float64 scalar holding ``value`` exactly (a literal alone is typed float32)."""
    return tl.full([], value, tl.float64)


@triton.jit
def bit_length(c):
    """Number of bits of each uint32 value (0 for 0): the level of a sample index."""
    level = c * 0
    rest = c
    for k in tl.static_range(5):
        shift = 16 >> k
        big = rest >= (1 << shift)
        level += tl.where(big, shift, 0).to(tl.uint32)
        rest = tl.where(big, rest >> shift, rest)
    return level + (rest > 0).to(tl.uint32)


@triton.jit
def depth_bits(level, need):
    """The bits of depths ``level + 1 .. need`` of a 32-bit word (uint32, 0..32; depth 1 is the
    top bit): ``own_mask(level) & ~own_mask(need)`` of ``csrc/sampling.h``."""
    # own_mask(l) = 2**(32 - l) - 1; a shift by 32 is undefined on a GPU
    below_level = tl.where(level >= 32, 0, ALL_BITS >> tl.minimum(level, 31))
    below_need = tl.where(need >= 32, 0, ALL_BITS >> tl.minimum(need, 31))
    return (below_level & (below_need ^ ALL_BITS)).to(tl.uint32)


@triton.jit
def swap_or_not(x, n, k0, k1, k2, k3):
    """A keyed bijection of ``[0, 2**n)`` applied to ``x`` (uint32 vectors, n <= 31).

    Twelve rounds on 4 or more points, one on 2, none on 1 (then the result is 0). The three
    lowbias32 mixes of a round (``mix32`` of the reference) are written out: a jit call costs
    the interpreter milliseconds, and there are 36 per step of the chain.
    """
    size_minus_one = ((x * 0 + 1) << n) - 1
    golden = x * 0 + GOLDEN
    round_base = k0
    bit_base = k2
    for q in tl.static_range(SWAP_ROUNDS):
        # round_key = mix32((k0 + q GOLDEN) ^ k1), bit_key = mix32((k2 + q GOLDEN) ^ k3)
        round_key = round_base ^ k1
        bit_key = bit_base ^ k3
        round_key ^= round_key >> 16
        bit_key ^= bit_key >> 16
        round_key *= MIX_M0
        bit_key *= MIX_M0
        round_key ^= round_key >> 15
        bit_key ^= bit_key >> 15
        round_key *= MIX_M1
        bit_key *= MIX_M1
        round_key ^= round_key >> 16
        bit_key ^= bit_key >> 16
        # (round_key * (N - 1)) >> 32: the high word of the 64-bit product, in 0 .. N - 2
        partner = x ^ (1 + tl.umulhi(round_key, size_minus_one))
        # swap when the top bit of mix32(max(x, partner) ^ bit_key) is set
        h = tl.where(x > partner, x, partner) ^ bit_key
        h ^= h >> 16
        h *= MIX_M0
        h ^= h >> 15
        h *= MIX_M1
        h ^= h >> 16
        swap = (h >> 31) == 1
        if q == 0:
            swap = swap & (n >= 1)
        else:
            swap = swap & (n >= 2)
        x = tl.where(swap, partner, x)
        round_base += golden                 # k0 + q * GOLDEN, wrapping
        bit_base += golden
    return tl.where(n > 0, x, 0).to(tl.uint32)


@triton.jit
def stratified_word(seed, element, sample, example, steps):
    """The word U of (seed, example, sample, element), ``csrc/sampling.h``'s
    ``stratified_word`` lane by lane.

    Args:
        element, sample, example: uint32, broadcast (the perturb kernel: a vector of elements,
            scalar sample and example).
        steps: an int32 scalar at least ``bit_length(max sample) + 1``: the chain of every lane
            ends within that many steps (levels strictly fall).
    """
    zero = element * 0 + sample * 0
    point = zero + sample
    example_v = zero + example
    stream = zero + STRATA_STREAM
    word = zero
    flips = zero
    need = zero + 32                         # depths 1 .. need still to be filled
    active = point == point
    for _step in range(steps):            # finished lanes (active false) change nothing
        level = bit_length(point)
        own, _, _, _ = tl.philox(seed, element, point, example_v, zero)
        word |= tl.where(active, own & depth_bits(level, need), 0).to(tl.uint32)
        more = active & (point > 0)
        n = tl.where(more, level - 1, 0).to(tl.uint32)
        flips |= tl.where(more, 1 << (31 - n), 0).to(tl.uint32)      # bit of depth `level`
        rank = tl.where(more, point - (1 << n), 0).to(tl.uint32)
        k0, k1, k2, k3 = tl.philox(seed, element, level, example_v, stream)
        parent = swap_or_not(rank, n, k0, k1, k2, k3)
        point = tl.where(more, parent, point)
        need = tl.where(more, level, need)
        active = more
    return word ^ flips


@triton.jit
def horner(x, COEFFS: tl.constexpr, COUNT: tl.constexpr):
    """The polynomial with the ``COUNT`` float64 coefficients ``COEFFS`` (highest power first)
    at x (float64)."""
    acc = tl.full([], COEFFS[0], tl.float64)
    for k in tl.static_range(1, COUNT):
        acc = acc * x + tl.full([], COEFFS[k], tl.float64)
    return acc


@triton.jit
def lower_normal_quantile(t):
    """Inverse normal CDF on (0, 1/2] in float64 (Acklam, relative error 1.2e-9), the
    operations of ``csrc/sampling.h`` in its order: both branches, then a select."""
    q = tl.sqrt(f64(-2.0) * tl.log(t))       # float64: sqrt.rn.f64 (tested on the PTX)
    tail = horner(q, TAIL_P, 6) / horner(q, TAIL_R, 5)
    c = t - f64(0.5)
    r = c * c
    mid = horner(r, MID_A, 6) * c / horner(r, MID_B, 6)
    return tl.where(t < f64(T_LOW), tail, mid)


@triton.jit
def word_to_noise(word, GAUSSIAN: tl.constexpr):
    """z in float32 from a uniform word, u = (U + 1/2) / 2**32, through the lower tail
    t = min(u, 1 - u) so that U and ~U give z and -z exactly."""
    upper = word >= TOP_BIT
    low = tl.where(upper, word ^ ALL_BITS, word).to(tl.uint32)
    t = (f64(2.0) * low.to(tl.float64) + f64(1.0)) * f64(1.1641532182693481e-10)   # 2**-33
    if GAUSSIAN:
        mag = -lower_normal_quantile(t)
    else:
        mag = f64(SQRT3_F64) * (f64(1.0) - f64(2.0) * t)
    return tl.where(upper, mag, -mag).to(tl.float32)


# ----------------------------------------------------------------------------------------------
# test entry points: the words against smoothkern.noise.sampling.stratified_bits, and z of
# chosen words (the tails, the branch point) against the reference's


@triton.jit(do_not_specialize=["total", "seed", "steps"])
def _stratified_words_kernel(example_ptr, sample_ptr, element_ptr, out_ptr, total, seed, steps,
                             BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < total
    example = tl.load(example_ptr + offs, mask=mask, other=0).to(tl.uint32)
    sample = tl.load(sample_ptr + offs, mask=mask, other=0).to(tl.uint32)
    element = tl.load(element_ptr + offs, mask=mask, other=0).to(tl.uint32)
    word = stratified_word(seed, element, sample, example, steps)
    tl.store(out_ptr + offs, word.to(tl.int64), mask=mask)


@triton.jit(do_not_specialize=["total"])
def _word_noise_kernel(word_ptr, out_ptr, total, BLOCK: tl.constexpr, GAUSSIAN: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < total
    word = tl.load(word_ptr + offs, mask=mask, other=0).to(tl.uint32)
    tl.store(out_ptr + offs, word_to_noise(word, GAUSSIAN), mask=mask)


def _block(total: int) -> int:
    return min(triton.next_power_of_2(total), 1 << 16) if interpreted() else 256


def _flat_indices(*indices: Tensor) -> tuple[Tensor, ...]:
    shape, device = indices[0].shape, indices[0].device
    if any(t.shape != shape or t.device != device for t in indices):
        raise ValueError("indices must have one shape and one device")
    return tuple(t.reshape(-1).to(torch.int64).contiguous() for t in indices)


def stratified_words(seed: int, example: Tensor, sample: Tensor, element: Tensor) -> Tensor:
    """The nested Latin hypercube's words U, int64 in [0, 2**32), one per index triple.

    Args:
        seed: the stream's 64-bit seed.
        example, sample, element (Tensor[...] int64, one shape): the counters (b, i, j), each
            below 2**32.

    Returns:
        Tensor[...] int64: ``stratified_bits(seed, example, sample, element)``.
    """
    seed = check_seed(seed)
    shape = example.shape
    example, sample, element = _flat_indices(example, sample, element)
    out = torch.empty_like(element)
    total = element.numel()
    if total:
        # the longest chain (reads the values; the kernel takes each modulo 2**32)
        steps = int((sample & 0xFFFFFFFF).max()).bit_length() + 1
        block = _block(total)
        with on_device_of(element):
            _stratified_words_kernel[(triton.cdiv(total, block),)](
                example, sample, element, out, total, seed, steps, BLOCK=block)
    return out.view(shape)


def word_noise(words: Tensor, noise: NoiseKind | str = NoiseKind.GAUSSIAN) -> Tensor:
    """z in float32 of uniform words (int64 in [0, 2**32)), as the stratified perturb: the
    kernels' counterpart of the reference's ``_from_word``."""
    gaussian = parse_noise_kind(noise) is NoiseKind.GAUSSIAN
    (flat,) = _flat_indices(words)
    out = torch.empty(flat.shape, dtype=torch.float32, device=flat.device)
    if flat.numel():
        block = _block(flat.numel())
        with on_device_of(flat):
            _word_noise_kernel[(triton.cdiv(flat.numel(), block),)](
                flat, out, flat.numel(), BLOCK=block, GAUSSIAN=gaussian)
    return out.view(words.shape)
