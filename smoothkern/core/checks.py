"""Argument checks shared by every entry point: one validator per concept, one error text each.

The public functions (``smooth_grad``, ``noise_grad``, the Captum drop-in, the metrics, data
sets) call these before any work, so a bad argument is refused the same way everywhere and
the caller's model is never touched. Validators of one concept that belongs to a subsystem
live with it and are re-exported here: the aggregates (:mod:`.stats`), compute dtypes
(:mod:`.precision`), the noise kind and sampling (:mod:`smoothkern.noise`), example indices
(:mod:`smoothkern.ops.perturb`) and preparations (:mod:`smoothkern.model_cache.prepare`).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..ops.backends import PassStrategy
from .stats import ACCUMULATOR_DTYPES

__all__ = ["check_accumulator_dtype", "check_count", "check_eps", "check_flag", "check_inputs",
           "check_memory_limit", "check_model", "check_snapshots", "check_strategy",
           "check_target", "check_tolerance", "check_unknown_options"]


def check_model(model: Any) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return model


def check_inputs(inputs: Any, integer_ok: bool = False) -> Tensor:
    """A floating, finite ``[B, ...]`` tensor with values (not on the meta device).

    Args:
        integer_ok: integer (and bool) inputs are accepted too: the noise goes to a layer's
            output (``noise_at``), so the inputs are only what the model takes (token ids).
    """
    if not isinstance(inputs, Tensor):
        raise TypeError(f"inputs must be a Tensor, got {type(inputs).__name__}")
    if inputs.is_complex() or not (inputs.is_floating_point() or integer_ok):
        hint = ("; noise cannot be added to integer inputs (token ids): add it to a layer's "
                "output instead with noise_at= (e.g. noise_at=\"embeddings\")"
                if not inputs.is_complex() else "")
        raise TypeError(f"inputs must be floating point, got dtype {inputs.dtype}{hint}")
    if inputs.dim() < 1 or inputs.shape[0] < 1 or inputs.numel() == 0:
        raise ValueError(f"inputs must be [B, ...] with B >= 1 and no empty dim, got "
                         f"{tuple(inputs.shape)}")
    if inputs.device.type == "meta":
        raise ValueError("inputs are on the meta device: they have shapes but no values to "
                         "attribute; move them to a real device")
    if inputs.is_floating_point() and not torch.isfinite(inputs).all():
        raise ValueError("inputs contain NaN or Inf")
    return inputs


def check_count(value: Any, name: str, minimum: int = 1) -> int:
    """An int >= ``minimum`` (``n_samples``, ``n_models``, ``samples_per_pass``; bool refused)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def check_eps(eps: Any) -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < float("inf"):
        raise ValueError(f"eps must be a positive finite number, got {eps!r}")
    return float(eps)


def check_accumulator_dtype(dtype: Any) -> torch.dtype:
    if dtype not in ACCUMULATOR_DTYPES:
        raise TypeError(f"accumulator_dtype must be torch.float32 or torch.float64, got {dtype}")
    return dtype


def check_memory_limit(limit: Any) -> int | None:
    """None, or a positive number of bytes."""
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, (int, float)) or not 1 <= limit < float(
            "inf"):
        raise ValueError(f"memory_limit must be a positive number of bytes, got {limit!r}")
    return int(limit)


def check_snapshots(snapshots: int | Iterable[int] | None, n_samples: int) -> tuple[int, ...]:
    """The snapshot counts, strictly increasing within 1..n_samples; ``(n_samples,)`` for None."""
    if snapshots is None:
        return (n_samples,)
    if isinstance(snapshots, int):
        snapshots = (snapshots,)
    try:
        counts = tuple(snapshots)
    except TypeError:
        raise TypeError(f"snapshots must be a sequence of ints, got "
                        f"{type(snapshots).__name__}") from None
    if not counts:
        raise ValueError("snapshots is empty")
    for c in counts:
        if isinstance(c, bool) or not isinstance(c, int) or not 1 <= c <= n_samples:
            raise ValueError(f"snapshots must be ints within 1..n_samples={n_samples}, got "
                             f"{counts}")
    if list(counts) != sorted(set(counts)):
        raise ValueError(f"snapshots must be strictly increasing, got {counts}")
    return counts


def check_tolerance(tolerance: Any, snapshots: Any, passes: str) -> float | None:
    """None, or a positive finite relative standard error, for a call that can stop early."""
    if tolerance is None:
        return None
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or \
            not 0 < tolerance < float("inf"):
        raise ValueError(f"tolerance must be a positive finite number, got {tolerance!r}")
    if snapshots is not None:
        raise ValueError("tolerance and snapshots cannot be combined: examples stop at "
                         "different counts")
    if PassStrategy(passes) is PassStrategy.LOOP:
        raise ValueError("tolerance needs batched passes; the 'loop' reference draws every "
                         "sample (compare against it with n_samples = the counts)")
    return float(tolerance)


def check_strategy(passes: str, method: Any) -> None:
    """Refuses a pass strategy the method cannot run under."""
    if PassStrategy(passes) is PassStrategy.VMAP and not method.supports_vmap:
        raise ValueError(f"method {method.name!r} cannot run under backend 'vmap'; use "
                         "'auto', 'torch' or 'loop'")


def check_target(target: Any, batch: int, classes: int, device: torch.device) -> Tensor:
    """LongTensor[B] on ``device`` from an int, a sequence of B ints or an integer tensor
    ([B], [1] or a scalar), each a class of the model's ``classes``."""
    if isinstance(target, bool):
        raise TypeError("target must be an int, a sequence of ints or a LongTensor, not bool")
    if isinstance(target, int):
        target = torch.full((batch,), target, dtype=torch.int64)
    elif isinstance(target, Tensor):
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            raise TypeError(f"target must be an integer tensor, got dtype {target.dtype}")
        if target.dim() == 0 or (target.dim() == 1 and target.shape[0] == 1):
            target = target.reshape(()).expand(batch)
        if target.dim() != 1 or target.shape[0] != batch:
            raise ValueError(f"target must be an int or have shape [{batch}], got "
                             f"{tuple(target.shape)}")
    elif isinstance(target, Sequence) and not isinstance(target, str):
        if len(target) != batch or not all(isinstance(t, int) and not isinstance(t, bool)
                                           for t in target):
            raise ValueError(f"target must be {batch} ints, got {target!r}")
        target = torch.tensor(list(target), dtype=torch.int64)
    else:
        raise TypeError(f"target must be None, an int, a sequence of ints or a LongTensor, got "
                        f"{type(target).__name__}")
    target = target.to(device=device, dtype=torch.int64)
    if ((target < 0) | (target >= classes)).any():
        raise ValueError(f"target out of range: the model has {classes} classes, got "
                         f"{target.tolist()}")
    return target


def check_unknown_options(options: dict[str, Any], known: Iterable[str], method: Any,
                          entry: str) -> None:
    """Refuses keywords that are neither the entry point's nor the method's, naming them.

    Args:
        options: the keywords left after the entry point's own (``**method_options``).
        known: the entry point's own keyword names (for a "did you mean" hint).
        method: the method name or object the options would go to.
        entry: the public function's name, for the message.
    """
    if not options or not isinstance(method, str):
        return
    from ..methods import METHODS

    cls = METHODS.get(method)
    if cls is None:
        return                               # the method check names the unknown method
    accepted = _keyword_names(cls)
    unknown = [k for k in options if accepted is not None and k not in accepted]
    if not unknown:
        return
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, list(known) + sorted(accepted or ()), n=1)
        hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    takes = ", ".join(sorted(accepted)) if accepted else "no options"
    raise TypeError(f"{entry}() got unexpected keyword argument(s) {', '.join(hints)}; method "
                    f"{method!r} takes {takes}")


def _keyword_names(cls: type) -> set[str] | None:
    """The keyword names a method class's constructor accepts (None: any, via **kwargs)."""
    import inspect

    try:
        params = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind is not p.VAR_POSITIONAL}


