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
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..methods import AttributionMethod
from ..model_io import ModelCall
from ..noise.sampling import Sampling
from ..noise.sampling_error import DesignError
from ..noise.sources import Chunk
from ..ops.backends import PassStrategy
from .job import Job
from .memory import is_out_of_memory, release_cached_memory
from .precision import autocast
from .reducer import Reducer
from .stats import PER_EXAMPLE_AGGREGATES, direct_statistics

__all__ = ["Job", "run", "run_loop_reference", "shape_results"]


def run(model: nn.Module, job: Job, progress: bool = False) -> list[dict[str, Tensor]]:
    """Runs a job; returns one dict of statistics (each Tensor[S, B, *attr]) per snapshot."""
    if job.passes is PassStrategy.LOOP:
        return run_loop_reference(model, job)
    if job.compute_dtype is None or job.graphs is not None:
        return _run_chunks(model, job, progress)
    # One autocast region around every pass: its cache of the weights' bf16/fp16 casts then
    # serves all passes, not one (the noise and the statistics have no autocast ops).
    with autocast(job.target.device, job.compute_dtype):
        return _run_chunks(model, job, progress)


def _run_chunks(model: nn.Module, job: Job, progress: bool) -> list[dict[str, Tensor]]:
    source, method, target = job.source, job.method, job.target
    levels = source.levels
    reducer = Reducer(job, levels, source.batch)
    active = torch.arange(source.batch)           # examples (positions) still drawing samples
    per_pass = job.samples_per_pass
    bar = _progress_bar(job.n_samples, progress)

    def attribute(chunk: Chunk) -> None:
        """Attributes a drawn chunk; on out-of-memory splits it (the draws are kept)."""
        nonlocal per_pass
        rows_target = target.repeat(levels * chunk.count)     # target of row (i·S + s)·B + b
        out = _attempt(model, job, method, chunk, rows_target)
        if out is None:
            # Out of memory: the failed pass's frames (and the activations they held) are
            # gone once the handler is left, so the cache release below can free them.
            release_cached_memory(chunk.rows.device)
            first, second = chunk.split()
            per_pass = min(per_pass, first.count)
            attribute(first)
            attribute(second)
            return
        reducer.add(chunk, out, active)
        if bar is not None:
            bar.update(chunk.count)

    results, start = [], 0
    try:
        for boundary in job.snapshots:
            while start < boundary and len(active):
                count = source.chunk_size(start, min(per_pass, boundary - start))
                chunk = source.draw(start, count)
                attribute(chunk)
                del chunk
                start += count
                if job.tolerance is not None and start < job.n_samples:
                    keep = ~reducer.converged(active, job.tolerance)
                    if not bool(keep.all()):
                        index = keep.nonzero().view(-1)
                        active = active[index]
                        if len(active):
                            source = source.subset(index)
                            method = method.subset(index)
                            if isinstance(model, ModelCall):  # its other inputs follow too
                                model = model.subset(index)
                            target = target[index.to(target.device)]
            results.append(reducer.finalize())
    finally:
        if bar is not None:
            bar.close()
    return results


def _attempt(model: nn.Module, job: Job, method: AttributionMethod, chunk: Chunk,
             rows_target: Tensor) -> Tensor | None:
    """The chunk's attributions, or None when the pass ran out of memory and the chunk can be
    split (the exception and its traceback are dropped before returning)."""
    try:
        return _attribute(model, job, method, chunk, rows_target)
    except Exception as err:  # noqa: BLE001 - only OOM is retried, the rest re-raised
        if not is_out_of_memory(err) or chunk.count == 1:
            raise
    return None


def _attribute(model: nn.Module, job: Job, method: AttributionMethod, chunk: Chunk,
               rows_target: Tensor) -> Tensor:
    if job.graphs is not None and job.passes is PassStrategy.BATCHED and not chunk.extras \
            and method.capturable:
        out = job.graphs.attribute(model, method, chunk.rows, rows_target)
        return out if job.compute_dtype is None else out.float()
    with autocast(chunk.rows.device, job.compute_dtype):
        if job.passes is PassStrategy.VMAP:
            if chunk.extras:
                raise ValueError(f"passes 'vmap' cannot take per-row {sorted(chunk.extras)}")
            out = method.vmap_attribute(model, chunk.rows, rows_target)
        else:
            out = method.attribute(model, chunk.rows, rows_target, **chunk.extras)
    return out if job.compute_dtype is None else out.float()


def run_loop_reference(model: nn.Module, job: Job) -> list[dict[str, Tensor]]:
    """The naive reference, as the assignments wrote it: one forward/backward per noise sample.

    Keeps all m attributions and computes the statistics directly in float64.
    """
    source = job.source
    rows_target = job.target.repeat(source.levels)
    samples = []
    for i in range(job.n_samples):
        chunk = source.draw(i, 1)
        out = _attribute(model, dataclasses.replace(job, passes=PassStrategy.BATCHED),
                         job.method, chunk, rows_target)
        samples.append(out)
        for tap in job.taps:
            tap(chunk, out.reshape(1, source.levels, source.batch, *out.shape[1:]))
    stacked = torch.stack(samples)                       # [m, S*B, *attr]
    stacked = stacked.reshape(job.n_samples, source.levels, source.batch, *stacked.shape[2:])
    names = tuple(n for n in job.aggregates if n not in PER_EXAMPLE_AGGREGATES)
    results = []
    for count in job.snapshots:
        stats = {name: value.to(job.accumulator_dtype) for name, value in
                 direct_statistics(stacked[:count], names, job.eps).items()}
        if job.sampling is not Sampling.IID and "sem" in names:   # the design's error
            design = DesignError(job.sampling, stacked.shape[1:], stacked.device)
            design.update(stacked[:count], 0)
            stats["sem"] = design.standard_error().to(job.accumulator_dtype)
        if "count" in job.aggregates:
            stats["count"] = torch.full((source.batch,), count, dtype=torch.int64)
        results.append(stats)
    return results


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
        values = [r[name] if sweep or name in PER_EXAMPLE_AGGREGATES else r[name][0]
                  for r in results]
        out[name] = torch.stack(values) if returned_snapshots else values[0]
    return out[aggregates[0]] if single_aggregate else out


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="samples", unit="sample", leave=False)
