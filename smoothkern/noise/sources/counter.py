"""Counter-based input noise: the noise contract's pure function of (seed, example, sample,
element), drawn by a kernel set's ``perturb``."""

from __future__ import annotations

from torch import Tensor

from ...ops.backends import PerturbFn
from .base import Chunk, NoiseSource


class CounterNoise(NoiseSource):
    """Gaussian or uniform noise added to the inputs, every level of a sweep from the same draws.

    Args:
        x (Tensor[B, ...]): clean inputs.
        sigma (Tensor[S, B] or Tensor[S, B, N]): float32 σ per level and example, or per level,
            example and element (N = elements per example; several joined inputs with their
            own σ).
        seed: the stream's 64-bit seed.
        noise: "gaussian" or "uniform".
        perturb: the kernel set's perturb op (``Backend.perturb``).
        example_index (LongTensor[B] or None): the examples' indices in the noise stream (None:
            their positions 0..B-1).
    """

    def __init__(self, x: Tensor, sigma: Tensor, seed: int, noise: str,
                 perturb: PerturbFn, example_index: Tensor | None = None) -> None:
        self.x, self.sigma, self.seed, self.noise, self.perturb = x, sigma, seed, noise, perturb
        self.example_index = example_index
        self.levels, self.batch = sigma.shape[0], x.shape[0]

    def draw(self, start: int, count: int) -> Chunk:
        if self.example_index is None:      # kernel sets of users may not take the keyword
            rows = self.perturb(self.x, self.sigma, self.seed, start, count, self.noise)
        else:
            rows = self.perturb(self.x, self.sigma, self.seed, start, count, self.noise,
                                example_index=self.example_index)
        return Chunk(start, count, rows)

    def subset(self, index: Tensor) -> CounterNoise:
        index = index.to(self.x.device)
        own = index if self.example_index is None else self.example_index[index]
        return CounterNoise(self.x[index], self.sigma[:, index], self.seed, self.noise,
                            self.perturb, own)
