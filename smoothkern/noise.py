"""Noise: the counter-based Philox stream, its pure-torch reference, and σ planning.

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
of the same seed and offset ``j``. A noisy copy is ``x[b] + sigma[s, b] * z`` (or, with a σ per
element, ``x[b, j] + sigma[s, b, j] * z``): every noise level of a sweep reuses the same ``z``
(common random numbers), so level 0.1 inside a sweep equals a run at 0.1 alone. Chunking, backend
and device never change ``z``. The counter words are 32-bit, so sample indices stop at 2**32
(``start + count <= 2**32``, refused beyond by every backend), as do B and N.

``b`` is the example's index in the caller's data, not necessarily its position in the batch:
every perturb takes ``example_index`` (LongTensor[B], values in ``0 .. 2**32 - 1``), and row
``b`` of the batch then draws with counter word ``example_index[b]``. Without it (None) the
word is the position ``b``. So example k gets the same noise in any batch, alone or with others
(adaptive sample counts drop finished examples; data-set runs split the data into batches).

Every backend (this module's torch reference, the C++ op, the Triton and CUDA kernels) draws the
same raw integers; the floats agree to rounding of ``log``/``cos``.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence

import torch
from torch import Tensor

NOISE_KINDS = ("gaussian", "uniform")

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
                   noise: str = "gaussian") -> Tensor:
    """Unit-variance draws ``z(seed, b, i, j)`` in float32, broadcast over the index tensors."""
    r0, r1 = raw_bits(seed, example, sample, element)
    if noise == "uniform":
        return SQRT3 * (2.0 * uint_to_unit(r0) - 1.0)
    u1 = torch.clamp(uint_to_unit(r0), min=GAUSS_U1_FLOOR)
    u2 = uint_to_unit(r1)
    return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(TWO_PI * u2)


def perturb_reference(x: Tensor, sigma: Tensor, seed: int, start: int, count: int,
                      noise: str = "gaussian", *,
                      example_index: Tensor | None = None) -> Tensor:
    """Noisy copies of ``x`` for samples ``start .. start+count-1``, pure torch.

    Args:
        x (Tensor[B, ...]): clean inputs, any floating dtype; N elements per example.
        sigma (Tensor[S, B] or Tensor[S, B, N]): float32 noise standard deviation per level and
            example, or per level, example and element (inputs of different σ joined into one
            row). The draw z is the same either way; only the scale differs.
        seed: 64-bit seed of the stream.
        start: index of the first sample.
        count: number of samples k; ``start + count <= 2**32``.
        noise: "gaussian" or "uniform".
        example_index (Tensor[B] int64 or None): the examples' indices in the caller's data, on
            x's device, each in ``0 .. 2**32 - 1``: row b draws the noise of example
            ``example_index[b]`` (counter word 2). None: the position b in the batch.

    Returns:
        Tensor[k * S * B, ...] in ``x.dtype``, sample-major: row ``(i * S + s) * B + b``.

    Raises:
        ValueError: bad shapes, devices, noise kind, sample indices past 2**32, or a bad
            ``example_index`` (dtype, shape, device, values outside ``0 .. 2**32 - 1``).
    """
    check_perturb_args(x, sigma, start, count, noise, example_index)
    seed = check_seed(seed)
    batch = x.shape[0]
    levels = sigma.shape[0]
    flat = x.reshape(batch, -1)
    n = flat.shape[1]
    dev = x.device
    sample = torch.arange(start, start + count, dtype=torch.int64, device=dev).view(count, 1, 1)
    if example_index is None:
        example = torch.arange(batch, dtype=torch.int64, device=dev).view(1, batch, 1)
    else:
        example = example_index.view(1, batch, 1)
    element = torch.arange(n, dtype=torch.int64, device=dev).view(1, 1, n)
    z = standard_noise(seed, example, sample, element, noise)            # [k, B, N] float32
    scale = sigma.float().view(1, levels, batch, n if sigma.dim() == 3 else 1)
    noisy = flat.float().view(1, 1, batch, n) + scale * z.unsqueeze(1)   # [k, S, B, N]
    return noisy.to(x.dtype).reshape(count * levels * batch, *x.shape[1:])


# ----------------------------------------------------------------------------------------------
# sigma planning


def _as_levels(value: float | Sequence[float] | Tensor, name: str) -> tuple[Tensor, bool]:
    """Turns a scalar, sequence or tensor of noise levels into float64 [S] or [S, B].

    Returns the tensor and whether the user asked for a sweep (a sequence / leading dim).
    """
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a number, a sequence of numbers or a Tensor, not bool")
    if isinstance(value, (int, float)):
        levels, sweep = torch.tensor([float(value)], dtype=torch.float64), False
    elif isinstance(value, Tensor):
        if not (value.is_floating_point() or value.dtype in (torch.int32, torch.int64)):
            raise TypeError(f"{name} must be a real tensor, got dtype {value.dtype}")
        levels, sweep = value.detach().to("cpu", torch.float64), None
    elif isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) == 0:
            raise ValueError(f"{name} is an empty sequence")
        try:
            levels = torch.tensor([float(v) for v in value], dtype=torch.float64)
        except (TypeError, ValueError):
            raise TypeError(f"{name} must contain numbers, got {value!r}") from None
        sweep = True
    else:
        raise TypeError(f"{name} must be a number, a sequence of numbers or a Tensor, "
                        f"got {type(value).__name__}")
    if not torch.isfinite(levels).all():
        raise ValueError(f"{name} must be finite, got {value!r}")
    if (levels < 0).any():
        raise ValueError(f"{name} must be non-negative, got {value!r}")
    return levels, sweep


def plan_sigma(x: Tensor, noise_level: float | Sequence[float] | None,
               stdevs: float | Sequence[float] | Tensor | None) -> tuple[Tensor, bool]:
    """Per-example noise standard deviations.

    ``noise_level`` is relative to each example's range (the SmoothGrad paper's
    ``sigma = level * (max x_b - min x_b)``); ``stdevs`` is absolute: a float, a Tensor[B] (one σ
    per example), a sequence (a sweep) or a Tensor[S, B].

    Args:
        x (Tensor[B, ...]): clean inputs.

    Returns:
        (sigma (Tensor[S, B] float32 on x's device), is_sweep)
    """
    batch = x.shape[0]
    if stdevs is not None and noise_level is not None:
        raise ValueError("give either noise_level (relative to each example's range) or stdevs "
                         "(absolute), not both")
    if stdevs is None:
        if noise_level is None:
            raise ValueError("one of noise_level or stdevs is needed")
        levels, sweep = _as_levels(noise_level, "noise_level")
        if levels.dim() != 1:
            raise ValueError(f"noise_level must be a number or a 1-d sequence, got shape "
                             f"{tuple(levels.shape)}")
        flat = x.detach().reshape(batch, -1).to(torch.float64)
        span = (flat.max(dim=1).values - flat.min(dim=1).values).cpu()
        sigma = levels.view(-1, 1) * span.view(1, -1)
        return sigma.to(x.device, torch.float32), bool(sweep)
    levels, sweep = _as_levels(stdevs, "stdevs")
    if sweep is None:  # a Tensor: [B] per example, [S, B] a sweep, 0-d a scalar
        if levels.dim() == 0:
            levels, sweep = levels.view(1, 1).expand(1, batch), False
        elif levels.dim() == 1:
            if levels.shape[0] != batch:
                raise ValueError(f"stdevs tensor must have one value per example ({batch}), "
                                 f"got shape {tuple(levels.shape)}")
            levels, sweep = levels.view(1, batch), False
        elif levels.dim() == 2 and levels.shape[1] == batch:
            sweep = True
        else:
            raise ValueError(f"stdevs tensor must be [B] or [S, B] with B={batch}, "
                             f"got shape {tuple(levels.shape)}")
        return levels.to(x.device, torch.float32), sweep
    sigma = levels.view(-1, 1).expand(-1, batch)
    return sigma.to(x.device, torch.float32).contiguous(), bool(sweep)


def check_noise_kind(noise: str) -> str:
    if noise not in NOISE_KINDS:
        raise ValueError(f"unknown noise {noise!r}; choose one of {NOISE_KINDS}")
    return noise


def check_counter(value: int, name: str) -> int:
    """A non-negative Python int (``start``, ``count``)."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got bool")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__}") from None
    if value < 0:
        raise ValueError(f"{name} must be non-negative, got {value}")
    return value


def check_perturb_args(x: Tensor, sigma: Tensor, start: int, count: int, noise: str,
                       example_index: Tensor | None = None) -> None:
    """The argument checks every perturb (reference, C++, Triton, CUDA) makes before drawing.

    Args:
        x (Tensor[B, ...]): clean inputs, floating point, B >= 1, N elements per example.
        sigma (Tensor[S, B] or Tensor[S, B, N]): on x's device.
        example_index (Tensor[B] int64 or None): on x's device, values in ``0 .. 2**32 - 1``
            (reading them costs one device synchronisation on a GPU).

    Raises:
        ValueError: a bad shape or device, an unknown noise kind, or indices that do not fit
            the 32-bit Philox counter words (samples ``start + count``, examples B, elements N,
            each at most 2**32; example indices below 2**32): past them the noise would
            silently repeat.
    """
    check_noise_kind(noise)
    start = check_counter(start, "start")
    count = check_counter(count, "count")
    if x.dim() < 1 or x.shape[0] < 1:
        raise ValueError(f"x must be [B, ...] with B >= 1, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"x must be floating point, got {x.dtype}")
    batch = x.shape[0]
    n = x.numel() // batch
    if not isinstance(sigma, Tensor) or not (
            (sigma.dim() == 2 and sigma.shape[1] == batch)
            or (sigma.dim() == 3 and tuple(sigma.shape[1:]) == (batch, n))):
        got = tuple(sigma.shape) if isinstance(sigma, Tensor) else type(sigma).__name__
        raise ValueError(f"sigma must be [S, {batch}] (per example) or [S, {batch}, {n}] "
                         f"(per element), got {got}")
    if sigma.device != x.device:
        raise ValueError(f"sigma is on {sigma.device}, x on {x.device}")
    if start + count > MAX_COUNTER:
        raise ValueError(f"sample indices reach start + count = {start + count} > 2**32: the "
                         f"sample index is a 32-bit Philox counter word (the noise would repeat)")
    if n > MAX_COUNTER or batch > MAX_COUNTER:
        raise ValueError(f"at most 2**32 examples and 2**32 elements per example (32-bit "
                         f"Philox counter words), got x of shape {tuple(x.shape)}")
    if example_index is not None:
        check_example_index(example_index, batch, x.device)


def check_example_index(example_index: Tensor, batch: int, device: torch.device) -> None:
    """``example_index`` must be an int64 Tensor[B] on ``device`` with values in 0 .. 2**32 - 1.

    Raises:
        ValueError: anything else (a value past the 32-bit counter word would alias another
            example's noise).
    """
    if not isinstance(example_index, Tensor):
        raise ValueError(f"example_index must be an int64 Tensor[{batch}] or None, got "
                         f"{type(example_index).__name__}")
    if example_index.dtype != torch.int64:
        raise ValueError(f"example_index must be int64 (LongTensor), got {example_index.dtype}")
    if tuple(example_index.shape) != (batch,):
        raise ValueError(f"example_index must be [B] = [{batch}] (one index per example), got "
                         f"{tuple(example_index.shape)}")
    if example_index.device != device:
        raise ValueError(f"example_index is on {example_index.device}, x on {device}")
    bad = (example_index < 0) | (example_index >= MAX_COUNTER)
    if bool(bad.any()):
        first = int(example_index[bad][0])
        raise ValueError(f"example indices must be in 0 .. 2**32 - 1 (a 32-bit Philox counter "
                         f"word), got {first}")


def check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    return seed
