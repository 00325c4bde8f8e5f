"""The engine: noise source ─► pass strategy ─► method ─► reduction (+ taps).

:func:`run` drives one checked :class:`Job`: for each chunk of samples the source draws the noisy
rows, the method attributes them in one model pass (or under ``torch.func.vmap``), the kernel
set's ``accumulate`` folds them into the streaming statistics, and every tap sees the chunk's
attributions. The loop reference (``passes="loop"``) runs one sample per pass, keeps all of
them and computes the statistics directly. Argument checks live with the public functions
(:mod:`smoothkern.api`, :mod:`smoothkern.captum`); nothing here knows where a job came from.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .memory import is_out_of_memory, release_cached_memory
from .methods import AttributionMethod
from .precision import autocast
from .sources import Chunk, NoiseSource
from .stats import StreamingStats, direct_statistics

PASS_STRATEGIES = ("batched", "vmap", "loop")
AccumulateFn = Callable[[StreamingStats, Tensor], None]
# A tap sees every chunk's attributions, Tensor[count, S, B, *attr], after they are accumulated.
Tap = Callable[[Chunk, Tensor], None]


@dataclass(frozen=True)
class Job:
    """One checked call of the engine.

    Attributes:
        method: the base attribution method.
        source: draws the noisy rows (its ``levels`` S and ``batch`` B shape the results).
        target (LongTensor[B]): the output explained per example.
        n_samples: m.
        snapshots: sample counts at which results are taken, ascending, the last one m.
        aggregates: statistics to finalize ("mean", "abs", "sq", "var", "geomean").
        accumulate: the kernel set's accumulate op.
        passes: "batched", "vmap" or "loop" (the reference).
        samples_per_pass: samples per model pass (the source may fix its own chunks).
        accumulator_dtype: float32 or float64 running statistics.
        eps: floor inside the geometric mean's log.
        taps: callables that see each chunk's attributions.
        compute_dtype: None (float32 model passes) or bfloat16/float16: the method runs under
            autocast; its attributions are taken back to float32 before the statistics.
    """

    method: AttributionMethod
    source: NoiseSource
    target: Tensor
    n_samples: int
    snapshots: tuple[int, ...]
    aggregates: tuple[str, ...]
    accumulate: AccumulateFn
    passes: str = "batched"
    samples_per_pass: int = 1
    accumulator_dtype: torch.dtype = torch.float32
    eps: float = 1e-10
    taps: tuple[Tap, ...] = ()
    compute_dtype: torch.dtype | None = None


def run(model: nn.Module, job: Job, progress: bool = False) -> list[dict[str, Tensor]]:
    """Runs a job; returns one dict of statistics (each Tensor[S, B, *attr]) per snapshot."""
    if job.passes == "loop":
        return run_loop_reference(model, job)
    return _run_chunks(model, job, progress)


def _run_chunks(model: nn.Module, job: Job, progress: bool) -> list[dict[str, Tensor]]:
    source = job.source
    levels, batch = source.levels, source.batch
    rows_target = job.target.repeat(levels)                 # target of row s·B + b
    reducer = _Reducer(job, levels, batch)
    per_pass = job.samples_per_pass
    bar = _progress_bar(job.n_samples, progress)

    def attribute(chunk: Chunk) -> None:
        """Attributes a drawn chunk; on out-of-memory splits it (the draws are kept)."""
        nonlocal per_pass
        try:
            out = _attribute(model, job, chunk, rows_target.repeat(chunk.count))
        except Exception as err:  # noqa: BLE001 - only OOM is retried, the rest re-raised
            if not is_out_of_memory(err) or chunk.count == 1:
                raise
            release_cached_memory(chunk.rows.device)
            first, second = chunk.split()
            per_pass = min(per_pass, first.count)
            attribute(first)
            attribute(second)
            return
        reducer.add(chunk, out)
        if bar is not None:
            bar.update(chunk.count)

    results, start = [], 0
    try:
        for boundary in job.snapshots:
            while start < boundary:
                count = source.chunk_size(start, min(per_pass, boundary - start))
                chunk = source.draw(start, count)
                attribute(chunk)
                del chunk
                start += count
            results.append(reducer.finalize())
    finally:
        if bar is not None:
            bar.close()
    return results


def _attribute(model: nn.Module, job: Job, chunk: Chunk, rows_target: Tensor) -> Tensor:
    with autocast(chunk.rows.device, job.compute_dtype):
        if job.passes == "vmap":
            if chunk.extras:
                raise ValueError(f"passes 'vmap' cannot take per-row {sorted(chunk.extras)}")
            out = job.method.vmap_attribute(model, chunk.rows, rows_target)
        else:
            out = job.method.attribute(model, chunk.rows, rows_target, **chunk.extras)
    return out if job.compute_dtype is None else out.float()


class _Reducer:
    """Streaming statistics of a job, created at the first chunk (its attribution shape)."""

    def __init__(self, job: Job, levels: int, batch: int) -> None:
        self.job, self.levels, self.batch = job, levels, batch
        self.state: StreamingStats | None = None

    def add(self, chunk: Chunk, attributions: Tensor) -> None:
        shaped = attributions.reshape(chunk.count, self.levels, self.batch,
                                      *attributions.shape[1:])
        if self.state is None:
            self.state = StreamingStats.empty(shaped.shape[1:], device=attributions.device,
                                              dtype=self.job.accumulator_dtype, eps=self.job.eps)
        self.state.update(shaped, accumulate=self.job.accumulate)
        for tap in self.job.taps:
            tap(chunk, shaped)

    def finalize(self) -> dict[str, Tensor]:
        assert self.state is not None, "finalize before any chunk"
        return self.state.finalize(self.job.aggregates)


def run_loop_reference(model: nn.Module, job: Job) -> list[dict[str, Tensor]]:
    """The naive reference, as the assignments wrote it: one forward/backward per noise sample.

    Keeps all m attributions and computes the statistics directly in float64.
    """
    source = job.source
    rows_target = job.target.repeat(source.levels)
    samples = []
    for i in range(job.n_samples):
        chunk = source.draw(i, 1)
        out = _attribute(model, dataclasses.replace(job, passes="batched"), chunk, rows_target)
        samples.append(out)
        for tap in job.taps:
            tap(chunk, out.reshape(1, source.levels, source.batch, *out.shape[1:]))
    stacked = torch.stack(samples)                       # [m, S*B, *attr]
    stacked = stacked.reshape(job.n_samples, source.levels, source.batch, *stacked.shape[2:])
    return [{name: value.to(job.accumulator_dtype) for name, value in
             direct_statistics(stacked[:count], job.aggregates, job.eps).items()}
            for count in job.snapshots]


def shape_results(results: list[dict[str, Tensor]], aggregates: Sequence[str], *,
                  sweep: bool, returned_snapshots: int, single_aggregate: bool
                  ) -> Tensor | dict[str, Tensor]:
    """Drops the sweep dim when there is none, stacks snapshots, unwraps a single aggregate.

    Args:
        returned_snapshots: how many snapshots the caller asked for (0: only the final result).
    """
    results = results[:returned_snapshots] if returned_snapshots else results[-1:]
    out = {}
    for name in aggregates:
        values = [r[name] if sweep else r[name][0] for r in results]
        out[name] = torch.stack(values) if returned_snapshots else values[0]
    return out[aggregates[0]] if single_aggregate else out


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="samples", unit="sample", leave=False)
