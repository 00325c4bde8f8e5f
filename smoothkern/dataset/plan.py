"""A data-set job's plan: every argument checked, and every option filled in, before any work
(one cheap ``smooth_grad`` call on example 0 checks the method's options and gives the maps'
shapes)."""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..api import smooth_grad
from ..core.state import check_eval_mode
from ..core.stats import AGGREGATES, PER_EXAMPLE_AGGREGATES, check_aggregates
from ..model_io import adapt, logits_of
from ..noise.sigma import plan_sigma
from .indexed import IndexedData, data_fingerprint, indexed_data
from .job import identity, split_options

STORE_DTYPES = (torch.float32, torch.float16)
DEFAULT_CHUNK = 64  # examples per zarr chunk and per unit of work (a resumed run redoes < 1)


@dataclass
class Plan:
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


def plan_job(model, data, target, batch_size, chunk_size, store_dtype, statistics, store_inputs,
          device, num_workers, resume, overwrite, options) -> Plan:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_eval_mode(model)
    for name, flag in (("resume", resume), ("overwrite", overwrite),
                       ("store_inputs", store_inputs)):
        if not isinstance(flag, bool) and not (name == "resume" and flag is None):
            raise TypeError(f"{name} must be True or False, got {flag!r}")
    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other: resume keeps the store's "
                         "finished chunks, overwrite deletes them; choose one")
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
    first = batch_options(sg, stdevs, [0], n)
    _, sweep = plan_sigma(x0, first["noise_level"], first["stdevs"])
    logits = batch_logits(runner, x0, first)
    # One cheap call on example 0 checks every option and gives the maps' shapes.
    n_check = max(sg["snapshots"]) if _int_list(sg["snapshots"]) else 1
    if _int_list(sg["snapshots"]) and n_check > sg["n_samples"]:
        raise ValueError(f"snapshots must be within 1..n_samples={sg['n_samples']}, got "
                         f"{tuple(sg['snapshots'])}")
    check = smooth_grad(runner, x0, targets_for(target, logits, label0.to(device), [0]),
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
                   model, data_fingerprint(indexed), n)
    return Plan(runner, device, indexed, sg, names, leading, target, stdevs, stats,
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


def targets_for(spec: Any, logits: Tensor | None, label: Tensor, index: list[int]) -> Tensor:
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


def batch_options(options: dict[str, Any], stdevs: Tensor | None, index: list[int],
                  examples: int) -> dict[str, Any]:
    """``smooth_grad``'s options for the batch of examples ``index``: per-example σ, and each
    tensor of ``forward_args`` / ``forward_kwargs`` whose first dim is the number of
    ``examples`` N, cut to the batch's rows (anything else is passed as it is)."""
    if stdevs is not None:
        options = {**options, "stdevs": stdevs[..., index]}
    args, kwargs = options.get("forward_args"), options.get("forward_kwargs")
    if not args and not kwargs:
        return options

    def rows(value: Any) -> Any:
        if isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == examples:
            return value[torch.as_tensor(index, device=value.device)]
        return value

    if args is not None:
        args = tuple(rows(a) for a in (args if isinstance(args, (tuple, list)) else (args,)))
    if kwargs is not None:
        kwargs = {k: rows(v) for k, v in kwargs.items()}
    return {**options, "forward_args": args, "forward_kwargs": kwargs}


def batch_logits(model: nn.Module, x: Tensor, options: dict[str, Any]) -> Tensor:
    """The model's logits [B, classes] for the batch ``x`` under the batch's options."""
    call = adapt(model, options.get("output"), options.get("forward_args"),
                 options.get("forward_kwargs"), x.shape[0])
    with torch.no_grad():
        return logits_of(call(x), None, x.shape[0])
