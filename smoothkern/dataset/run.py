"""``attribute_dataset``: smooth_grad over a whole data set, into a resumable zarr store."""

from __future__ import annotations

import copy
import itertools
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from ..api import smooth_grad
from ..noise import plan_sigma
from ..core.state import check_eval_mode
from ..core.stats import AGGREGATES, PER_EXAMPLE_AGGREGATES, check_aggregates
from .distributed import RankFailed, Ranks, current_ranks
from .inputs import IndexedData, chunk_batches, fingerprint, indexed_data
from .job import identity, run_record, split_options
from .statistics import ClassStats
from .store import Store, StoreError, zarr_module

STORE_DTYPES = (torch.float32, torch.float16)
DEFAULT_CHUNK = 64  # examples per zarr chunk and per unit of work (a resumed run redoes < 1)


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
    resume: bool = True,
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
            ``stdevs`` may be a Tensor[N] or [S, N] (one σ per example).

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
    plan = _together(ranks, "check the job", lambda: _plan(
        model, data, target, batch_size, chunk_size, store_dtype, statistics, store_inputs,
        device, num_workers, resume, overwrite, options))
    info = {"versions": _versions(zarr), "run": run_record(plan.options, model),
            "metadata": dict(metadata or {})}
    store, todo, finished = _open_store(ranks, out, plan, info, resume, overwrite, chunk_size)
    mine = ranks.share(todo)
    bar = _bar(progress and ranks.leader, store, todo)
    computed = 0
    try:
        for r in range(-(-len(todo) // ranks.world)):
            done, error = 0, None
            if r < len(mine):
                try:
                    done = _compute_chunk(plan, store, mine[r])
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
    if todo or not finished:
        _store_statistics(ranks, store, plan)
        if ranks.leader:
            store.finish(finished_by={"processes": ranks.world, "versions": info["versions"]})
        ranks.round_done(0, False)  # no rank returns before the store is final
    seconds = time.perf_counter() - started
    return DatasetRun(str(out), store.n_examples, store.n_chunks, len(todo),
                      store.n_chunks - len(todo), seconds, computed / seconds)


# ----------------------------------------------------------------------------------------------
# planning: every check before any work


@dataclass
class _Plan:
    model: nn.Module
    device: torch.device
    data: IndexedData
    options: dict[str, Any]          # smooth_grad keywords, defaults filled in
    aggregates: tuple[str, ...]
    leading: dict[str, int]          # dims before B in smooth_grad's result, per aggregate
    target: Any                      # None, int, "label" or LongTensor[N]
    stdevs: Tensor | None            # per-example σ, Tensor[N] or [S, N]
    statistics: tuple[str, ...]
    store_inputs: bool
    job: dict[str, Any]
    layout: dict[str, Any]


def _plan(model, data, target, batch_size, chunk_size, store_dtype, statistics, store_inputs,
          device, num_workers, resume, overwrite, options) -> _Plan:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_eval_mode(model)
    for name, flag in (("resume", resume), ("overwrite", overwrite),
                       ("store_inputs", store_inputs)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be True or False, got {flag!r}")
    if store_dtype not in STORE_DTYPES:
        raise TypeError(f"store_dtype must be torch.float32 or torch.float16, got {store_dtype}")
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(
            chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    stats = () if not statistics else check_aggregates(statistics)[0]
    if "count" in stats:
        raise ValueError("statistics are element-wise: choose from " + ", ".join(AGGREGATES))
    indexed = indexed_data(data, batch_size, num_workers)
    n = len(indexed)
    # A batch or chunk beyond the data set would only allocate (zarr fills a whole chunk).
    indexed.batch_size = min(indexed.batch_size, n)
    sg, _ = split_options(options)
    names = check_aggregates(sg["aggregate"])[0]
    sg["aggregate"] = names
    if sg["noise_level"] is None and sg["stdevs"] is None:
        sg["noise_level"] = 0.15
    if isinstance(sg["snapshots"], int) and not isinstance(sg["snapshots"], bool):
        sg["snapshots"] = (sg["snapshots"],)
    stdevs = _per_example_stdevs(sg["stdevs"], n)
    target = _target_spec(target, n)
    device, runner = _device(model, device)

    x0, label0 = indexed.example(0)
    x0 = x0.to(device)
    first = _batch_options(sg, stdevs, [0])
    _, sweep = plan_sigma(x0, first["noise_level"], first["stdevs"])
    with torch.no_grad():
        logits = runner(x0)
    if not isinstance(logits, Tensor) or logits.dim() != 2:
        raise ValueError(f"the model must return logits [B, classes], got "
                         f"{tuple(logits.shape) if isinstance(logits, Tensor) else logits}")
    # One cheap call on example 0 checks every option and gives the maps' shapes.
    n_check = max(sg["snapshots"]) if _int_list(sg["snapshots"]) else 1
    if _int_list(sg["snapshots"]) and n_check > sg["n_samples"]:
        raise ValueError(f"snapshots must be within 1..n_samples={sg['n_samples']}, got "
                         f"{tuple(sg['snapshots'])}")
    check = smooth_grad(runner, x0, _targets(target, logits, label0.to(device), [0]),
                        **{**first, "n_samples": n_check}, example_index=0)
    snap = 1 if sg["snapshots"] is not None else 0
    leading = {name: snap + (0 if name in PER_EXAMPLE_AGGREGATES else int(sweep))
               for name in names}
    arrays = {}
    for name in names:
        shape = list(check[name].movedim(leading[name], 0).shape[1:])
        dtype = "int32" if name in PER_EXAMPLE_AGGREGATES else str(store_dtype).split(".")[1]
        arrays[name] = {"shape": shape, "dtype": dtype}
    layout = {"examples": n,
              "chunk_size": min(n, chunk_size or max(DEFAULT_CHUNK, indexed.batch_size)),
              "classes": int(logits.shape[1]), "arrays": arrays,
              "input_shape": list(x0.shape[1:]) if store_inputs else None,
              "snapshots": sg["snapshots"], "sweep": bool(sweep)}
    job = identity(sg, target, store_dtype,
                   model, fingerprint(indexed), n)
    return _Plan(runner, device, indexed, sg, names, leading, target, stdevs, stats,
                 store_inputs, job, layout)


def _int_list(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value)


def _per_example_stdevs(stdevs: Any, n: int) -> Tensor | None:
    """A Tensor of σ is one per example here: [N] or [S, N]."""
    if not isinstance(stdevs, Tensor) or stdevs.dim() == 0:
        return None
    if stdevs.dim() > 2 or stdevs.shape[-1] != n:
        raise ValueError(f"stdevs as a Tensor gives one σ per example: [N] or [S, N] with "
                         f"N = {n}, got {tuple(stdevs.shape)}")
    return stdevs


def _target_spec(target: Any, n: int) -> Any:
    if target is None or (isinstance(target, str) and target == "label"):
        return target
    if isinstance(target, str):
        raise ValueError(f"target must be None, an int, 'label' or one class per example, got "
                         f"{target!r}")
    if isinstance(target, bool):
        raise TypeError("target must be an int, 'label' or one class per example, not bool")
    if isinstance(target, int):
        return target
    tensor = torch.as_tensor(target)
    if tensor.is_floating_point() or tensor.dtype == torch.bool or tensor.shape != (n,):
        raise ValueError(f"target as a sequence gives one class per example: {n} ints, got "
                         f"{tensor.dtype} {tuple(tensor.shape)}")
    return tensor.to(torch.int64)


def _device(model: nn.Module, device: Any) -> tuple[torch.device, nn.Module]:
    """The device to compute on and the model there (a copy when it had to move)."""
    first = next(itertools.chain(model.parameters(), model.buffers()), None)
    home = first.device if first is not None else torch.device("cpu")
    if device is None:
        return home, model
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if device == home:
        return device, model
    return device, copy.deepcopy(model).to(device)


# ----------------------------------------------------------------------------------------------
# the store and the chunks


def _open_store(ranks: Ranks, out, plan: _Plan, info, resume, overwrite, chunk_size
                ) -> tuple[Store, list[int], bool]:
    """Rank 0 prepares the store and finds the chunks left; every rank learns the outcome."""
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
            outcome = (todo, store.finished)
        except Exception as err:  # every rank raises the leader's error
            outcome = err
    outcome = ranks.broadcast(outcome)
    if isinstance(outcome, Exception):
        raise outcome
    todo, finished = outcome
    if not ranks.leader:  # e.g. a node that does not see the leader's file system fails here
        store = _together(ranks, f"open the store {out}", lambda: Store.open(out))
    else:
        _together(ranks, f"open the store {out}", lambda: store)
    return store, todo, finished


def _compute_chunk(plan: _Plan, store: Store, chunk: int) -> int:
    """Computes and writes one chunk; returns its number of examples."""
    start, stop = store.chunk_range(chunk)
    parts: dict[str, list[Tensor]] = {name: [] for name in plan.aggregates}
    targets, labels, inputs = [], [], []
    batches = chunk_batches(start, stop, plan.data.batch_size)
    for index, (x, label) in zip(batches, plan.data.batches(batches)):
        x = x.to(plan.device)
        with torch.no_grad():
            logits = plan.model(x) if plan.target is None else None
        target = _targets(plan.target, logits, label.to(plan.device), index)
        maps = smooth_grad(plan.model, x, target, example_index=index,
                           **_batch_options(plan.options, plan.stdevs, index))
        for name in plan.aggregates:
            parts[name].append(maps[name].movedim(plan.leading[name], 0).cpu())
        targets.append(target.cpu())
        labels.append(label)
        if plan.store_inputs:
            inputs.append(x.cpu())
    store.write_chunk(chunk, {k: torch.cat(v) for k, v in parts.items()}, torch.cat(targets),
                      torch.cat(labels), torch.cat(inputs) if inputs else None)
    return stop - start


def _targets(spec: Any, logits: Tensor | None, label: Tensor, index: list[int]) -> Tensor:
    """The class to explain per row of a batch (LongTensor[b])."""
    if spec is None:
        return logits.argmax(dim=1)
    if isinstance(spec, int):
        return torch.full((len(index),), spec, dtype=torch.int64, device=label.device)
    if isinstance(spec, str):  # "label"
        if bool((label < 0).any()):
            raise ValueError("target='label', but the data items carry no labels (items must "
                             "be (x, label))")
        return label
    return spec[index].to(label.device)


def _batch_options(options: dict[str, Any], stdevs: Tensor | None, index: list[int]
                   ) -> dict[str, Any]:
    if stdevs is None:
        return options
    return {**options, "stdevs": stdevs[..., index]}


def _store_statistics(ranks: Ranks, store: Store, plan: _Plan) -> None:
    """Per-class and whole-set statistics of every element-wise map, from the stored maps."""
    if not plan.statistics:
        return
    classes = int(store.record["layout"]["classes"])
    my_chunks = ranks.share(list(range(store.n_chunks)))
    targets = {c: store.read("target", c) for c in my_chunks}
    counts = None
    for name in plan.aggregates:
        if name in PER_EXAMPLE_AGGREGATES:
            continue
        shape = store.record["layout"]["arrays"][name]["shape"]

        def accumulate(name=name, shape=shape) -> ClassStats:
            local = ClassStats(classes, shape, plan.options["eps"])
            for c in my_chunks:
                local.update(store.read(name, c), targets[c])
            return local

        local = _together(ranks, "read the stored maps", accumulate)
        merged = ClassStats(classes, shape, plan.options["eps"])
        for packed in ranks.gather(local.pack()):  # rank order: the same on every rank
            merged.merge_packed(packed)
        counts = merged.counts()
        if ranks.leader:
            store.write_statistics(name, merged.finalize(plan.statistics), counts)


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
