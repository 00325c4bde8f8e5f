"""``draw_baseline_from_distrib=True``: every noisy row gets its own baseline, drawn at random
from the rows of the given baselines (a distribution ``[M, ...]`` per input, any M).

Two sources, matching the two noise modes:

* counter-based (the default ``rng``): the row of input ``k``'s baselines used by example ``b``,
  sample ``i`` is ``(r0 · M) >> 32``, where ``r0`` is the first word of
  Philox4x32-10(counter = (k, i, b, 1), key = seed). The last counter word is 1 where the noise
  stream has 0, so the draws never reuse noise bits; like the noise they do not depend on how
  samples are split into passes.
* Captum's (``rng="captum"``): the very ``np.random.choice`` calls ``captum.attr.NoiseTunnel``
  makes on numpy's global generator: one per baselines tensor for a full chunk of
  ``nt_samples_batch_size`` samples (Captum reuses those rows for every full chunk), and one
  more for the remainder chunk.

The drawn rows reach the integrated-gradients method through the backend's ``perturb`` (it
knows which samples a pass holds): :func:`with_baseline_draws`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..backends import Backend
from ..noise import philox4x32
from .inputs import Layout

BASELINE_STREAM = 1  # last Philox counter word of the baseline draws (the noise uses 0)


class BaselineDraws:
    """One baseline per noisy row, in the engine's row order ``s*B + b``.

    Args:
        baselines: Captum's ``baselines`` (a Tensor or number, or a tuple with one per input);
            tensors are distributions ``[M, *input_shape]``.
        inputs: the clean inputs, each Tensor[B, ...].
        layout: how the inputs join into the engine's tensor.
        seed: the counter-based stream's seed (``rng="smoothkern"``).
        captum_chunks: Captum's chunk sizes (``rng="captum"``; draws from numpy's global
            generator now, in Captum's order); None for the counter-based draws.
    """

    def __init__(self, baselines: Any, inputs: tuple[Tensor, ...], layout: Layout, seed: int,
                 captum_chunks: list[int] | None = None) -> None:
        items = baselines if isinstance(baselines, tuple) else (baselines,)
        if len(items) != len(inputs):
            raise ValueError(f"baselines must have one entry per input ({len(inputs)}), got "
                             f"{len(items)}")
        for i, (b, x) in enumerate(zip(items, inputs)):
            if isinstance(b, Tensor):
                if b.dim() != x.dim() or tuple(b.shape[1:]) != tuple(x.shape[1:]) or \
                        b.shape[0] < 1:
                    raise ValueError(f"with draw_baseline_from_distrib=True, baselines[{i}] "
                                     f"must be [M, ...] rows shaped like inputs[{i}] "
                                     f"{tuple(x.shape[1:])}; got {tuple(b.shape)}")
            elif isinstance(b, bool) or not isinstance(b, (int, float)):
                raise TypeError(f"baselines[{i}] must be a Tensor or a number, got "
                                f"{type(b).__name__}")
        self.items = tuple(b.to(x.device) if isinstance(b, Tensor) else b
                           for b, x in zip(items, inputs))
        self.inputs, self.layout, self.seed = inputs, layout, seed
        self.batch = inputs[0].shape[0]
        # rng="captum": numpy's draws for the full chunks and for the remainder chunk, made now
        self.captum: tuple[int, dict[int, Tensor], dict[int, Tensor]] | None = None
        if captum_chunks is not None:
            size = captum_chunks[0]
            rest = captum_chunks[-1] if captum_chunks[-1] != size else 0
            full_samples = sum(c for c in captum_chunks if c == size)
            full = self._numpy_draws(size)            # Captum's first draw, before any chunk
            self.captum = (full_samples, full, self._numpy_draws(rest) if rest else {})

    def rows(self, start: int, count: int) -> Tensor:
        """The baselines of samples ``start .. start+count-1``, joined: Tensor[count·B, ...]."""
        parts = []
        for k, (b, x) in enumerate(zip(self.items, self.inputs)):
            shape = (count * self.batch, *x.shape[1:])
            if not isinstance(b, Tensor):
                parts.append(torch.full(shape, float(b), dtype=x.dtype, device=x.device))
                continue
            index = self._indices(k, b.shape[0], start, count)          # [count, B]
            parts.append(b[index.reshape(-1).to(b.device)].to(x.dtype))
        return self.layout.join(parts)

    def _indices(self, k: int, size: int, start: int, count: int) -> Tensor:
        if self.captum is None:
            return counter_indices(self.seed, k, size, start, count, self.batch)
        full_samples, full, rest = self.captum
        # Captum reuses one draw for every full chunk; the remainder chunk has its own
        return full[k] if start < full_samples else rest[k]

    def _numpy_draws(self, samples: int) -> dict[int, Tensor]:
        """One ``np.random.choice`` per baselines tensor, as Captum calls it, with the rows
        reordered from Captum's ``b*k + s`` to ``[k, B]``."""
        out = {}
        for k, b in enumerate(self.items):
            if isinstance(b, Tensor):
                picked = np.random.choice(b.shape[0], samples * self.batch).tolist()
                out[k] = torch.tensor(picked, dtype=torch.int64).view(self.batch, samples).t()
        return out


def counter_indices(seed: int, k: int, size: int, start: int, count: int, batch: int) -> Tensor:
    """Rows ``[count, B]`` drawn uniformly from ``size`` for input ``k``, samples from ``start``."""
    sample = torch.arange(start, start + count, dtype=torch.int64).view(-1, 1)
    example = torch.arange(batch, dtype=torch.int64).view(1, -1)
    word = torch.tensor(k, dtype=torch.int64)
    r0, _, _, _ = philox4x32(word, sample, example, torch.tensor(BASELINE_STREAM), seed)
    return (r0 * size) >> 32


def with_baseline_draws(backend: Backend, method: Any, draws: BaselineDraws) -> Backend:
    """``backend`` whose ``perturb`` also hands the method the pass's drawn baselines."""

    def perturb(x: Tensor, sigma: Tensor, seed: int, start: int, count: int,
                noise: str) -> Tensor:
        rows = draws.rows(start, count)                           # [count·B, ...]
        example = rows.shape[1:]
        levels, batch = sigma.shape                               # engine rows: (i·S + s)·B + b
        method.baseline = rows.view(count, 1, batch, *example).expand(
            count, levels, batch, *example).reshape(count * levels * batch, *example)
        return backend.perturb(x, sigma, seed, start, count, noise)

    return dataclasses.replace(backend, perturb=perturb)
