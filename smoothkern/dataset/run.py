"""``attribute_dataset``: smooth_grad over a whole data set, into a resumable zarr store."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from ..api import smooth_grad
from ..core.stats import AGGREGATES, PER_EXAMPLE_AGGREGATES
from .distributed import RankFailed, Ranks, current_ranks
from .indexed import chunk_batches
from .job import run_record
from .plan import Plan, batch_logits, batch_options, plan_job, targets_for
from .statistics import ClassStats
from .store import ChunkDamaged, Store, StoreError, zarr_module


@dataclass(frozen=True)
class DatasetRun:
    """What one call did.

    Attributes:
        path: the store.
        examples: N, examples in the data set.
        chunks: chunks of the store; ``computed`` of them by this call (all ranks), ``skipped``
            because an earlier run had completed them.
        seconds: wall time of the call on this rank.
        images_per_second: examples computed by all ranks per second of this call.
    """

    path: str
    examples: int
    chunks: int
    computed: int
    skipped: int
    seconds: float
    images_per_second: float

    def open(self):
        """The store as a read-only ``zarr.Group``."""
        return open_store(self.path)


def open_store(path: str | os.PathLike):
    """A data-set store as a read-only ``zarr.Group`` (arrays by aggregate name, ``target``,
    ``label``, ``stats/...``; the job in ``attrs["smoothkern"]``).

    Raises:
        ValueError: the path is not a smoothkern data-set store.
    """
    return Store.open(path, writable=False).group


def attribute_dataset(
    model: nn.Module,
    data: Dataset | DataLoader,
    out: str | os.PathLike,
    *,
    target: int | str | Sequence[int] | Tensor | None = None,
    batch_size: int | None = None,
    chunk_size: int | None = None,
    resume: bool | None = None,
    overwrite: bool = False,
    store_dtype: torch.dtype = torch.float32,
    statistics: Sequence[str] | None = AGGREGATES,
    store_inputs: bool = False,
    device: torch.device | str | None = None,
    num_workers: int | None = None,
    group: Any = None,
    progress: bool = True,
    metadata: Mapping[str, Any] | None = None,
    **options: Any,
) -> DatasetRun:
    """Noise-averaged attribution maps of every example of a data set, into a zarr store.

    Example k's noise is keyed by k (``smooth_grad(example_index=...)``), so its map is the
    same for any batch size, any number of processes and any resumed run. Work goes in chunks
    of ``chunk_size`` examples; a chunk is written, then marked complete. Inside a
    torch.distributed process group (e.g. under ``torchrun``) every rank takes every
    world-th remaining chunk and writes it itself; call it on every rank with the same
    arguments.

    Args:
        model: a classifier returning logits [B, classes], in eval mode; never changed (when
            ``device`` differs from the model's, a copy is moved there).
        data: a map-style Dataset whose items are ``x`` or ``(x, label)`` (x a float Tensor),
            or a DataLoader over one without shuffling (its collate function and workers are
            used).
        out: the store's folder (on a file system every rank sees).
        target: the class to explain: None (the predicted class), an int, ``"label"`` (each
            example's label), or one class per example (a sequence or LongTensor[N]).
        batch_size: examples per smooth_grad call (default: the DataLoader's, else 32).
        chunk_size: examples per store chunk and unit of work (default: 64 or the batch size
            if larger; batches never span two chunks; an existing store keeps its own). Batch
            and chunk are capped at the data set's size.
        resume: continue an existing store of the same job (its complete chunks are skipped).
            False refuses an existing store unless ``overwrite``.
        overwrite: replace an existing store (only a smoothkern data-set store is replaced).
        store_dtype: torch.float32 or torch.float16 for the stored maps.
        statistics: data-set statistics of every stored map, per class explained and over all
            examples (names from ``smoothkern.AGGREGATES``); None or () for none.
        store_inputs: also store the inputs (array ``input``).
        device: where to compute (default: the model's device).
        num_workers: DataLoader workers reading the data (default: the DataLoader's, else 0).
        group: the torch.distributed group (default: the default group when initialised).
        progress: a tqdm bar on rank 0: images/s and the whole job's ETA.
        metadata: JSON-able information recorded in the store (not compared on resume).
        **options: every option of :func:`smoothkern.smooth_grad` (``n_samples``,
            ``noise_level``, ``stdevs``, ``noise``, ``aggregate``, ``method`` and its options,
            ``snapshots``, ``seed``, ``compute_dtype``, ``tolerance``, ``backend``, ...).
            ``stdevs`` may be a Tensor[N] or [S, N] (one σ per example). ``output``,
            ``forward_args``, ``forward_kwargs`` as in ``smooth_grad``, except that a tensor
            whose first dim is N (the data set's size) gives one row per example (cut to each
            batch); other values go to every batch as they are.

    Returns:
        A :class:`DatasetRun` (``.open()`` gives the store as a zarr group).

    Raises:
        ValueError, TypeError: bad arguments, another job's store, an existing store with
            neither ``resume`` nor ``overwrite``; before any work.
        ImportError: zarr 3 is not installed (``pip install 'smoothkern[dataset]'``).
    """
    started = time.perf_counter()
    zarr = zarr_module()
    ranks = current_ranks(group)
    plan = _together(ranks, "check the job", lambda: plan_job(
        model, data, target, batch_size, chunk_size, store_dtype, statistics, store_inputs,
        device, num_workers, resume, overwrite, options))
    info = {"versions": _versions(zarr), "run": run_record(plan.options, model),
            "metadata": dict(metadata or {})}
    resume = not overwrite if resume is None else resume
    store, todo, finished, stored = _open_store(ranks, out, plan, info, resume, overwrite,
                                                chunk_size)
    mine = ranks.share(todo)
    # One DataLoader over all of this rank's batches: its workers start once and read ahead.
    batches = [chunk_batches(*store.chunk_range(c), plan.data.batch_size) for c in mine]
    reader = plan.data.batches([b for chunk in batches for b in chunk],
                               pin_memory=plan.device.type == "cuda")
    bar = _bar(progress and ranks.leader, store, todo)
    computed = 0
    try:
        for r in range(-(-len(todo) // ranks.world)):
            done, error = 0, None
            if r < len(mine):
                try:
                    done = _compute_chunk(plan, store, mine[r], batches[r], reader)
                except Exception as err:  # reported to every rank through the next collective
                    error = err
            images, failed = ranks.round_done(done, error is not None)
            computed += images
            if bar is not None:
                bar.update(images)
            if failed:
                if error is not None:
                    raise error
                raise RankFailed(f"rank(s) {failed} failed; the store keeps every finished "
                                   "chunk: rerun the same call or command to resume")
    finally:
        if bar is not None:
            bar.close()
    # A finished store asked for statistics it lacks computes them from its maps.
    if todo or not finished or not set(plan.statistics) <= stored:
        _store_statistics(ranks, store, plan)
        if ranks.leader:
            store.finish(finished_by={"processes": ranks.world, "versions": info["versions"]})
        ranks.round_done(0, False)  # no rank returns before the store is final
    seconds = time.perf_counter() - started
    return DatasetRun(str(out), store.n_examples, store.n_chunks, len(todo),
                      store.n_chunks - len(todo), seconds, computed / seconds)


# ----------------------------------------------------------------------------------------------
# the store and the chunks


def _open_store(ranks: Ranks, out, plan: Plan, info, resume, overwrite, chunk_size
                ) -> tuple[Store, list[int], bool, set[str]]:
    """Rank 0 prepares the store and finds the chunks left and the statistics stored; every
    rank learns the outcome."""
    outcome: Any = None
    if ranks.leader:
        try:
            store = Store.prepare(out, plan.job, plan.layout, info, resume=resume,
                                  overwrite=overwrite)
            if chunk_size is not None and min(chunk_size, store.n_examples) != min(
                    store.chunk_size, store.n_examples):
                raise StoreError(f"chunk_size={chunk_size}, but the store has chunks of "
                                 f"{store.chunk_size} examples (leave chunk_size out to resume)")
            todo = [int(c) for c in (~store.complete()).nonzero()[0]]
            outcome = (todo, store.finished, store.stored_statistics())
        except Exception as err:  # every rank raises the leader's error
            outcome = err
    outcome = ranks.broadcast(outcome)
    if isinstance(outcome, Exception):
        raise outcome
    todo, finished, stored = outcome
    if not ranks.leader:  # e.g. a node that does not see the leader's file system fails here
        store = _together(ranks, f"open the store {out}", lambda: Store.open(out))
    else:
        _together(ranks, f"open the store {out}", lambda: store)
    return store, todo, finished, stored


def _compute_chunk(plan: Plan, store: Store, chunk: int, batches: list[list[int]],
                   reader: Iterator[tuple[Tensor, Tensor]]) -> int:
    """Computes and writes one chunk, whose ``batches`` come next from ``reader``; returns its
    number of examples."""
    start, stop = store.chunk_range(chunk)
    parts: dict[str, list[Tensor]] = {name: [] for name in plan.aggregates}
    targets, labels, inputs = [], [], []
    for index, (x, label) in zip(batches, itertools.islice(reader, len(batches))):
        x = x.to(plan.device, non_blocking=True)
        options = batch_options(plan.options, plan.stdevs, index, plan.layout["examples"])
        logits = batch_logits(plan.model, x, options) if plan.target is None else None
        target = targets_for(plan.target, logits, label.to(plan.device), index)
        maps = smooth_grad(plan.model, x, target, example_index=index, **options)
        for name in plan.aggregates:
            parts[name].append(maps[name].movedim(plan.leading[name], 0).cpu())
        targets.append(target.cpu())
        labels.append(label)
        if plan.store_inputs:
            inputs.append(x.cpu())
    store.write_chunk(chunk, {k: torch.cat(v) for k, v in parts.items()}, torch.cat(targets),
                      torch.cat(labels), torch.cat(inputs) if inputs else None)
    return stop - start

def _store_statistics(ranks: Ranks, store: Store, plan: Plan) -> None:
    """Per-class and whole-set statistics of every element-wise map, from the stored maps."""
    if not plan.statistics:
        return
    classes = int(store.record["layout"]["classes"])
    my_chunks = ranks.share(list(range(store.n_chunks)))
    targets = _together(ranks, "read the stored targets", lambda: {
        c: _read(store, "target", c) for c in my_chunks})
    for name in plan.aggregates:
        if name in PER_EXAMPLE_AGGREGATES:
            continue
        shape = store.record["layout"]["arrays"][name]["shape"]

        def accumulate(name=name, shape=shape) -> ClassStats:
            local = ClassStats(classes, shape, plan.options["eps"], plan.device)
            for c in my_chunks:
                local.update(_read(store, name, c), targets[c])
            return local

        merged = _together(ranks, "read the stored maps", accumulate)
        merged.reduce(ranks.sum)  # sums, never a gather of every rank's states
        if ranks.leader:
            store.write_statistics(name, merged, plan.statistics)


def _read(store: Store, name: str, chunk: int) -> Tensor:
    """A stored chunk; one that cannot be decoded is marked to be computed again."""
    try:
        return store.read(name, chunk)
    except ChunkDamaged as err:
        store.forget(chunk)
        raise StoreError(f"chunk {chunk} of the store's array '{name}' cannot be read "
                         f"({err.cause}): it is marked to be computed again; resume the job "
                         "(rerun the same call, or --resume)") from None


def _together(ranks: Ranks, what: str, step: Callable[[], Any]) -> Any:
    """Runs ``step`` on every rank; if it fails on any, every rank raises (the failing ones their
    own error) instead of waiting at the next collective for a rank that has left."""
    result, error = None, None
    try:
        result = step()
    except Exception as err:  # noqa: BLE001 - re-raised below, after the others are told
        error = err
    _, failed = ranks.round_done(0, error is not None)
    if error is not None:
        raise error
    if failed:
        raise RankFailed(f"rank(s) {failed} could not {what}; see their error")
    return result


def _bar(enabled: bool, store: Store, todo: list[int]):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    left = sum(b - a for a, b in map(store.chunk_range, todo))
    return tqdm(total=store.n_examples, initial=store.n_examples - left, unit="img",
                desc="attribute", dynamic_ncols=True)


def _versions(zarr) -> dict[str, str]:
    from .. import __version__

    return {"smoothkern": __version__, "torch": torch.__version__, "zarr": zarr.__version__}
