"""Counter-based input noise: the noise contract's pure function of (seed, example, sample,
element), drawn by a kernel set's ``perturb``."""

from __future__ import annotations

from torch import Tensor

from ...ops.backends import KERNEL_SETS, PerturbFn
from ...ops.perturb import perturb_reference
from ..sampling import Sampling, parse_sampling
from .base import Chunk, NoiseSource

# The perturbs that take ``sampling=``: every built-in kernel set's (torch, C++, Triton, CUDA);
# a user's own kernel set draws non-i.i.d. designs with the reference.
_TAKE_SAMPLING = tuple(backend.perturb for backend in KERNEL_SETS)


def draw_rows(perturb: PerturbFn, x: Tensor, sigma: Tensor, seed: int, start: int, count: int,
              noise: str, example_index: Tensor | None, sampling: Sampling) -> Tensor:
    """``perturb(x, sigma, seed, start, count, noise)`` of a kernel set, passing only the
    keywords it needs: a user's kernel set may take neither ``example_index`` nor ``sampling``,
    so i.i.d. draws leave out what is not given, and a non-i.i.d. design is drawn by ``perturb``
    when it is a built-in kernel set's, else by the pure-torch reference (the same values)."""
    if sampling is not Sampling.IID:
        draw = perturb if perturb in _TAKE_SAMPLING else perturb_reference
        return draw(x, sigma, seed, start, count, noise, example_index=example_index,
                    sampling=sampling)
    if example_index is None:
        return perturb(x, sigma, seed, start, count, noise)
    return perturb(x, sigma, seed, start, count, noise, example_index=example_index)


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
        sampling: how each element's draws spread over the samples
            (:class:`~smoothkern.noise.sampling.Sampling` or its name: "iid", "antithetic",
            "stratified"). "iid" draws with ``perturb``; the others too when ``perturb`` is
            a built-in kernel set's (torch, C++, Triton, CUDA: each draws the designs
            itself), else with the pure-torch
            :func:`~smoothkern.ops.perturb.perturb_reference` on x's device (a user's own
            kernel set may not take the design; the values are the contract's either way).
    """

    def __init__(self, x: Tensor, sigma: Tensor, seed: int, noise: str,
                 perturb: PerturbFn, example_index: Tensor | None = None, *,
                 sampling: Sampling | str = Sampling.IID) -> None:
        self.x, self.sigma, self.seed, self.noise, self.perturb = x, sigma, seed, noise, perturb
        self.example_index = example_index
        self.sampling = parse_sampling(sampling)
        self.levels, self.batch = sigma.shape[0], x.shape[0]

    def draw(self, start: int, count: int) -> Chunk:
        rows = draw_rows(self.perturb, self.x, self.sigma, self.seed, start, count, self.noise,
                         self.example_index, self.sampling)
        return Chunk(start, count, rows)

    def subset(self, index: Tensor) -> CounterNoise:
        index = index.to(self.x.device)
        own = index if self.example_index is None else self.example_index[index]
        return CounterNoise(self.x[index], self.sigma[:, index], self.seed, self.noise,
                            self.perturb, own, sampling=self.sampling)
