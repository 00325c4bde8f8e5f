"""Argument checks shared by the robustness metrics (sensitivity and infidelity).

Captum reports some of these mistakes with ``assert``; the error here is both a ``ValueError``
and an ``AssertionError`` so code written against either keeps catching it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

from torch import Tensor


class MetricArgumentError(ValueError, AssertionError):
    """A robustness metric was called with arguments it cannot use."""


def format_inputs(inputs: Any, name: str = "inputs") -> tuple[tuple[Tensor, ...], bool]:
    """``inputs`` as a tuple of tensors aligned on dim 0, and whether the caller gave a tuple.

    Args:
        inputs: Tensor[B, ...] or a tuple of them (the same B).
    """
    is_tuple = isinstance(inputs, tuple)
    parts = inputs if is_tuple else (inputs,)
    if not parts:
        raise MetricArgumentError(f"{name} is an empty tuple")
    for t in parts:
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a Tensor or a tuple of Tensors, got "
                            f"{type(t).__name__}")
        if t.dim() < 1 or t.shape[0] < 1:
            raise MetricArgumentError(f"{name} must be [B, ...] with B >= 1, got shape "
                                      f"{tuple(t.shape)}")
    batch = parts[0].shape[0]
    if any(t.shape[0] != batch for t in parts):
        raise MetricArgumentError(f"the tensors of {name} must share dim 0 (the examples), got "
                                  f"{[tuple(t.shape) for t in parts]}")
    return tuple(parts), is_tuple


def check_callable(value: Any, name: str) -> None:
    if not callable(value):
        raise TypeError(f"{name} must be callable, got {type(value).__name__}")


def check_samples(n_perturb_samples: Any) -> int:
    if isinstance(n_perturb_samples, bool) or not isinstance(n_perturb_samples, int):
        raise TypeError(f"n_perturb_samples must be an int, got "
                        f"{type(n_perturb_samples).__name__}")
    if n_perturb_samples < 1:
        raise MetricArgumentError(f"n_perturb_samples must be >= 1, got {n_perturb_samples}")
    return n_perturb_samples


def check_max_examples(max_examples_per_batch: Any) -> int | None:
    if max_examples_per_batch is None:
        return None
    if isinstance(max_examples_per_batch, bool) or not isinstance(max_examples_per_batch, int):
        raise TypeError(f"max_examples_per_batch must be None or an int, got "
                        f"{type(max_examples_per_batch).__name__}")
    if max_examples_per_batch < 1:
        raise MetricArgumentError(f"max_examples_per_batch must be >= 1, got "
                                  f"{max_examples_per_batch}")
    return max_examples_per_batch


def check_radius(perturb_radius: Any) -> float:
    if isinstance(perturb_radius, bool) or not isinstance(perturb_radius, (int, float)) or \
            not (math.isfinite(perturb_radius) and perturb_radius >= 0):
        raise MetricArgumentError(f"perturb_radius must be a finite number >= 0, got "
                                  f"{perturb_radius!r}")
    return perturb_radius


def check_norm_ord(norm_ord: Any) -> str | float:
    """'fro' or a number (inf and -inf included), as ``torch.norm`` takes for a vector."""
    if norm_ord == "nuc":
        raise MetricArgumentError("norm_ord='nuc' is a matrix norm; the sensitivity of an "
                                  "example is a vector: use 'fro' or a number")
    if isinstance(norm_ord, str):
        if norm_ord != "fro":
            raise MetricArgumentError(f"norm_ord must be 'fro' or a number, got {norm_ord!r}")
        return norm_ord
    if isinstance(norm_ord, bool) or not isinstance(norm_ord, (int, float)) or \
            math.isnan(norm_ord):
        raise MetricArgumentError(f"norm_ord must be 'fro' or a number, got {norm_ord!r}")
    return norm_ord


def chunk_sizes(batch: int, n_perturb_samples: int, max_examples_per_batch: int | None
                ) -> list[int]:
    """Perturbations per example in each chunk, in Captum's order (its
    ``_divide_and_aggregate_metrics``): full chunks of ``max_examples_per_batch // batch``
    (at least 1, at most all), then the remainder. Warns as Captum does when the limit is
    below the batch or above batch · n_perturb_samples.
    """
    if max_examples_per_batch is not None and not (
            1 <= max_examples_per_batch // batch <= n_perturb_samples):
        warnings.warn(f"max_examples_per_batch must be at least the input batch size and at most "
                      f"batch size * n_perturb_samples; it is {max_examples_per_batch} and the "
                      f"batch size is {batch}: each chunk holds "
                      f"{min(max(max_examples_per_batch // batch, 1), n_perturb_samples)} "
                      "perturbation(s) of every example", stacklevel=3)
    per_chunk = n_perturb_samples if max_examples_per_batch is None else \
        min(max(max_examples_per_batch // batch, 1), n_perturb_samples)
    full, rest = divmod(n_perturb_samples, per_chunk)
    return [per_chunk] * full + ([rest] if rest else [])


def call_perturb_func(perturb_func: Callable[..., Any], inputs: tuple[Tensor, ...],
                      *extra: Any) -> Any:
    """``perturb_func`` on Captum's argument form: one tensor alone, several as a tuple."""
    return perturb_func(inputs[0] if len(inputs) == 1 else inputs, *extra)
