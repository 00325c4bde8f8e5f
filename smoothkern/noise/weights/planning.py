"""Attributions per pass for weight noise: whole model draws batched when they fit the budget.

The engine's unit is one attribution per example (model draw d, input sample i). A pass holds
the rows of its attributions plus one copy of the weights per model draw it touches, and both
count against the memory budget (:mod:`smoothkern.planning`): the drawn weights are saved for
the backward pass like activations.
"""

from __future__ import annotations

import math

import torch

from ...core.planning import memory_budget, rows_in_budget


def batch_draws_on(device: torch.device) -> bool:
    """Whether a pass may hold several weight draws on this device: not on a CPU, where they
    ran no faster than one draw after another and hold a weight copy each (benchmarks/
    RESULTS.md, "NoiseGrad")."""
    return device.type != "cpu"


def choose_attributions_per_pass(rows_per_attribution: int, n_models: int, n_samples: int,
                                 row_bytes: int, draw_bytes: int, device: torch.device,
                                 memory_limit: int | None = None,
                                 batch_models: bool = True) -> int:
    """Attributions per example in one pass (a multiple of ``n_samples`` when whole draws fit).

    Args:
        rows_per_attribution: model rows one attribution costs (levels · B · the method's rows
            per sample).
        row_bytes: activations autograd saves per model row.
        draw_bytes: bytes of one draw of the noised weights (0 without weight noise).
        memory_limit: the caller's cap on the bytes a pass holds.
        batch_models: whether a pass may run several draws (vmap over draws; the caller
            asks :func:`batch_draws_on` for the device); False keeps each pass within one
            draw.

    Returns:
        k · n_samples with k draws per pass (balanced: 10 draws at most 4 a pass run as 4, 4,
        2), or, when one draw's samples do not fit, a balanced share of one draw's samples.
    """
    rows = rows_in_budget(row_bytes, device, memory_limit)
    budget = memory_budget(device) if memory_limit is None else min(memory_budget(device),
                                                                     memory_limit)
    model_rows = n_samples * rows_per_attribution
    model_bytes = draw_bytes + model_rows * row_bytes
    if batch_models:
        models = min(n_models, rows // model_rows, budget // max(1, model_bytes))
        if models >= 1:
            passes = math.ceil(n_models / models)
            return math.ceil(n_models / passes) * n_samples
    fit = min(n_samples, rows // rows_per_attribution,
              max(0, budget - draw_bytes) // max(1, rows_per_attribution * row_bytes))
    per_pass = max(1, fit)
    passes = math.ceil(n_samples / per_pass)
    return math.ceil(n_samples / passes)
