"""Standard errors of a noise-averaged map that are right for the sampling design.

Under "antithetic" or "stratified" sampling the samples are not independent, so the plain
``std / sqrt(m)`` of the per-sample attributions overstates (stratified) or misstates
(antithetic) the error of their mean. :class:`DesignError` keeps, beside the engine's streaming
statistics, the few sums that give an honest one:

* iid: the sample variance over ``m`` (the usual standard error);
* antithetic: the pairs' means ``(a_2k + a_2k+1) / 2`` are independent, so their sample variance
  over the number of pairs (a trailing unpaired sample is left out of the error);
* stratified: samples ``0 .. h-1`` and ``h .. 2h-1`` (h a power of two) are each a Latin
  hypercube, so ``d_h = |mean_1 - mean_2| / 2`` estimates the error of the mean of the 2h
  samples; the two halves are negatively correlated, so this errs high. One such comparison has
  one degree of freedom per element, and an adaptive run stopped on a lucky low one (a
  tolerance of 0.05 gave errors of 0.07-0.09 on a tabular MLP), so the error is pooled over the
  last ``POOLED_DOUBLINGS`` doublings, each scaled to the current prefix as an i.i.d. error
  would scale: ``se^2 = mean_h(d_h^2 * 2h) / n`` with n the last complete prefix. A stratified
  mean's error falls at least as fast as 1/sqrt(n), so the scaling errs high too (most where
  stratification gains most with n: on a smooth one-dimensional function). Between powers of
  two the error of the last complete prefix is reported (also high: more samples only lower
  the error).

Feed it the per-sample attributions in sample order (chunks ``a[k, N]`` with their ``start``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .sampling import Sampling, parse_sampling

# Doublings of the stratified prefix whose half-against-half errors are pooled (one degree of
# freedom per element each).
POOLED_DOUBLINGS = 4


class DesignError:
    """Streaming standard error of the mean map under a sampling design.

    Args:
        sampling: the design the samples were drawn with.
        shape: the attribution's element shape (e.g. ``[N]``).
        device: where the sums live (float64).
    """

    def __init__(self, sampling: Sampling | str, shape: tuple[int, ...],
                 device: torch.device | str = "cpu") -> None:
        self.sampling = parse_sampling(sampling)
        zeros = lambda: torch.zeros(shape, dtype=torch.float64, device=device)  # noqa: E731
        self.count = 0
        self.total, self.total_sq = zeros(), zeros()     # iid, or pair means (antithetic)
        self.pairs = 0
        self.pending = zeros()                           # antithetic: sample 2k awaiting 2k+1
        self.prefix, self.block = zeros(), zeros()       # stratified: [0, h) and [h, ...)
        self.half = 0                                    # h (0 until one sample is in)
        self.scaled: list[Tensor] = []                   # d_h^2 * 2h of the last doublings

    def update(self, chunk: Tensor, start: int) -> None:
        """Adds per-sample attributions ``chunk[k, *shape]`` of samples ``start .. start+k-1``.

        Raises:
            ValueError: samples out of order (``start`` must equal the count so far).
        """
        if start != self.count:
            raise ValueError(f"samples must arrive in order: expected start {self.count}, "
                             f"got {start}")
        for row in chunk.to(torch.float64):
            self._add(row)

    def _add(self, row: Tensor) -> None:
        i = self.count
        self.count += 1
        if self.sampling is Sampling.IID:
            self.total += row
            self.total_sq += row * row
        elif self.sampling is Sampling.ANTITHETIC:
            if i % 2 == 0:
                self.pending = row.clone()
            else:
                pair = (self.pending + row) / 2
                self.total += pair
                self.total_sq += pair * pair
                self.pairs += 1
        else:
            if i == 0:
                self.prefix += row
                self.half = 1
                return
            self.block += row
            if self.count == 2 * self.half:        # [0, h) and [h, 2h) both complete
                error = (self.prefix - self.block) / (2 * self.half)
                self.scaled = [*self.scaled, error * error * self.count][-POOLED_DOUBLINGS:]
                self.prefix += self.block
                self.block.zero_()
                self.half *= 2

    def standard_error(self) -> Tensor:
        """The standard error of the mean map, float64 ``[*shape]`` (NaN before two samples)."""
        if self.sampling is Sampling.STRATIFIED:
            if not self.scaled:
                return torch.full_like(self.total, float("nan"))
            prefix = self.half               # the last complete prefix (2h before h doubled)
            return (torch.stack(self.scaled).mean(0) / prefix).sqrt()
        n = self.count if self.sampling is Sampling.IID else self.pairs
        if n < 2:
            return torch.full_like(self.total, float("nan"))
        mean = self.total / n
        var = (self.total_sq / n - mean * mean).clamp(min=0) * n / (n - 1)
        return (var / n).sqrt()
