"""Deletion and insertion curves (pixel flipping, region perturbation), in batched passes.

Features are removed from the input (deletion) or added to a baseline (insertion) in the order
of their attribution, most relevant first, and the model's score for the explained class is read
after every step. A faithful explanation makes the deletion curve fall fast and the insertion
curve rise fast. Every step of every example is an independent input, so all of them run in
forward-only passes of many rows under ``torch.no_grad`` instead of one small forward per step.

A step that changes no element of the input (its features already equal the baseline, e.g. black
background pixels of a digit under the "black" baseline) has the previous step's input, so its
score is copied rather than recomputed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.checks import check_target
from ..core.memory import is_out_of_memory, release_cached_memory
from ..core.plan import prepared_call
from ..core.planning import forward_measuring_saved_bytes, memory_budget
from ..core.state import check_eval_mode
from ..model_cache import check_preparations, serialised
from ..model_io import ModelCall, OutputSpec, adapt, logits_of
from .removal import baseline_values, removal_units, step_counts

MODES = ("deletion", "insertion")
SCORES = ("softmax", "logit")
# Forward-only rows per CPU pass: the fastest per row with half the memory of the next size
# (docs/metrics_faithfulness.md, "Speed").
CPU_FORWARD_ROWS = 256


@dataclass(frozen=True)
class PerturbationCurve:
    """The result of ``deletion_curve`` / ``insertion_curve``.

    Attributes:
        scores (Tensor[B, steps + 1]): the model's score for the target after 0, 1, ..., steps
            steps; column 0 is the clean input (deletion) or the baseline (insertion).
        fraction (Tensor[steps + 1]): the fraction of features removed (inserted) at each
            column, from 0 to 1: the curve's x axis.
        auc (Tensor[B]): the area under each curve over ``fraction`` (trapezoidal rule), in the
            score's units. Lower is better for deletion, higher for insertion.
        target (LongTensor[B]): the class whose score was read.
        mode: "deletion" or "insertion".
        forward_rows: how many model rows were evaluated (steps that change nothing are copied).
    """

    scores: Tensor
    fraction: Tensor
    auc: Tensor
    target: Tensor
    mode: str
    forward_rows: int


def deletion_curve(model: nn.Module, inputs: Tensor, attributions: Tensor,
                   target: int | Sequence[int] | Tensor | None = None, **options: Any
                   ) -> PerturbationCurve:
    """Removes features in order of attribution (pixel flipping), most relevant first.

    With ``patch`` > 1 it is region perturbation: square regions ranked by their summed
    attribution. Equal to Quantus's ``PixelFlipping(features_in_step=s)`` given the same
    inputs, targets and attributions shaped like the inputs: Quantus's curve is ``scores[:, 1:]``
    (it does not report the clean input) and its ``return_auc_per_sample`` area is
    ``numpy.trapz(scores[:, 1:])`` (unit spacing).

    Args:
        model: a classifier returning ``[B, classes]``; in eval mode if it has BatchNorm or
            Dropout. It is only run forward, under ``torch.no_grad``; nothing of it changes.
        inputs (Tensor[B, ...]): the clean inputs, floating point and finite; unchanged.
        attributions (Tensor[B, ...]): one score per feature: shaped like ``inputs``, or, for
            images ``[B, C, H, W]``, ``[B, 1, H, W]`` or ``[B, H, W]`` (one score per pixel,
            all channels removed together).
        target: the class whose score is read: None (the class predicted for the clean
            input), an int, a sequence of ints or a LongTensor[B].
        options: see ``perturbation_curve``.
    """
    return perturbation_curve(model, inputs, attributions, target, mode="deletion", **options)


def insertion_curve(model: nn.Module, inputs: Tensor, attributions: Tensor,
                    target: int | Sequence[int] | Tensor | None = None, **options: Any
                    ) -> PerturbationCurve:
    """Inserts features into the baseline in order of attribution, most relevant first.

    Column 0 is the baseline; the last column is the clean input. Arguments as
    ``deletion_curve``; options as ``perturbation_curve``.
    """
    return perturbation_curve(model, inputs, attributions, target, mode="insertion", **options)


@serialised
def perturbation_curve(model: nn.Module, inputs: Tensor, attributions: Tensor,
                       target: int | Sequence[int] | Tensor | None = None, *,
                       mode: str = "deletion", features_per_step: int | None = None,
                       steps: int | None = None, patch: int | tuple[int, int] = 1,
                       baseline: str | float | Tensor = "black", score: str = "softmax",
                       blur_sigma: float | None = None, rows_per_pass: int | None = None,
                       memory_limit: int | None = None, skip_unchanged: bool = True,
                       prepare: bool | Sequence[str] = True, output: OutputSpec = None,
                       forward_args: Sequence[Any] | Any = None,
                       forward_kwargs: dict[str, Any] | None = None) -> PerturbationCurve:
    """Deletion or insertion curve of an attribution, all steps in batched forward passes.

    Args:
        model, inputs, attributions, target: as ``deletion_curve``.
        mode: "deletion" (features of the input replaced by the baseline) or "insertion"
            (features of the baseline replaced by the input).
        features_per_step: features (patches) per step; the last step takes what is left
            (Quantus's ``features_in_step``). Default 1 when ``steps`` is not given.
        steps: instead, the number of steps: step k reaches ⌊k·n/steps⌋ of the n features.
        patch: region size for images: an int or (height, width); features are then the cells
            of a grid of such regions (smaller at the right and bottom edges when the size does
            not divide the image), ranked by their summed attribution.
        baseline: what a removed feature becomes: "black" (each example's minimum value,
            Quantus's "black"), "white" (its maximum), "mean" (the mean of the clean example
            over all its features), "blur" (a Gaussian blur of the example, images only), a
            float, or a Tensor broadcastable to ``inputs``.
        score: "softmax" (the target's probability, Quantus's default) or "logit".
        blur_sigma: σ of the "blur" baseline in pixels (default 2.5 % of the larger side, at
            least 1).
        rows_per_pass: model rows per forward; default from the memory budget (and at most
            ``CPU_FORWARD_ROWS`` on a CPU). Results do not depend on it beyond float rounding.
        memory_limit: cap in bytes on the activations one pass may hold.
        skip_unchanged: copy the previous score for a step that changes no element of the
            input instead of running the model on the same input again (False: run every
            step, e.g. for a model that is not deterministic).
        prepare: run a prepared copy of the model, as ``smooth_grad(prepare=)`` does (True:
            BatchNorm folded, channels_last for convolutional models; checked against the model
            on the clean inputs, the caller's model unchanged), False, or names.
        output: where the logits are in the model's output (:mod:`smoothkern.model_io`):
            None (a Tensor, ``.logits`` or ``["logits"]``), a key or attribute name, a tuple
            index or a callable.
        forward_args, forward_kwargs: the model's other inputs; tensors whose first dim is B
            go with their example on every step.

    Ties between equal attributions are broken by position (the earlier feature first).

    Returns:
        PerturbationCurve with scores ``[B, steps + 1]``.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    if output in SCORES:
        raise ValueError(f"output={output!r}: the score read is score= ({SCORES}); output= "
                         f"says where the logits are in the model's output")
    call = adapt(model, output, forward_args, forward_kwargs, inputs.shape[0])
    _check_inputs(inputs)
    _check_positive(rows_per_pass, "rows_per_pass")
    _check_positive(memory_limit, "memory_limit")
    preparations = check_preparations(prepare)
    check_eval_mode(model)
    scores_of_units, unit_of_element = removal_units(attributions, inputs, patch)   # [B, U], [*a]
    n_units = scores_of_units.shape[1]
    counts = step_counts(n_units, features_per_step, steps).to(inputs.device)  # [T + 1]
    base = baseline_values(baseline, inputs, blur_sigma)                         # like inputs
    order = torch.sort(scores_of_units, dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(n_units, device=order.device).expand_as(order))
    # Rank of the unit each element belongs to, shaped like the attributions, expanded to x.
    a_shape = (inputs.shape[0],) + tuple(unit_of_element.shape)
    element_rank = rank[:, unit_of_element.flatten()].reshape(a_shape).expand_as(inputs)

    with torch.no_grad():
        logits = call(inputs)                  # a ModelCall returns checked logits
        if call is model:
            if not isinstance(logits, Tensor):        # a ModelOutput, a mapping: adapted
                call = ModelCall(model, batch=inputs.shape[0])
            logits = logits_of(logits, None, inputs.shape[0])
        target = _check_target(target, logits)
        runner = prepared_call(call, inputs, logits, preparations)
        if skip_unchanged:
            needed = _changing_steps(inputs, base, element_rank, order.shape, counts)  # [B, T+1]
        else:
            needed = torch.ones(inputs.shape[0], counts.shape[0], dtype=torch.bool,
                                device=inputs.device)
        rows = needed.nonzero()                                               # [R, 2] (b, k)
        per_pass = rows_per_pass if rows_per_pass is not None else \
            _rows_per_pass(call, inputs, memory_limit)
        values = _evaluate(runner, inputs, base, element_rank, counts, rows, target, mode, score,
                           per_pass)                                          # [R]
    scores = torch.zeros(needed.shape, dtype=values.dtype, device=values.device)
    scores[rows[:, 0], rows[:, 1]] = values
    # A step that changed nothing takes the score of the last step that did.
    steps_index = torch.arange(needed.shape[1], device=needed.device).expand_as(needed)
    last = torch.where(needed, steps_index, torch.zeros_like(steps_index)).cummax(1).values
    scores = scores.gather(1, last)
    fraction = counts.to(scores.dtype) / n_units
    return PerturbationCurve(scores=scores, fraction=fraction, auc=curve_auc(scores, fraction),
                             target=target, mode=mode, forward_rows=int(rows.shape[0]))


def curve_auc(scores: Tensor, fraction: Tensor | None = None) -> Tensor:
    """Area under curves by the trapezoidal rule.

    Args:
        scores (Tensor[B, N]): curves.
        fraction (Tensor[N]): x positions; default evenly spaced from 0 to 1.

    Returns:
        Tensor[B].
    """
    if fraction is None:
        fraction = torch.linspace(0, 1, scores.shape[1], dtype=scores.dtype, device=scores.device)
    return torch.trapezoid(scores, fraction.to(scores.dtype), dim=1)


def _check_inputs(inputs: Tensor) -> None:
    if not isinstance(inputs, Tensor):
        raise TypeError(f"inputs must be a Tensor, got {type(inputs).__name__}")
    if not inputs.is_floating_point():
        raise TypeError(f"inputs must be floating point, got {inputs.dtype}")
    if inputs.dim() < 2 or inputs.shape[0] == 0:
        raise ValueError(f"inputs must be [B, ...] with B >= 1, got {tuple(inputs.shape)}")
    if not torch.isfinite(inputs).all():
        raise ValueError("inputs contain NaN or infinite values")


def _check_positive(value: int | None, name: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                              or value < 1):
        raise ValueError(f"{name} must be None or a positive int, got {value!r}")


def _logits(model: nn.Module, inputs: Tensor) -> Tensor:
    return logits_of(model(inputs), None, inputs.shape[0])


def _check_target(target: Any, logits: Tensor) -> Tensor:
    """LongTensor[B] of classes; None is the class predicted for the clean input."""
    if target is None:
        return logits.argmax(1)
    return check_target(target, logits.shape[0], logits.shape[1], logits.device)


def _changing_steps(inputs: Tensor, base: Tensor, element_rank: Tensor,
                    units_shape: torch.Size, counts: Tensor) -> Tensor:
    """BoolTensor[B, T + 1]: the steps whose input differs from the previous step's (and 0).

    Deletion and insertion change the same elements at a step, so one answer serves both.
    """
    batch, n_units = units_shape
    differs = (inputs != base).flatten(1)                                  # [B, E]
    unit_differs = torch.zeros(batch, n_units, dtype=torch.int64, device=inputs.device)
    unit_differs.scatter_add_(1, element_rank.flatten(1), differs.long())  # indexed by rank
    changed_before = F.pad(unit_differs.cumsum(1), (1, 0))                 # [B, U + 1]
    changed_after = changed_before[:, counts]                               # [B, T + 1]
    needed = torch.ones_like(changed_after, dtype=torch.bool)
    needed[:, 1:] = changed_after[:, 1:] > changed_after[:, :-1]
    return needed


def _rows_per_pass(model: nn.Module, inputs: Tensor, memory_limit: int | None) -> int:
    """Rows per forward: the activation budget over one row's activations (an upper bound:
    measured as what autograd would save), at most ``CPU_FORWARD_ROWS`` on a CPU."""
    one = model.subset([0]) if isinstance(model, ModelCall) else model
    _, row_bytes = forward_measuring_saved_bytes(one, inputs[:1])
    budget = memory_budget(inputs.device)
    if memory_limit is not None:
        budget = min(budget, memory_limit)
    rows = budget // max(1, row_bytes + 2 * inputs[0].numel() * inputs.element_size())
    if inputs.device.type == "cpu":
        rows = min(rows, CPU_FORWARD_ROWS)
    return max(1, rows)


def _evaluate(model: nn.Module, inputs: Tensor, base: Tensor, element_rank: Tensor,
              counts: Tensor, rows: Tensor, target: Tensor, mode: str, score: str,
              per_pass: int) -> Tensor:
    """The target's score for each (example, step) row. rows (LongTensor[R, 2]) → Tensor[R]."""
    values, start = [], 0
    while start < rows.shape[0]:
        chunk = rows[start:start + per_pass]
        try:
            values.append(_score_rows(model, inputs, base, element_rank, counts, chunk, target,
                                      mode, score))
        except Exception as err:  # noqa: BLE001 - re-raised unless it is an out-of-memory
            if not is_out_of_memory(err) or per_pass == 1:
                raise
            release_cached_memory(inputs.device)
            per_pass = max(1, per_pass // 2)
            continue
        start += chunk.shape[0]
    return torch.cat(values)


def _score_rows(model: nn.Module, inputs: Tensor, base: Tensor, element_rank: Tensor,
                counts: Tensor, chunk: Tensor, target: Tensor, mode: str, score: str
                ) -> Tensor:
    example, step = chunk[:, 0], chunk[:, 1]
    shape = (-1,) + (1,) * (inputs.dim() - 1)
    removed = element_rank[example] < counts[step].view(shape)
    if mode == "deletion":
        perturbed = torch.where(removed, base[example], inputs[example])
    else:
        perturbed = torch.where(removed, inputs[example], base[example])
    if isinstance(model, ModelCall):            # each row with its own example's arguments
        model = model.subset(example)
    logits = model(perturbed)
    scores = logits.softmax(1) if score == "softmax" else logits
    return scores.gather(1, target[example][:, None])[:, 0]
