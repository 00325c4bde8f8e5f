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

The drawn rows reach the method as a per-row ``baseline`` through the engine's
:class:`~smoothkern.noise.sources.DrawnBaselines` source (``BaselineDraws.rows`` is its callable).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..noise.philox import philox4x32
from .arguments import Layout
from .errors import CaptumArgumentError

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
            raise CaptumArgumentError(
                f"baselines must have one entry per input ({len(inputs)}), got "
                             f"{len(items)}")
        for i, (b, x) in enumerate(zip(items, inputs)):
            if isinstance(b, Tensor):
                if b.dim() != x.dim() or tuple(b.shape[1:]) != tuple(x.shape[1:]) or \
                        b.shape[0] < 1:
                    raise CaptumArgumentError(
                        f"with draw_baseline_from_distrib=True, baselines[{i}] "
                                     f"must be [M, ...] rows shaped like inputs[{i}] "
                                     f"{tuple(x.shape[1:])}; got {tuple(b.shape)}")
            elif isinstance(b, bool) or not isinstance(b, (int, float)):
                raise TypeError(f"baselines[{i}] must be a Tensor or a number, got "
                                f"{type(b).__name__}")
        self.items = tuple(b.to(x.device) if isinstance(b, Tensor) else b
                           for b, x in zip(items, inputs))
        self.inputs, self.layout, self.seed = inputs, layout, seed
        self.batch = inputs[0].shape[0]
        # rng="captum": numpy's draw for the full chunks is made now, before any chunk, and the
        # remainder chunk's when it is first asked for (after its noise), both as Captum does,
        # so that an algorithm drawing from numpy itself (GradientShap) sees Captum's sequence
        self.captum_size = self.full_samples = self.rest_samples = 0
        self.full: dict[int, Tensor] = {}
        self.rest: dict[int, Tensor] | None = None
        if captum_chunks is not None:
            self.captum_size = captum_chunks[0]
            self.full_samples = sum(c for c in captum_chunks if c == self.captum_size)
            self.rest_samples = sum(captum_chunks) - self.full_samples
            self.full = self._numpy_draws(self.captum_size)

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
        if not self.captum_size:
            return counter_indices(self.seed, k, size, start, count, self.batch)
        if start + count > self.full_samples and self.rest is None:
            self.rest = self._numpy_draws(self.rest_samples)
        # Captum reuses one draw for every full chunk; the remainder chunk has its own. A range
        # may be part of a chunk (a chunk split after an out-of-memory error).
        return torch.stack([self.full[k][i % self.captum_size] if i < self.full_samples
                            else self.rest[k][i - self.full_samples]
                            for i in range(start, start + count)])

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
