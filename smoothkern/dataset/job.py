"""What a data-set job computes, as plain JSON: the store keeps it and a rerun must match it.

Options that change the maps (method, noise, samples, seed, aggregates, precision, ...) form the
job's identity together with the model's and the data's fingerprints. Options that only change
how the work runs (backend, pass size, memory, batch size, processes) may differ between runs
of one job.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ..api import smooth_grad
from ..methods import AttributionMethod

# smooth_grad's options that do not change the maps beyond float rounding.
RUN_ONLY = ("samples_per_pass", "backend", "memory_limit", "prepare", "compile")
# smooth_grad arguments a data-set job sets itself.
SET_BY_JOB = ("model", "inputs", "target", "example_index", "progress")
SMOOTH_GRAD_DEFAULTS = {name: p.default for name, p in inspect.signature(smooth_grad).parameters
                        .items() if p.kind is p.KEYWORD_ONLY and name not in SET_BY_JOB}


def split_options(options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``smooth_grad`` keywords → (all of them with defaults filled in, the method's own).

    Raises:
        TypeError: an argument the job sets itself (``example_index``, ``progress``, ...).
    """
    taken = sorted(set(options) & set(SET_BY_JOB))
    if taken:
        raise TypeError(f"{', '.join(taken)} cannot be given: the data-set job sets "
                        f"{'it' if len(taken) == 1 else 'them'} per batch")
    full = dict(SMOOTH_GRAD_DEFAULTS)
    full.update(options)
    method_options = {k: v for k, v in options.items() if k not in SMOOTH_GRAD_DEFAULTS}
    return full, method_options


def identity(options: Mapping[str, Any], target: Any, store_dtype: torch.dtype,
             model: nn.Module, data_fingerprint: str, n_examples: int) -> dict[str, Any]:
    """The JSON record two runs of one job share (``options`` as :func:`split_options` fills
    them in)."""
    result_options = {k: describe(v, model) for k, v in sorted(options.items())
                      if k not in RUN_ONLY}
    return plain({"options": result_options, "target": describe(target, model),
                  "store_dtype": str(store_dtype), "model": model_fingerprint(model),
                  "data": {"examples": n_examples, "fingerprint": data_fingerprint}})


def run_record(options: Mapping[str, Any], model: nn.Module) -> dict[str, Any]:
    """The options that may change between runs, recorded for information."""
    return plain({k: describe(options[k], model) for k in RUN_ONLY if k in options})


def differences(stored: Mapping[str, Any], wanted: Mapping[str, Any], prefix: str = ""
                ) -> list[str]:
    """``"key: here X, in the store Y"`` for every leaf that differs."""
    out = []
    for key in sorted(set(stored) | set(wanted)):
        a, b = wanted.get(key, "<absent>"), stored.get(key, "<absent>")
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += differences(b, a, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {_short(a)} here, {_short(b)} in the store")
    return out


def describe(value: Any, model: nn.Module | None = None) -> Any:
    """A JSON-able description of an option value (tensors by shape and hash, modules by their
    name in the model, method objects by their name and settings)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.dtype):
        return str(value)
    if isinstance(value, Tensor):
        return {"tensor": list(value.shape), "dtype": str(value.dtype), "sha256": _tensor_hash(
            [value])}
    if isinstance(value, AttributionMethod):
        return {"method": value.name, "settings": describe(
            {k: v for k, v in vars(value).items() if not k.startswith("_")}, model)}
    if isinstance(value, nn.Module):
        names = {id(m): n for n, m in model.named_modules()} if model is not None else {}
        return {"module": type(value).__name__, "name": names.get(id(value))}
    if isinstance(value, Mapping):
        return {str(k): describe(v, model) for k, v in sorted(value.items(), key=str)}
    if isinstance(value, (list, tuple)):
        return [describe(v, model) for v in value]
    if callable(value):       # e.g. output=: by name (a repr holds an address)
        return {"callable": f"{getattr(value, '__module__', None)}."
                            f"{getattr(value, '__qualname__', type(value).__name__)}"}
    return repr(value)


def model_fingerprint(model: nn.Module) -> dict[str, Any]:
    """The model's class, size and a hash of its state dict (weights and buffers)."""
    state = model.state_dict()
    return {"class": f"{type(model).__module__}.{type(model).__qualname__}",
            "parameters": sum(p.numel() for p in model.parameters()),
            "sha256": _tensor_hash([state[k] for k in sorted(state)], sorted(state))}


def plain(record: Any) -> Any:
    """The record as JSON gives it back (tuples become lists), for comparisons."""
    return json.loads(json.dumps(record))


def _tensor_hash(tensors: list[Tensor], names: list[str] | None = None) -> str:
    digest = hashlib.sha256()
    for i, t in enumerate(tensors):
        if names is not None:
            digest.update(names[i].encode())
        t = t.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{t.dtype}{tuple(t.shape)}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."
