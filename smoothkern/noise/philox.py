"""The counter generator: Philox4x32-10 in pure torch, the noise contract's standard draw.

The noise contract
------------------
The standard draw ``z`` for example ``b``, sample ``i`` and element ``j`` (the flat index of the
element inside one example) is a pure function of ``(seed, b, i, j)``:

    key     = (seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF)             # 64-bit seed
    counter = (j, i, b, 0)                                               # four uint32 words
    r0, r1, r2, r3 = Philox4x32-10(counter, key)

    uniform:  u = uint_to_unit(r0)                     in [0, 1)
              z = sqrt(3) * (2u - 1)                   variance 1, half-width sqrt(3)
    gaussian: u1 = max(1e-7, uint_to_unit(r0)), u2 = uint_to_unit(r1)
              z = sqrt(-2 log u1) * cos(2 pi u2)       Box-Muller, first output

``uint_to_unit`` is Triton's ``uint_to_uniform_float`` (reinterpret as int32, fold negatives with
``-x - 1``, multiply by 2**-31), so with ``i = b = 0`` the stream equals ``tl.rand``/``tl.randn``
of the same seed and offset ``j``. The counter words are 32-bit, so sample indices, examples and
elements each stop at 2**32 (:data:`MAX_COUNTER`).

``b`` is the example's index in the caller's data, not necessarily its position in the batch
(the perturb op's ``example_index``, :mod:`smoothkern.ops.perturb`). So example k gets the same
noise in any batch, alone or with others.

Every backend (the torch reference, the C++ op, the Triton and CUDA kernels) draws the same raw
integers; the floats agree to rounding of ``log``/``cos``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .kinds import NoiseKind, parse_noise_kind

# Philox4x32-10 constants (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", 2011).
PHILOX_M0 = 0xD2511F53
PHILOX_M1 = 0xCD9E8D57
PHILOX_W0 = 0x9E3779B9
PHILOX_W1 = 0xBB67AE85
PHILOX_ROUNDS = 10
MASK32 = 0xFFFFFFFF
UNIT_SCALE = 4.6566127342e-10  # 2**-31, as float32 in Triton's uint_to_uniform_float
GAUSS_U1_FLOOR = 1.0e-7
SQRT3 = math.sqrt(3.0)
# Sample, example and element indices are uint32 Philox counter words: each at most 2**32.
MAX_COUNTER = 2**32
TWO_PI = 6.283185307179586


def _mulhilo(a: int, b: Tensor) -> tuple[Tensor, Tensor]:
    """High and low 32-bit words of ``a * b`` for a uint32 constant and uint32 values in int64.

    The int64 product wraps modulo 2**64, which keeps both words exact.
    """
    prod = b * a
    return (prod >> 32) & MASK32, prod & MASK32


def philox4x32(c0: Tensor, c1: Tensor, c2: Tensor, c3: Tensor, seed: int,
               rounds: int = PHILOX_ROUNDS) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Philox4x32 on int64 tensors holding uint32 values (broadcastable), pure torch.

    Args:
        c0, c1, c2, c3: counter words, int64 tensors with values in [0, 2**32).
        seed: 64-bit key (low word is key0, high word key1).

    Returns:
        The four output words as int64 tensors with values in [0, 2**32).
    """
    k0 = seed & MASK32
    k1 = (seed >> 32) & MASK32
    c0, c1, c2, c3 = torch.broadcast_tensors(c0, c1, c2, c3)
    for _ in range(rounds):
        hi0, lo0 = _mulhilo(PHILOX_M0, c0)
        hi1, lo1 = _mulhilo(PHILOX_M1, c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0 = (k0 + PHILOX_W0) & MASK32
        k1 = (k1 + PHILOX_W1) & MASK32
    return c0, c1, c2, c3


def uint_to_unit(r: Tensor) -> Tensor:
    """uint32 (held in int64) to float32 in [0, 1), bit-compatible with Triton."""
    signed = torch.where(r >= 2**31, r - 2**32, r)
    folded = torch.where(signed < 0, -signed - 1, signed)
    return folded.to(torch.float32) * torch.tensor(UNIT_SCALE, dtype=torch.float32)


def raw_bits(seed: int, example: Tensor, sample: Tensor, element: Tensor) -> tuple[Tensor, Tensor]:
    """The first two Philox output words for counters ``(element, sample, example, 0)``.

    All index tensors are int64 and broadcast together.
    """
    zero = torch.zeros((), dtype=torch.int64, device=element.device)
    r0, r1, _, _ = philox4x32(element, sample, example, zero, seed)
    return r0, r1


def standard_noise(seed: int, example: Tensor, sample: Tensor, element: Tensor,
                   noise: NoiseKind | str = NoiseKind.GAUSSIAN) -> Tensor:
    """Unit-variance draws ``z(seed, b, i, j)`` in float32, broadcast over the index tensors."""
    kind = parse_noise_kind(noise)
    r0, r1 = raw_bits(seed, example, sample, element)
    if kind is NoiseKind.UNIFORM:
        return SQRT3 * (2.0 * uint_to_unit(r0) - 1.0)
    u1 = torch.clamp(uint_to_unit(r0), min=GAUSS_U1_FLOOR)
    u2 = uint_to_unit(r1)
    return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(TWO_PI * u2)


def check_seed(seed: int) -> int:
    """The generator's key: a Python int in [0, 2**64)."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    return seed
