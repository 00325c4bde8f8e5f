"""Explanation infidelity: how well attributions predict the model's change under perturbations.

``infidelity`` is Captum's ``captum.metrics.infidelity`` (Yeh et al., 2019), with its signature
and, for the same seed, its numbers: for each example the mean over ``n_perturb_samples``
perturbations I of

    (Iᵀ Φ(x) − (f(x) − f(x − I)))²

(with ``normalize=True``, Iᵀ Φ(x) scaled by the β that minimises it). The perturbations are
drawn in Captum's chunks and order. Forward passes only; unlike Captum, the clean forward f(x)
runs once rather than once per chunk, unless it draws random numbers (a model with dropout in
training mode), in which case it runs once per chunk so that torch's generator is consumed as
Captum consumes it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .robust_checks import (
    MetricArgumentError,
    call_perturb_func,
    check_callable,
    check_max_examples,
    check_samples,
    chunk_sizes,
    format_inputs,
)
from .robust_expand import (
    expand_baselines,
    expand_forward_args,
    expand_target,
    format_baselines,
    format_forward_args,
    run_forward,
)


def infidelity_perturb_func_decorator(multiply_by_inputs: bool = True
                                      ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Turns a ``perturb_func`` that returns only perturbed inputs into one that also returns
    the perturbations (Captum's decorator of the same name).

    The perturbation is ``input − perturbed`` (``multiply_by_inputs=False``: for local
    attributions such as saliency) or ``(input − perturbed) / (input − baseline)`` (True; a zero
    denominator counts as 1), baseline 0 when none is given.
    """
    if not isinstance(multiply_by_inputs, bool):
        raise TypeError(f"multiply_by_inputs must be True or False, got {multiply_by_inputs!r}")

    def decorate(perturb_func: Callable[..., Any]) -> Callable[..., Any]:
        check_callable(perturb_func, "perturb_func")

        def with_perturbations(inputs: Tensor | tuple[Tensor, ...], baselines: Any = None
                               ) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
            returned = perturb_func(inputs) if baselines is None else \
                perturb_func(inputs, baselines)
            perturbed = returned if isinstance(returned, tuple) else (returned,)
            parts = inputs if isinstance(inputs, tuple) else (inputs,)
            bases = (0,) * len(parts) if baselines is None else \
                format_baselines(baselines, len(parts))
            return tuple(_safe_div(x - p, x - b) if multiply_by_inputs else x - p
                         for x, p, b in zip(parts, perturbed, bases)), perturbed

        with_perturbations.__wrapped__ = perturb_func  # type: ignore[attr-defined]
        return with_perturbations

    return decorate


def infidelity(
    forward_func: Callable[..., Tensor],
    perturb_func: Callable[..., Any],
    inputs: Tensor | tuple[Tensor, ...],
    attributions: Tensor | tuple[Tensor, ...],
    baselines: Any = None,
    additional_forward_args: Any = None,
    target: Any = None,
    n_perturb_samples: int = 10,
    max_examples_per_batch: int | None = None,
    normalize: bool = False,
) -> Tensor:
    """Infidelity of attributions (``captum.metrics.infidelity``).

    Args:
        forward_func: the model (or any function of the inputs and
            ``additional_forward_args``).
        perturb_func: ``(inputs[, baselines]) -> (perturbations, perturbed inputs)``, on a chunk
            of ``k`` copies of every example (rows ``b·k + j``), or one decorated with
            :func:`infidelity_perturb_func_decorator` that returns only the perturbed inputs.
        inputs (Tensor[B, ...] or tuple of them): the examples.
        attributions: shaped like ``inputs`` (same structure).
        baselines: handed to ``perturb_func`` (numbers, or tensors with one row or one row per
            example), or None.
        additional_forward_args: further arguments of ``forward_func`` (tensors with a row per
            example are repeated for the perturbed rows).
        target: the output to explain: None, an int, a tuple, a LongTensor[B] or a list.
        n_perturb_samples: perturbations per example, ≥ 1.
        max_examples_per_batch: perturbed rows per forward (rounded down to whole perturbations
            of every example, at least one); None: all at once.
        normalize: scale Iᵀ Φ(x) by β = E[Iᵀ Φ (f(x) − f(x − I))] / E[(Iᵀ Φ)²] first.

    Returns:
        Tensor[B]: each example's infidelity.
    """
    check_callable(forward_func, "forward_func")
    check_callable(perturb_func, "perturb_func")
    parts, _ = format_inputs(inputs)
    attrs, _ = format_inputs(attributions, "attributions")
    if len(attrs) != len(parts):
        raise MetricArgumentError(f"inputs have {len(parts)} tensor(s) and attributions "
                                  f"{len(attrs)}: they must match")
    for x, a in zip(parts, attrs):
        if x.shape != a.shape:
            raise MetricArgumentError(f"attributions must be shaped like the inputs, got "
                                      f"{tuple(a.shape)} for an input of shape {tuple(x.shape)}")
    if not isinstance(normalize, bool):
        raise TypeError(f"normalize must be True or False, got {normalize!r}")
    n = check_samples(n_perturb_samples)
    limit = check_max_examples(max_examples_per_batch)
    bases = None if baselines is None else format_baselines(baselines, len(parts))
    forward_args = format_forward_args(additional_forward_args)
    batch = parts[0].shape[0]
    clean = _CleanForward(forward_func, parts, target, forward_args)

    totals: tuple[Tensor, ...] | None = None
    with torch.no_grad():
        for k in chunk_sizes(batch, n, limit):
            perturbations, perturbed = _perturb(perturb_func, parts, bases, k)
            changed = run_forward(forward_func, perturbed, expand_target(target, k),
                                  expand_forward_args(forward_args, k))
            differences = (clean.output().repeat_interleave(k, dim=0) - changed).reshape(batch, -1)
            # Σ over inputs of Σ over elements of attribution · perturbation, per row
            predicted = sum((a.repeat_interleave(k, dim=0) * p).reshape(batch * k, -1).sum(dim=1)
                            for a, p in zip(attrs, perturbations))
            predicted = predicted.reshape(batch, -1)  # type: ignore[union-attr]
            step = (predicted.pow(2).sum(-1), (predicted * differences).sum(-1),
                    differences.pow(2).sum(-1)) if normalize else \
                ((predicted - differences).pow(2).sum(-1),)
            totals = step if totals is None else tuple(t + s for t, s in zip(totals, step))
    assert totals is not None
    if normalize:
        beta = _safe_div(totals[1], totals[0])
        values = beta * beta * totals[0] - 2 * beta * totals[1] + totals[2]
    else:
        values = totals[0]
    return values / n


class _CleanForward:
    """f(x) with the targets selected: computed once, or per chunk when it draws from torch's
    generator (then each chunk's draw happens where Captum's does)."""

    def __init__(self, forward_func: Callable[..., Any], inputs: tuple[Tensor, ...],
                 target: Any, forward_args: tuple[Any, ...] | None) -> None:
        self.call = lambda: run_forward(forward_func, inputs, target, forward_args)
        self.kept: Tensor | None = None

    def output(self) -> Tensor:
        if self.kept is not None:
            return self.kept
        before = _generator_states()
        out = self.call()
        if _generator_states_equal(before, _generator_states()):
            self.kept = out
        return out


def _generator_states() -> list[Tensor]:
    states = [torch.random.get_rng_state()]
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states += torch.cuda.get_rng_state_all()
    return states


def _generator_states_equal(a: list[Tensor], b: list[Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(s, t) for s, t in zip(a, b))


def _perturb(perturb_func: Callable[..., Any], inputs: tuple[Tensor, ...],
             baselines: tuple[Any, ...] | None, k: int
             ) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
    """One chunk's (perturbations, perturbed inputs), each a tuple with a tensor per input."""
    expanded = tuple(x.repeat_interleave(k, dim=0) for x in inputs)
    extra: tuple[Any, ...] = ()
    if baselines is not None:
        expanded_bases = expand_baselines(baselines, inputs, k)
        extra = (expanded_bases[0] if len(expanded_bases) == 1 else expanded_bases,)
    returned = call_perturb_func(perturb_func, expanded, *extra)
    if not isinstance(returned, (tuple, list)) or len(returned) != 2:
        raise MetricArgumentError("perturb_func must return (perturbations, perturbed inputs); "
                                  "decorate one that returns only perturbed inputs with "
                                  "infidelity_perturb_func_decorator")
    perturbations, perturbed = (r if isinstance(r, tuple) else (r,) for r in returned)
    if len(perturbations) != len(inputs) or len(perturbed) != len(inputs):
        raise MetricArgumentError(f"perturb_func must return a perturbation and a perturbed "
                                  f"input per input ({len(inputs)}), got {len(perturbations)} "
                                  f"and {len(perturbed)}")
    for p, q, x in zip(perturbations, perturbed, expanded):
        if not isinstance(p, Tensor) or not isinstance(q, Tensor) or p.shape != q.shape or \
                q.shape[0] != x.shape[0]:
            shapes = [tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
                      for t in (p, q)]
            raise MetricArgumentError(f"each perturbation must be shaped like its perturbed "
                                      f"input, with {x.shape[0]} rows; got {shapes}")
    return perturbations, perturbed


def _safe_div(numerator: Tensor, denominator: Tensor | float) -> Tensor:
    """numerator / denominator, with 1 where the denominator is 0 (Captum's ``safe_div``)."""
    if isinstance(denominator, (int, float)):
        return numerator / (denominator if denominator != 0 else 1.0)
    return numerator / torch.where(denominator != 0, denominator,
                                   torch.tensor(1.0, dtype=denominator.dtype,
                                                device=denominator.device))
