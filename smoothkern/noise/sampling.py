"""Sampling designs: how the standard draws ``z(seed, b, i, j)`` spread over the sample index.

Every design keeps the noise contract (:mod:`smoothkern.noise.philox`): ``z`` is a pure function
of (seed, example b, sample i, element j), each element's marginal is exactly the requested
distribution, and elements are independent of each other. Only the joint law of one element's
draws over the samples changes.

``iid``
    Today's draws, bit for bit (:func:`smoothkern.noise.philox.standard_noise`).

``antithetic``
    Sample ``2k`` is the i.i.d. draw of sample ``2k``; sample ``2k + 1`` is its negation.

``stratified``
    A nested Latin hypercube by doubling, per element. Samples ``0 .. 2**k - 1`` occupy each of
    the ``2**k`` strata ``[s / 2**k, (s + 1) / 2**k)`` of the uniform once, for every k. Sample
    ``i`` of level ``l = bit_length(i)`` (rank ``r = i - 2**(l-1)`` among the level's new
    points) has a *parent* ``p = perm_l(r)``, a point of an earlier level: ``perm_l`` is a keyed
    bijection of ``[0, 2**(l-1))`` drawn per (seed, b, j, l) from Philox counter
    ``(j, l, b, STRATA_STREAM)``. The point shares its parent's first ``l - 1`` bits (the
    parent's level-``l-1`` stratum), takes the other half (bit ``l`` flipped) and its bits below
    are its own Philox word ``r0`` of counter ``(j, i, b, 0)``. Following parents down to sample 0
    takes at most ``l`` steps (levels strictly fall; about ``l / 2`` on average). The 32-bit word
    ``U`` becomes ``u = (U + 1/2) / 2**32`` and ``z = Phi^-1(u)`` (Gaussian) or
    ``sqrt(3) (2u - 1)`` (uniform). Given the chain, ``U`` is uniform, so each marginal is exact
    whatever the permutations; the permutations only make the pairing of strata across elements
    independent and uniform (a van der Corput sequence, scrambled or not, couples every
    element to the same pattern over i, which is worse than i.i.d.).

The keyed bijection is swap-or-not (Hoang, Morris and Rogaway, CRYPTO 2012): in round q, x is
paired with ``x ^ K_q`` (``K_q`` uniform in ``1 .. N-1``) and the pair swapped when a keyed bit
of ``max(x, x ^ K_q)`` is set. One round is exact for N = 2; twelve rounds for larger N leave
the distribution of each position and of pairs within 1 % of uniform (tested).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .kinds import NoiseKind, OpChoice, parse_noise_kind
from .philox import MASK32, philox4x32, standard_noise

# Last Philox counter word of the permutation keys (the noise uses 0, drawn baselines 1).
STRATA_STREAM = 2
# Swap-or-not rounds on domains of 4 or more points (one round is exact on 2 points).
SWAP_ROUNDS = 12
GOLDEN = 0x9E3779B9
# lowbias32 (C. Wellons, hash-prospector): the round keys and the round bits.
MIX_M0 = 0x7FEB352D
MIX_M1 = 0x846CA68B
SQRT3 = math.sqrt(3.0)


class Sampling(OpChoice):
    """How one element's draws spread over the samples (codes 0 iid, 1 antithetic,
    2 stratified)."""

    IID = "iid"
    ANTITHETIC = "antithetic"
    STRATIFIED = "stratified"


SAMPLING_NAMES = tuple(s.value for s in Sampling)


def parse_sampling(sampling: Sampling | str) -> Sampling:
    """``sampling`` as a :class:`Sampling`: the enum itself or its name.

    Raises:
        ValueError: anything else.
    """
    return Sampling.parse(sampling, "sampling")


def mix32(x: Tensor) -> Tensor:
    """lowbias32 on uint32 values held in int64 (a bijection of [0, 2**32))."""
    x = x ^ (x >> 16)
    x = (x * MIX_M0) & MASK32
    x = x ^ (x >> 15)
    x = (x * MIX_M1) & MASK32
    return x ^ (x >> 16)


def bit_length(c: Tensor) -> Tensor:
    """Number of bits of each value in [0, 2**32) (0 for 0): the level of a sample index."""
    level = torch.zeros_like(c)
    rest = c
    for shift in (16, 8, 4, 2, 1):
        big = rest >= (1 << shift)
        level = level + big * shift
        rest = torch.where(big, rest >> shift, rest)
    return level + (rest > 0).long()


def swap_or_not(x: Tensor, n: Tensor, key: tuple[Tensor, Tensor, Tensor, Tensor]) -> Tensor:
    """A keyed bijection of ``[0, 2**n)`` applied to ``x`` (int64 tensors, broadcast; n <= 31).

    Args:
        x: values in ``[0, 2**n)``.
        n: the domain's bits per value (0: the one point 0).
        key: four uint32 words (int64 tensors) per value.
    """
    k0, k1, k2, k3 = key
    size_minus_one = (1 << n) - 1
    rounds = torch.where(n >= 2, SWAP_ROUNDS, torch.where(n == 1, 1, 0))
    for q in range(SWAP_ROUNDS):
        round_key = mix32(((k0 + q * GOLDEN) & MASK32) ^ k1)
        bit_key = mix32(((k2 + q * GOLDEN) & MASK32) ^ k3)
        partner = x ^ (1 + ((round_key * size_minus_one) >> 32))
        rep = torch.maximum(x, partner)
        swap = ((mix32(rep ^ bit_key) >> 31) == 1) & (q < rounds)
        x = torch.where(swap, partner, x)
    return torch.where(n > 0, x, torch.zeros_like(x))


def _own_mask(level: Tensor) -> Tensor:
    """Bits of a 32-bit word below depth ``level`` (depth 1 is the top bit)."""
    return (torch.ones_like(level) << (32 - level)) - 1


def stratified_bits(seed: int, example: Tensor, sample: Tensor, element: Tensor) -> Tensor:
    """The 32-bit word U of the nested Latin hypercube (int64 in [0, 2**32)), broadcast.

    The stratum of sample i at level k is ``U >> (32 - k)``; samples ``0 .. 2**k - 1`` of one
    (seed, example, element) hold each of the ``2**k`` strata once.
    """
    example, sample, element = torch.broadcast_tensors(example, sample, element)
    shape = example.shape
    example, point, element = (t.reshape(-1).to(torch.int64) for t in (example, sample, element))
    word = torch.zeros_like(point)
    flips = torch.zeros_like(point)
    need = torch.full_like(point, 32)          # depths 1 .. need still to be filled
    lanes = torch.arange(point.numel(), device=point.device)
    zero = torch.zeros((), dtype=torch.int64, device=point.device)
    stream = torch.full((), STRATA_STREAM, dtype=torch.int64, device=point.device)
    while lanes.numel():
        level = bit_length(point)
        own, _, _, _ = philox4x32(element, point, example, zero, seed)
        take = _own_mask(level) & ~_own_mask(need)
        word.index_put_((lanes,), word[lanes] | (own & take))
        more = point > 0
        flips.index_put_((lanes,), flips[lanes] | torch.where(more, 1 << (32 - level), zero))
        n = (level - 1).clamp(min=0)
        rank = torch.where(more, point - (1 << n), zero)
        key = philox4x32(element, level, example, stream, seed)
        parent = swap_or_not(rank, n, key)
        keep = more.nonzero().view(-1)
        lanes, need = lanes[keep], level[keep]
        point, example, element = parent[keep], example[keep], element[keep]
    return (word ^ flips).view(shape)


def stratified_prefix_bits(seed: int, example: Tensor, element: Tensor, count: int) -> Tensor:
    """U of samples ``0 .. count - 1`` built level by level: Tensor[count, *broadcast shape].

    The same words as :func:`stratified_bits` (tested), by the other route: each level's new
    points copy their parents' words, so the work is O(count) per element rather than
    O(count log count). For studies that draw whole prefixes; the kernels use the chain.
    """
    example, element = torch.broadcast_tensors(example.to(torch.int64), element.to(torch.int64))
    dev = element.device
    zero = torch.zeros((), dtype=torch.int64, device=dev)
    stream = torch.full((), STRATA_STREAM, dtype=torch.int64, device=dev)
    points = torch.arange(count, dtype=torch.int64, device=dev).view(-1, *([1] * element.dim()))
    own, _, _, _ = philox4x32(element, points, example, zero, seed)   # [count, ...]
    words = own.clone()
    level = 1
    while (1 << (level - 1)) < count:
        lo, hi = 1 << (level - 1), min(1 << level, count)
        rank = torch.arange(hi - lo, dtype=torch.int64, device=dev).view(-1, *([1] * element.dim()))
        n = torch.full((), level - 1, dtype=torch.int64, device=dev)
        key = philox4x32(element, torch.full((), level, dtype=torch.int64, device=dev), example,
                         stream, seed)
        parent = swap_or_not(rank.expand(hi - lo, *element.shape), n, key)
        parent_words = torch.gather(words[:lo], 0, parent)
        top = MASK32 & ~((1 << (32 - level + 1)) - 1)                # depths 1 .. level-1
        words[lo:hi] = ((parent_words & top) | ((parent_words ^ (1 << (32 - level)))
                                                & (1 << (32 - level)))
                        | (own[lo:hi] & ((1 << (32 - level)) - 1)))
        level += 1
    return words


def _from_word(word: Tensor, kind: NoiseKind) -> Tensor:
    """z from a uniform 32-bit word: ``Phi^-1(u)`` or ``sqrt(3)(2u - 1)``, u = (U + 1/2) / 2**32.

    Computed from the lower tail ``t = min(u, 1 - u)`` (exact in float64), so U and ``~U`` give
    z and -z exactly.
    """
    upper = word >= 2**31
    low = torch.where(upper, word ^ MASK32, word)             # in [0, 2**31)
    t = (2.0 * low.to(torch.float64) + 1.0) * 2.0**-33          # in (0, 1/2)
    if kind is NoiseKind.UNIFORM:
        mag = SQRT3 * (1.0 - 2.0 * t)
    else:
        mag = -torch.special.ndtri(t)
    return torch.where(upper, mag, -mag).to(torch.float32)


def sampled_noise(seed: int, example: Tensor, sample: Tensor, element: Tensor,
                  noise: NoiseKind | str = NoiseKind.GAUSSIAN,
                  sampling: Sampling | str = Sampling.IID) -> Tensor:
    """Unit-variance draws ``z(seed, b, i, j)`` in float32 under a sampling design, pure torch.

    The reference every backend's perturb is checked against. Index tensors are int64 and
    broadcast together; sample indices below 2**32.

    Args:
        seed: the stream's 64-bit seed.
        example, sample, element: counter words (b, i, j).
        noise: "gaussian" or "uniform".
        sampling: "iid" (equals :func:`standard_noise`), "antithetic" or "stratified".
    """
    kind = parse_noise_kind(noise)
    design = parse_sampling(sampling)
    if design is Sampling.IID:
        return standard_noise(seed, example, sample, element, kind)
    if design is Sampling.ANTITHETIC:
        z = standard_noise(seed, example, sample & ~1, element, kind)
        return torch.where((sample & 1) == 1, -z, z)
    return _from_word(stratified_bits(seed, example, sample, element), kind)
