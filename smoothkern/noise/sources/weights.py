"""The engine's noise source for NoiseGrad/FusionGrad: input noise plus the model draw of each
row.

The engine counts samples t = 0 .. n_models·n_samples - 1 per example. Sample t is input sample
``t mod n_samples`` of model draw ``t div n_samples``, and its input noise is sample t of the
counter stream: model 0's inputs are exactly smooth_grad's samples 0 .. n_samples-1, and every
model draw gets fresh input noise.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Chunk, NoiseSource
from .counter import CounterNoise


class WeightNoiseSource(NoiseSource):
    """Rows of ``inputs`` (noisy or not) with the model draw each row belongs to.

    Args:
        inputs: the input noise (a :class:`CounterNoise`, σ = 0 for NoiseGrad alone).
        n_samples: input samples per model draw.

    The chunk's extra ``model_draw`` (LongTensor[count·S·B], on the host) is the draw of each
    row; the
    method (:class:`smoothkern.noise.weights.method.OnDrawnWeights`) runs each row on it.
    """

    def __init__(self, inputs: CounterNoise, n_samples: int) -> None:
        self.inputs, self.n_samples = inputs, n_samples
        self.levels, self.batch = inputs.levels, inputs.batch

    def draw(self, start: int, count: int) -> Chunk:
        chunk = self.inputs.draw(start, count)
        # on the host: the method reads which draws a pass holds (min, max, sizes) without a
        # device synchronisation, and moves the per-row positions to the device itself
        samples = torch.arange(start, start + count, dtype=torch.int64)
        per_sample = self.levels * self.batch
        model_draw = (samples // self.n_samples).repeat_interleave(per_sample)
        return Chunk(start, count, chunk.rows, {"model_draw": model_draw})

    def subset(self, index: Tensor) -> WeightNoiseSource:
        return WeightNoiseSource(self.inputs.subset(index), self.n_samples)
