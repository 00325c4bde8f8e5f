"""The perturb op: noisy copies of the inputs from the counter generator, in one place.

Contract
--------
::

    perturb(x[B, ...], sigma[S, B] or [S, B, N], seed, start, count, noise, *, example_index=None)
        -> noisy[count * S * B, ...] in x.dtype, sample-major, row r = (i * S + s) * B + b:
           noisy[r, j] = float(x[b, j]) + sigma[s, b(, j)] * z(seed, e_b, start + i, j)

``z`` is the standard draw of :mod:`smoothkern.noise.philox` (``noise`` a
:class:`~smoothkern.noise.NoiseKind` or its name), computed in float32, the product and the sum
rounded as written (no fused multiply-add), then cast to ``x.dtype``. ``e_b`` is
``example_index[b]`` (the example's index in the caller's data) or the position ``b``. Every
level of a sweep reuses the same ``z``; chunking (``start``, ``count``), backend and device never
change it. ``start + count <= 2**32``, B and N at most 2**32 (32-bit counter words).

Implementations, each tested against :func:`perturb_reference`:

* :func:`perturb_reference` (below): pure torch, the "torch" kernel set;
* ``torch.ops.smoothkern.perturb``: the C++ CPU kernel (``csrc/cpu/perturb.cpp``) and the CUDA
  kernel (``csrc/cuda/perturb.cu``), schema in ``csrc/smoothkern.cpp``; :func:`perturb` wraps it;
* :func:`smoothkern.ops.triton.perturb.perturb`: the Triton kernel.

Checks
------
:func:`check_perturb_args` runs on every pass of every implementation: shapes, dtypes, devices,
counter ranges, and ``example_index``'s dtype, shape and device -- never its values, whose read
would cost a host synchronisation per pass on a GPU. :func:`check_example_index` checks the
values once per call, at the public entry points (``smooth_grad``, ``noise_grad``, the drop-in).
Past that (a direct call of an implementation or of ``torch.ops.smoothkern.perturb``), the
values are the caller's responsibility: every implementation takes ``example_index[b]`` modulo
2**32 (the uint32 counter word), so an index outside ``0 .. 2**32 - 1`` aliases another
example's noise, the same on every backend, and never reads out of bounds.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..noise.kinds import NoiseKind, parse_noise_kind
from ..noise.philox import MASK32, MAX_COUNTER, check_seed
from ..noise.sampling import Sampling, parse_sampling, sampled_noise
from . import extension


def perturb_reference(x: Tensor, sigma: Tensor, seed: int, start: int, count: int,
                      noise: NoiseKind | str = NoiseKind.GAUSSIAN, *,
                      example_index: Tensor | None = None,
                      sampling: Sampling | str = Sampling.IID) -> Tensor:
    """Noisy copies of ``x`` for samples ``start .. start+count-1``, pure torch.

    Args:
        x (Tensor[B, ...]): clean inputs, any floating dtype; N elements per example.
        sigma (Tensor[S, B] or Tensor[S, B, N]): float32 noise standard deviation per level and
            example, or per level, example and element (inputs of different σ joined into one
            row). The draw z is the same either way; only the scale differs.
        seed: 64-bit seed of the stream.
        start: index of the first sample.
        count: number of samples k; ``start + count <= 2**32``.
        noise: a :class:`~smoothkern.noise.NoiseKind` or its name, "gaussian" or "uniform".
        example_index (Tensor[B] int64 or None): the examples' indices in the caller's data, on
            x's device, each in ``0 .. 2**32 - 1`` (not checked here: see
            :func:`check_example_index`): row b draws the noise of example
            ``example_index[b]`` (counter word 2). None: the position b in the batch.
        sampling: a :class:`~smoothkern.noise.sampling.Sampling` or its name: "iid" (the
            draws above), "antithetic" or "stratified" (:mod:`smoothkern.noise.sampling`).

    Returns:
        Tensor[k * S * B, ...] in ``x.dtype``, sample-major: row ``(i * S + s) * B + b``.

    Raises:
        ValueError: bad shapes, devices, noise kind, sample indices past 2**32, or an
            ``example_index`` of the wrong dtype, shape or device.
    """
    kind = check_perturb_args(x, sigma, start, count, noise, example_index)
    sampling = parse_sampling(sampling)
    seed = check_seed(seed)
    batch = x.shape[0]
    levels = sigma.shape[0]
    flat = x.reshape(batch, -1)
    n = flat.shape[1]
    dev = x.device
    sample = torch.arange(start, start + count, dtype=torch.int64, device=dev).view(count, 1, 1)
    if example_index is None:
        example = torch.arange(batch, dtype=torch.int64, device=dev).view(1, batch, 1)
    else:  # the uint32 counter word, as the kernels' cast
        example = (example_index & MASK32).view(1, batch, 1)
    element = torch.arange(n, dtype=torch.int64, device=dev).view(1, 1, n)
    z = sampled_noise(seed, example, sample, element, kind, sampling)    # [k, B, N] float32
    scale = sigma.float().view(1, levels, batch, n if sigma.dim() == 3 else 1)
    noisy = flat.float().view(1, 1, batch, n) + scale * z.unsqueeze(1)   # [k, S, B, N]
    return noisy.to(x.dtype).reshape(count * levels * batch, *x.shape[1:])


# ----------------------------------------------------------------------------------------------
# argument checks


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


def check_perturb_args(x: Tensor, sigma: Tensor, start: int, count: int,
                       noise: NoiseKind | str,
                       example_index: Tensor | None = None) -> NoiseKind:
    """The argument checks every perturb (reference, C++, Triton, CUDA) makes before drawing.

    Reads no tensor value (no host synchronisation), so it runs on every pass.

    Args:
        x (Tensor[B, ...]): clean inputs, floating point, B >= 1, N elements per example.
        sigma (Tensor[S, B] or Tensor[S, B, N]): on x's device.
        noise: a :class:`~smoothkern.noise.NoiseKind` or its name.
        example_index (Tensor[B] int64 or None): on x's device (dtype, shape and device are
            checked here; the values once per call by :func:`check_example_index`).

    Returns:
        The noise kind as a :class:`~smoothkern.noise.NoiseKind`.

    Raises:
        ValueError: a bad shape or device, an unknown noise kind, or indices that do not fit
            the 32-bit Philox counter words (samples ``start + count``, examples B, elements N,
            each at most 2**32): past them the noise would silently repeat.
    """
    kind = parse_noise_kind(noise)
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
        check_example_index_layout(example_index, batch, x.device)
    return kind


def check_example_index_layout(example_index: Tensor, batch: int, device: torch.device) -> None:
    """``example_index`` must be an int64 Tensor[B] on ``device``; its values are not read.

    Raises:
        ValueError: anything else.
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


def check_example_index(index: Any, batch: int, device: torch.device) -> Tensor | None:
    """A caller's ``example_index``, checked once per call: None, or a LongTensor[B] on ``device``.

    Accepts an int (the first example's index: ``index .. index + B - 1``), a sequence of B ints
    or an integer Tensor[B]. Reads the values (one synchronisation when they sit on a GPU), so
    the public entry points call it once; the passes then check only the layout.

    Raises:
        TypeError: not an int, a sequence of ints or an integer tensor.
        ValueError: not one entry per example, or a value outside ``0 .. 2**32 - 1`` (a 32-bit
            Philox counter word: a larger value would alias another example's noise).
    """
    if index is None:
        return None
    if isinstance(index, bool):
        raise TypeError("example_index must be an int, a sequence of ints or a LongTensor")
    if isinstance(index, int):
        if not 0 <= index <= MAX_COUNTER - batch:
            raise ValueError(f"example_index values must be within 0..2**32-1, got {index}.."
                             f"{index + batch - 1}")
        index = torch.arange(index, index + batch, dtype=torch.int64)
    elif isinstance(index, Tensor):
        if index.is_floating_point() or index.is_complex() or index.dtype == torch.bool:
            raise TypeError(f"example_index must hold integers, got dtype {index.dtype}")
    elif isinstance(index, Sequence) and not isinstance(index, str) and all(
            isinstance(i, int) and not isinstance(i, bool) for i in index):
        outside = [i for i in index if not 0 <= i < MAX_COUNTER]
        if outside:                  # before torch.tensor, which overflows past 2**63
            raise ValueError(f"example_index values must be within 0..2**32-1, got "
                             f"{outside[0]}")
        index = torch.tensor(list(index), dtype=torch.int64)
    else:
        raise TypeError(f"example_index must be an int, a sequence of ints or a LongTensor, "
                        f"got {type(index).__name__}")
    if index.dim() != 1 or index.shape[0] != batch:
        raise ValueError(f"example_index must have one entry per example ({batch}), got shape "
                         f"{tuple(index.shape)}")
    index = index.to(dtype=torch.int64)
    bad = (index < 0) | (index >= MAX_COUNTER)
    if bool(bad.any()):
        raise ValueError(f"example_index values must be within 0..2**32-1 (a 32-bit Philox "
                         f"counter word), got {int(index[bad][0])}")
    return index.to(device=device)


# ----------------------------------------------------------------------------------------------
# the compiled op: fake kernel and Python wrapper


if extension.has_ops():
    @torch.library.register_fake("smoothkern::perturb")
    def _perturb_fake(x: Tensor, sigma: Tensor, seed: int, start: int, count: int,
                      noise: int, example_index: Tensor | None = None,
                      sampling: int = 0) -> Tensor:
        torch._check(sigma.dim() in (2, 3) and sigma.shape[1] == x.shape[0])
        if example_index is not None:
            torch._check(example_index.dim() == 1 and example_index.shape[0] == x.shape[0])
            torch._check(example_index.dtype == torch.int64)
        rows = count * sigma.shape[0] * x.shape[0]
        return x.new_empty((rows, *x.shape[1:]))

    @torch.library.register_fake("smoothkern::philox_bits")
    def _philox_bits_fake(seed: int, example: Tensor, sample: Tensor, element: Tensor) -> Tensor:
        return example.new_empty((*example.shape, 4))


def signed_seed(seed: int) -> int:
    """A seed in [0, 2**64) as the int64 with the same bits (op schemas take int64)."""
    seed = check_seed(seed)
    return seed - 2**64 if seed >= 2**63 else seed


def perturb(x: Tensor, sigma: Tensor, seed: int, start: int, count: int,
            noise: NoiseKind | str = NoiseKind.GAUSSIAN, *,
            example_index: Tensor | None = None,
            sampling: Sampling | str = Sampling.IID) -> Tensor:
    """Noisy copies, the compiled op (C++ on the CPU, CUDA on a GPU); the module's contract.

    Call only when :func:`smoothkern.ops.extension.has_ops` is true.

    Args:
        x (Tensor[B, ...]): clean inputs, N elements per example.
        sigma (Tensor[S, B] or Tensor[S, B, N]): standard deviations per example or per element
            (cast to float32), on x's device.
        seed, start, count, noise: as :func:`perturb_reference`; ``start + count <= 2**32``.
        example_index (Tensor[B] int64 or None): the examples' indices in the caller's data
            (counter word 2 of row b), on x's device. None: the position in the batch.
        sampling: the design, as :func:`perturb_reference` (the op takes ``Sampling.code``).

    Returns:
        Tensor[count * S * B, ...] in ``x.dtype``, row ``(i * S + s) * B + b``.

    Raises:
        ValueError: :func:`check_perturb_args`; the op repeats them in C++ for direct
            ``torch.ops`` calls, which take the noise kind as ``NoiseKind.code``.
    """
    kind = check_perturb_args(x, sigma, start, count, noise, example_index)
    design = parse_sampling(sampling)
    return torch.ops.smoothkern.perturb(x, sigma.to(torch.float32), signed_seed(seed), start,
                                        count, kind.code, example_index, design.code)


def philox_bits(seed: int, example: Tensor, sample: Tensor, element: Tensor) -> Tensor:
    """The four Philox words for counters (element, sample, example, 0) as int64 [..., 4].

    The raw-bits entry point of the compiled op that tests compare with
    :func:`smoothkern.noise.philox4x32`.
    """
    return torch.ops.smoothkern.philox_bits(signed_seed(seed), example, sample, element)
