"""Python entry points of the C++/CUDA ops (``torch.ops.smoothkern.*``), by the registry contract.

The same functions serve the "cpp" and "cuda" backends: the dispatcher picks the kernel from
the tensors' device. Call them only when :func:`smoothkern._ext.has_ops` is true.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .noise import check_perturb_args, check_seed
from .stats import StreamingStats


def signed_seed(seed: int) -> int:
    """A seed in [0, 2**64) as the int64 with the same bits (op schemas take int64)."""
    seed = check_seed(seed)
    return seed - 2**64 if seed >= 2**63 else seed


def perturb(x: Tensor, sigma: Tensor, seed: int, start: int, count: int,
            noise: str = "gaussian", *, example_index: Tensor | None = None) -> Tensor:
    """Noisy copies, the fused op; same contract as :func:`smoothkern.noise.perturb_reference`.

    Args:
        x (Tensor[B, ...]): clean inputs, N elements per example.
        sigma (Tensor[S, B] or Tensor[S, B, N]): standard deviations per example or per element
            (cast to float32), on x's device.
        seed, start, count, noise: as the reference; ``start + count <= 2**32``.
        example_index (Tensor[B] int64 or None): the examples' indices in the caller's data
            (counter word 2 of row b; values in ``0 .. 2**32 - 1``), on x's device. None: the
            position in the batch.

    Returns:
        Tensor[count * S * B, ...] in ``x.dtype``, row ``(i * S + s) * B + b``.

    Raises:
        ValueError: the reference's argument checks (:func:`smoothkern.noise.check_perturb_args`);
            the op repeats them in C++ for direct ``torch.ops`` calls.
    """
    check_perturb_args(x, sigma, start, count, noise, example_index)
    return torch.ops.smoothkern.perturb(x, sigma.to(torch.float32), signed_seed(seed), start,
                                        count, noise, example_index)


def accumulate(state: StreamingStats, chunk: Tensor) -> None:
    """Adds chunk[k, N] to ``state`` (element shape [N]) in place, reading the chunk once."""
    torch.ops.smoothkern.accumulate_(state.mean, state.m2, state.abs_sum, state.log_sum, chunk,
                                     state.count, state.eps)
    state.count += chunk.shape[0]


def philox_bits(seed: int, example: Tensor, sample: Tensor, element: Tensor) -> Tensor:
    """The four Philox words for counters (element, sample, example, 0) as int64 [..., 4].

    The raw-bits entry point that tests compare with :func:`smoothkern.noise.philox4x32`.
    """
    return torch.ops.smoothkern.philox_bits(signed_seed(seed), example, sample, element)
