"""Captum's rules for giving each perturbed row its example's arguments, and its forward call.

A chunk holds ``k`` perturbations of every example, example-major (row ``b·k + j`` is
perturbation j of example b), so per-example arguments are repeated with
``repeat_interleave``. The rules are Captum's (``captum._utils.common``), written here without
Captum so the metrics run without it, and without per-example Python loops.
"""

from __future__ import annotations

from collections.abc import Callable
from inspect import signature
from typing import Any

import torch
from torch import Tensor


def expand_target(target: Any, k: int) -> Any:
    """A list or a tensor of several targets, each repeated ``k`` times; anything else as is."""
    if isinstance(target, list):
        return [t for t in target for _ in range(k)]
    if isinstance(target, Tensor) and target.numel() > 1:
        return target.repeat_interleave(k, dim=0)
    return target


def format_forward_args(args: Any) -> tuple[Any, ...] | None:
    """None, or the additional forward arguments as a tuple (one argument becomes a 1-tuple)."""
    if args is not None and not isinstance(args, tuple):
        return (args,)
    return args


def expand_forward_args(args: tuple[Any, ...] | None, k: int) -> tuple[Any, ...] | None:
    """Tensors with a dim 0 repeated ``k`` times per row; scalars and other objects as is."""
    if args is None:
        return None
    return tuple(a.repeat_interleave(k, dim=0) if isinstance(a, Tensor) and a.dim() > 0 else a
                 for a in args)


def format_baselines(baselines: Any, count: int) -> tuple[Any, ...]:
    """Baselines as a tuple, one per input: tensors or numbers (Captum's ``_format_baseline``)."""
    parts = baselines if isinstance(baselines, tuple) else (baselines,)
    for b in parts:
        if not isinstance(b, (Tensor, int, float)):
            raise TypeError(f"baselines must be Tensors or numbers, got {type(b).__name__}")
    return parts


def expand_baselines(baselines: tuple[Any, ...], inputs: tuple[Tensor, ...], k: int
                     ) -> tuple[Any, ...]:
    """A baseline with one row per example (and more than one example) repeated ``k`` times;
    one that broadcasts (a number, a single row) as is."""
    return tuple(b.repeat_interleave(k, dim=0)
                 if isinstance(b, Tensor) and b.dim() > 0 and b.shape[0] == x.shape[0] > 1
                 else b for x, b in zip(inputs, baselines))


def expand_explanation_kwargs(kwargs: dict[str, Any], inputs: tuple[Tensor, ...], k: int
                              ) -> dict[str, Any]:
    """The explanation function's keywords for a chunk of ``k`` perturbations per example, as
    Captum's ``sensitivity_max`` expands them: ``additional_forward_args`` and ``target``
    always, ``baselines`` when the first one is shaped like the first input. A new dict; the
    caller's values are not changed.
    """
    out = dict(kwargs)
    if "additional_forward_args" in out:
        args = format_forward_args(out["additional_forward_args"])
        if args is not None:
            out["additional_forward_args"] = expand_forward_args(args, k)
    if "target" in out:
        out["target"] = expand_target(out["target"], k)
    if "baselines" in out:
        baselines = format_baselines(out["baselines"], len(inputs))
        if isinstance(baselines[0], Tensor) and baselines[0].shape == inputs[0].shape:
            out["baselines"] = expand_baselines(baselines, inputs, k)
    return out


def select_targets(output: Tensor, target: Any) -> Tensor:
    """The output entries ``target`` names per row (Captum's ``_select_targets``).

    Args:
        output (Tensor[R, ...]): the forward function's output.
        target: None (the whole output), an int or a tuple of ints (the same index in every
            row), a 1-element tensor, a LongTensor[R] or a list of R ints (one class per row of
            a 2-D output), or a list of R tuples (one index per row).
    """
    if target is None:
        return output
    if isinstance(target, (int, tuple)):
        return _same_index(output, (target,) if isinstance(target, int) else target)
    rows = output.shape[0]
    if isinstance(target, Tensor):
        if target.numel() == 1 and not target.is_floating_point():
            return _same_index(output, (int(target.item()),))
        if target.dim() == 1 and target.numel() == rows:
            _need_2d(output)
            return output.gather(1, target.reshape(rows, 1)).squeeze(-1)
        raise ValueError(f"target of shape {tuple(target.shape)} does not fit an output of "
                         f"shape {tuple(output.shape)}")
    if isinstance(target, list):
        if len(target) != rows:
            raise ValueError(f"target has {len(target)} entries for {rows} output rows")
        if isinstance(target[0], int):
            _need_2d(output)
            index = torch.tensor(target, device=output.device).reshape(rows, 1)
            return output.gather(1, index).squeeze(-1)
        if isinstance(target[0], tuple):
            columns = [torch.tensor(c, device=output.device) for c in zip(*target)]
            return output[(torch.arange(rows, device=output.device), *columns)]
        raise ValueError(f"target entries must be ints or tuples, got {type(target[0]).__name__}")
    raise ValueError(f"target must be None, an int, a tuple, a Tensor or a list, got "
                     f"{type(target).__name__}")


def run_forward(forward_func: Callable[..., Any], inputs: tuple[Tensor, ...], target: Any,
                additional_forward_args: tuple[Any, ...] | None) -> Tensor:
    """``forward_func(*inputs, *additional_forward_args)`` with the targets selected (Captum's
    ``_run_forward``; a function without parameters is called without arguments)."""
    if len(signature(forward_func).parameters) == 0:
        output = forward_func()
    else:
        output = forward_func(*inputs, *(additional_forward_args or ()))
    if isinstance(output, torch.futures.Future):
        raise NotImplementedError("forward functions that return a torch.futures.Future are not "
                                  "supported")
    if not isinstance(output, Tensor):
        raise TypeError(f"the forward function must return a Tensor, got "
                        f"{type(output).__name__}")
    return select_targets(output, target)


def _same_index(output: Tensor, index: tuple[Any, ...]) -> Tensor:
    if len(index) > output.dim() - 1:
        raise ValueError(f"cannot select target {index} from an output of shape "
                         f"{tuple(output.shape)}")
    return output[(slice(None), *index)]


def _need_2d(output: Tensor) -> None:
    if output.dim() != 2:
        raise ValueError(f"one target per row needs a 2-D output [rows, classes], got shape "
                         f"{tuple(output.shape)}")
