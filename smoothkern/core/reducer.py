"""The engine's streaming statistics of one job: one state for the batch, updated by the kernel
set's fused accumulate; with adaptive counts (``tolerance``) the examples still drawing are
updated together, and examples that stopped keep their state."""

from __future__ import annotations

import torch
from torch import Tensor

from ..noise.sampling import Sampling
from ..noise.sampling_error import DesignError
from ..noise.sources import Chunk
from .job import Job
from .stats import PER_EXAMPLE_AGGREGATES, StreamingStats

# The stopping rule tests an example from this many samples on: with fewer, its error bar has so
# few degrees of freedom (antithetic: pairs less one; stratified: one per element and doubling)
# that a lucky low estimate stops it early, far above the tolerance (benchmarks/RESULTS.md).
MIN_SAMPLES_TO_STOP = 16


class Reducer:
    """Streaming statistics of a job, created at the first chunk (its attribution shape).

    One :class:`StreamingStats` of shape [S, B, *attr] holds every example. Without adaptive
    counts every chunk updates all of it. With them, the examples still drawing (``active``)
    have all drawn the same number of samples, so a chunk's statistics are taken over the
    active examples in one fused read and merged into their slice (Chan's merge); an example
    that stopped keeps its state and its count (``counts``), and finalizing groups examples by
    count. No per-example loop, and one host read per convergence test.
    """

    def __init__(self, job: Job, levels: int, batch: int) -> None:
        self.job, self.levels, self.batch = job, levels, batch
        self.state: StreamingStats | None = None
        self.counts = torch.zeros(batch, dtype=torch.int64)    # on the host: no device sync
        self.names = tuple(n for n in job.aggregates if n not in PER_EXAMPLE_AGGREGATES)
        # Under antithetic or stratified draws the samples are not independent: the standard
        # error comes from the design (one DesignError for the batch, or one per example when
        # examples stop at different counts), not from the sample variance.
        self.design_errors: dict[int, DesignError] | None = None
        if job.sampling is not Sampling.IID and ("sem" in self.names or job.tolerance):
            self.design_errors = {}

    def add(self, chunk: Chunk, attributions: Tensor, active: Tensor) -> None:
        """attributions (Tensor[count·S·B_active, ...]) of the examples in ``active``
        (LongTensor[B_active] of positions, on the host)."""
        shaped = attributions.reshape(chunk.count, self.levels, len(active),
                                      *attributions.shape[1:])
        if self.state is None:
            self.state = self._empty((self.levels, self.batch, *shaped.shape[3:]),
                                     attributions.device)
        if len(active) == self.batch:            # everyone draws: update the state in place
            self.state.update(shaped, accumulate=self.job.accumulate)
        else:
            part = self._empty(shaped.shape[1:], attributions.device)
            part.update(shaped, accumulate=self.job.accumulate)
            self._merge_into(active, part)
        if self.design_errors is not None:
            self._update_design_errors(chunk.start, shaped, active)
        self.counts[active] += chunk.count
        for tap in self.job.taps:
            tap(chunk, shaped)

    def converged(self, active: Tensor, tolerance: float) -> Tensor:
        """BoolTensor[len(active)] (host): ‖sem_b‖₂ ≤ tolerance · ‖mean_b‖₂ over levels and
        elements, for every active example at once; never before ``MIN_SAMPLES_TO_STOP``."""
        if int(self.counts[active[0]]) < MIN_SAMPLES_TO_STOP:    # active examples share a count
            return torch.zeros(len(active), dtype=torch.bool)
        stats = self._slice(active).finalize(("mean", "sem"))
        dims = [0] + list(range(2, stats["mean"].dim()))
        mean = stats["mean"].square().sum(dims).sqrt()
        if self.design_errors is None:
            sem = stats["sem"].square().sum(dims).sqrt()
        else:           # the norm over the map: the stratified error has one dof per element
            sem = torch.stack([self.design_errors[b].standard_error().norm()
                               for b in active.tolist()]).to(mean)
        return (sem <= tolerance * mean).cpu()

    def finalize(self) -> dict[str, Tensor]:
        assert self.state is not None, "finalize before any chunk"
        out: dict[str, Tensor] = {}
        if self.names:
            counts = self.counts.unique()
            if len(counts) == 1:
                out = self._with_count(int(counts[0])).finalize(self.names)
            else:                              # adaptive counts: one finalize per count
                out = {name: torch.empty_like(self.state.mean) for name in self.names}
                for count in counts.tolist():
                    index = (self.counts == count).nonzero().view(-1)
                    part = self._slice(index).finalize(self.names)
                    for name in self.names:
                        out[name][:, index.to(out[name].device)] = part[name]
        if self.design_errors is not None and "sem" in self.names:
            out["sem"] = self._design_sem().to(out["sem"])
        if "count" in self.job.aggregates:
            out["count"] = self.counts.clone()
        return out

    def _update_design_errors(self, start: int, shaped: Tensor, active: Tensor) -> None:
        """shaped (Tensor[k, S, B_active, *attr]) of samples start..start+k-1."""
        errors = self.design_errors
        if self.job.tolerance is None:          # every example draws every sample
            if not errors:
                errors[-1] = DesignError(self.job.sampling, shaped.shape[1:], shaped.device)
            errors[-1].update(shaped, start)
            return
        for position, example in enumerate(active.tolist()):
            if example not in errors:
                errors[example] = DesignError(self.job.sampling,
                                              shaped.shape[1:2] + shaped.shape[3:],
                                              shaped.device)
            errors[example].update(shaped[:, :, position], start)

    def _design_sem(self) -> Tensor:
        """Tensor[S, B, *attr]: the design's standard error of every example's mean."""
        errors = self.design_errors
        if -1 in errors:
            return errors[-1].standard_error()
        return torch.stack([errors[b].standard_error() for b in range(self.batch)], dim=1)

    def _empty(self, shape: tuple[int, ...], device: torch.device) -> StreamingStats:
        return StreamingStats.empty(shape, device=device, dtype=self.job.accumulator_dtype,
                                    eps=self.job.eps)

    def _with_count(self, count: int) -> StreamingStats:
        s = self.state
        return StreamingStats(s.mean, s.m2, s.abs_sum, s.log_sum, count, s.eps)

    def _slice(self, index: Tensor) -> StreamingStats:
        """A copy of the state of examples ``index``, which share one count."""
        s, at = self.state, index.to(self.state.mean.device)
        return StreamingStats(s.mean[:, at], s.m2[:, at], s.abs_sum[:, at], s.log_sum[:, at],
                              int(self.counts[index[0]]), s.eps)

    def _merge_into(self, active: Tensor, part: StreamingStats) -> None:
        merged = self._slice(active).merge(part)
        at = active.to(self.state.mean.device)
        for name in ("mean", "m2", "abs_sum", "log_sum"):
            getattr(self.state, name).index_copy_(1, at, getattr(merged, name))
