"""Explanation sensitivity: how far an explanation moves when the input moves a little.

``sensitivity_max`` is Captum's ``captum.metrics.sensitivity_max`` (Yeh et al., 2019, "On the
(In)fidelity and Sensitivity of Explanations"), with its signature and, for the same seed, its
numbers: for each example, the largest of ``n_perturb_samples`` normalised changes

    ‖Φ(x) − Φ(x + δ_j)‖ / ‖Φ(x)‖,    δ_j uniform in the L∞ ball of radius ``perturb_radius``

(a zero ‖Φ(x)‖ counts as 1). ``avg_sensitivity`` is the mean of the same changes instead of the
maximum. The perturbations are drawn in Captum's chunks and order, so with Captum's default
perturbation function torch's generator is consumed exactly as Captum consumes it.

When the explanation is smoothkern's (``smooth_grad``, ``noise_grad``, the drop-in's
``NoiseTunnel(...).attribute``; see :mod:`.sensitivity_fused`), the clean and all perturbed
explanations run as one batched job with the noise each row gets in the chunked computation,
so the result is the same. Any other explanation function is called as Captum calls it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from inspect import signature
from typing import Any

import torch
from torch import Tensor

from .robust_checks import (
    MetricArgumentError,
    call_perturb_func,
    check_callable,
    check_max_examples,
    check_norm_ord,
    check_radius,
    check_samples,
    chunk_sizes,
    format_inputs,
)
from .robust_expand import expand_explanation_kwargs
from .sensitivity_fused import Segment, as_tuple, fusable


def default_perturb_func(inputs: Tensor | tuple[Tensor, ...], perturb_radius: float = 0.02
                         ) -> tuple[Tensor, ...]:
    """Captum's default: uniform noise in the L∞ ball of radius ``perturb_radius``.

    The noise is drawn as float32 on the CPU from torch's global generator, one tensor per input
    in order, and moved to the input's device (the same draws as Captum's).

    Args:
        inputs: Tensor[R, ...] or a tuple of them.

    Returns:
        the perturbed inputs, always a tuple.
    """
    parts = inputs if isinstance(inputs, tuple) else (inputs,)
    return tuple(x + torch.empty(x.size(), dtype=torch.float32).uniform_(
        -perturb_radius, perturb_radius).to(x.device) for x in parts)


def sensitivity_max(
    explanation_func: Callable[..., Tensor | tuple[Tensor, ...]],
    inputs: Tensor | tuple[Tensor, ...],
    perturb_func: Callable[..., Tensor | tuple[Tensor, ...]] = default_perturb_func,
    perturb_radius: float = 0.02,
    n_perturb_samples: int = 10,
    norm_ord: str | float = "fro",
    max_examples_per_batch: int | None = None,
    **kwargs: Any,
) -> Tensor:
    """Maximum sensitivity of an explanation (``captum.metrics.sensitivity_max``).

    Args:
        explanation_func: returns the explanation of its inputs: a Captum ``attribute`` method,
            ``functools.partial(smoothkern.smooth_grad, model, ...)`` (or ``smooth_grad``
            itself with ``model=`` in ``kwargs``), ``noise_grad`` likewise, the drop-in's
            ``NoiseTunnel(...).attribute``, or any function of ``(inputs, **kwargs)``.
        inputs (Tensor[B, ...] or tuple of them): the examples (aligned on dim 0).
        perturb_func: ``(inputs[, perturb_radius]) -> perturbed inputs``, called on each chunk
            of ``k`` perturbations per example (rows ``b·k + j``); the radius is passed when the
            function takes more than one parameter.
        perturb_radius: the radius of the perturbations (default function: L∞ ball), ≥ 0.
        n_perturb_samples: perturbations per example, ≥ 1.
        norm_ord: the norm of the explanation change, 'fro' (L2) or a number (inf, 1, ...).
        max_examples_per_batch: perturbed rows per explanation call (rounded down to whole
            perturbations of every example, at least one); None: all in one call. A fused
            smoothkern job is split into calls of at most this many rows.
        **kwargs: keywords of the explanation function (``target``,
            ``additional_forward_args``, ``baselines``, ``n_samples``, ...); per-example ones
            are repeated for the perturbed rows as Captum does.

    Returns:
        Tensor[B]: each example's maximum normalised sensitivity.
    """
    return _sensitivity("max", explanation_func, inputs, perturb_func, perturb_radius,
                        n_perturb_samples, norm_ord, max_examples_per_batch, kwargs)


def avg_sensitivity(
    explanation_func: Callable[..., Tensor | tuple[Tensor, ...]],
    inputs: Tensor | tuple[Tensor, ...],
    perturb_func: Callable[..., Tensor | tuple[Tensor, ...]] = default_perturb_func,
    perturb_radius: float = 0.02,
    n_perturb_samples: int = 10,
    norm_ord: str | float = "fro",
    max_examples_per_batch: int | None = None,
    **kwargs: Any,
) -> Tensor:
    """Average sensitivity: :func:`sensitivity_max` with the mean over the perturbations
    instead of the maximum (the same perturbations, explanations and normalisation).

    Returns:
        Tensor[B]: each example's mean normalised sensitivity.
    """
    return _sensitivity("mean", explanation_func, inputs, perturb_func, perturb_radius,
                        n_perturb_samples, norm_ord, max_examples_per_batch, kwargs)


def _sensitivity(reduce: str, explanation_func: Callable[..., Any], inputs: Any,
                 perturb_func: Callable[..., Any], perturb_radius: float,
                 n_perturb_samples: int, norm_ord: str | float,
                 max_examples_per_batch: int | None, kwargs: dict[str, Any]) -> Tensor:
    check_callable(explanation_func, "explanation_func")
    check_callable(perturb_func, "perturb_func")
    parts, _ = format_inputs(inputs)
    n = check_samples(n_perturb_samples)
    limit = check_max_examples(max_examples_per_batch)
    radius = (check_radius(perturb_radius),) if len(
        signature(perturb_func).parameters) > 1 else ()
    norm_ord = check_norm_ord(norm_ord)
    batch = parts[0].shape[0]
    sizes = chunk_sizes(batch, n, limit)

    def perturbed(k: int) -> tuple[Segment, Any]:
        """A chunk's call: its rows as a Segment, and as perturb_func returned them."""
        returned = call_perturb_func(perturb_func, tuple(x.repeat_interleave(k, dim=0)
                                                         for x in parts), *radius)
        rows = returned if isinstance(returned, tuple) else (returned,)
        _check_perturbed(rows, parts, k)
        return Segment(rows, expand_explanation_kwargs(kwargs, parts, k)), returned

    with torch.no_grad():
        explainer = fusable(explanation_func, kwargs, batch)
        if explainer is not None:
            # a smoothkern explainer draws nothing from torch's generator: drawing every
            # chunk's perturbations first consumes it as the chunked computation does
            segments = [Segment(parts, dict(kwargs))] + [perturbed(k)[0] for k in sizes]
            clean, *chunks = explainer.explain(segments, limit and max(limit, batch))
            return _reduce(reduce, clean, zip(sizes, chunks), batch, n, norm_ord)
        # Captum's order: the clean explanation (of the inputs as a tuple), then per chunk the
        # perturbations and their explanation
        clean = as_tuple(explanation_func(parts, **kwargs))

        def unfused() -> Iterator[tuple[int, tuple[Tensor, ...]]]:
            for k in sizes:
                segment, returned = perturbed(k)
                yield k, as_tuple(explanation_func(returned, **segment.kwargs))

        return _reduce(reduce, clean, unfused(), batch, n, norm_ord)


def _reduce(reduce: str, clean: tuple[Tensor, ...],
            chunks: Any, batch: int, n: int, norm_ord: str | float) -> Tensor:
    """Captum's arithmetic: per chunk, each row's normalised change, reduced over the chunk,
    then across chunks (max, or sum / n)."""
    _check_explanations(clean, batch, "the inputs")
    clean_norm = torch.norm(torch.cat([e.reshape(batch, -1) for e in clean], dim=1),
                            p=norm_ord, dim=1, keepdim=True)
    clean_norm = torch.where(clean_norm == 0.0, torch.ones((), dtype=clean_norm.dtype,
                                                           device=clean_norm.device), clean_norm)
    total: Tensor | None = None
    for k, explained in chunks:
        if len(explained) != len(clean):
            raise MetricArgumentError(f"the explanation function returned {len(clean)} "
                                      f"tensor(s) for the inputs and {len(explained)} for the "
                                      "perturbed inputs")
        _check_explanations(explained, batch * k, "the perturbed inputs")
        change = torch.cat([(e.repeat_interleave(k, dim=0) - p).reshape(batch * k, -1)
                            for p, e in zip(explained, clean)], dim=1)
        relative = torch.norm(change, p=norm_ord, dim=1, keepdim=True) / \
            clean_norm.repeat_interleave(k, dim=0)
        per_example = relative.view(batch, -1)
        step = per_example.max(dim=1).values if reduce == "max" else per_example.sum(dim=1)
        total = step if total is None else (torch.max(total, step) if reduce == "max"
                                             else total + step)
    assert total is not None
    return total if reduce == "max" else total / n


def _check_perturbed(rows: tuple[Any, ...], inputs: tuple[Tensor, ...], k: int) -> None:
    if len(rows) != len(inputs) or any(
            not isinstance(r, Tensor) or r.shape[0] != x.shape[0] * k
            for r, x in zip(rows, inputs)):
        shapes = [tuple(r.shape) if isinstance(r, Tensor) else type(r).__name__ for r in rows]
        raise MetricArgumentError(f"perturb_func must return one tensor per input with "
                                  f"{inputs[0].shape[0] * k} rows (the inputs repeated {k} "
                                  f"times), got {shapes}")


def _check_explanations(explained: tuple[Tensor, ...], rows: int, what: str) -> None:
    if any(e.dim() < 1 or e.shape[0] != rows for e in explained):
        raise MetricArgumentError(f"the explanation of {what} must have one row per input row "
                                  f"({rows}), got shapes {[tuple(e.shape) for e in explained]}")
