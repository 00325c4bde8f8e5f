"""Fake (meta) kernels of the C++ ops: shapes and dtypes only, so torch.compile can trace them.

Imported by :mod:`smoothkern._ext` once the schemas are loaded.
"""

from __future__ import annotations

import torch
from torch import Tensor


@torch.library.register_fake("smoothkern::perturb")
def _perturb_fake(x: Tensor, sigma: Tensor, seed: int, start: int, count: int,
                  noise: str, example_index: Tensor | None = None) -> Tensor:
    torch._check(sigma.dim() in (2, 3) and sigma.shape[1] == x.shape[0])
    if example_index is not None:  # the values (< 2**32) are checked by the real kernel only
        torch._check(example_index.dim() == 1 and example_index.shape[0] == x.shape[0])
        torch._check(example_index.dtype == torch.int64)
    rows = count * sigma.shape[0] * x.shape[0]
    return x.new_empty((rows, *x.shape[1:]))


@torch.library.register_fake("smoothkern::accumulate_")
def _accumulate_fake(mean: Tensor, m2: Tensor, abs_sum: Tensor, log_sum: Tensor, chunk: Tensor,
                     count: int, eps: float) -> None:
    torch._check(chunk.dim() == 2 and chunk.shape[1] == mean.shape[0])


@torch.library.register_fake("smoothkern::philox_bits")
def _philox_bits_fake(seed: int, example: Tensor, sample: Tensor, element: Tensor) -> Tensor:
    return example.new_empty((*example.shape, 4))
