"""Integrated gradients, with integration steps and noise samples in the same batched passes."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from ..core.memory import is_out_of_memory, release_cached_memory
from ..core.planning import rows_in_budget
from ..model_cache.cache import saved_bytes_per_row
from .base import AttributionMethod, input_gradient
from .quadrature import check_rule, steps_and_alphas


def expand_baseline(baseline: float | Tensor | None, inputs: Tensor) -> float | Tensor:
    """The baseline for each row of ``inputs``.

    Rows of a pass are ordered so that row ``r`` belongs to example ``r mod B`` (the engine's
    order ``(i*S + s)*B + b``), so a per-example baseline ``[B, ...]`` is tiled ``R / B`` times.

    Args:
        baseline: None (zero), a number, one example (Tensor[...] or Tensor[1, ...]) or one per
            example (Tensor[B, ...]).
        inputs (Tensor[R, ...]).
    """
    if baseline is None:
        return 0
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return baseline
    if not isinstance(baseline, Tensor):
        raise TypeError(f"baseline must be None, a number or a Tensor, got "
                        f"{type(baseline).__name__}")
    baseline = baseline.to(device=inputs.device)
    example = tuple(inputs.shape[1:])
    if tuple(baseline.shape) == example:
        return baseline.unsqueeze(0)
    if baseline.dim() == inputs.dim() and tuple(baseline.shape[1:]) == example:
        rows, per = inputs.shape[0], baseline.shape[0]
        if per == 1 or per == rows:
            return baseline
        if rows % per == 0:
            return baseline.repeat(rows // per, *([1] * (inputs.dim() - 1)))
    raise ValueError(f"baseline of shape {tuple(baseline.shape)} does not fit inputs of shape "
                     f"{example} per example (give [..], [1, ..] or [B, ..])")


class IntegratedGradients(AttributionMethod):
    """Integrated gradients (Sundararajan et al. 2017), Captum's arithmetic.

    A noisy batch of R rows becomes ``n_steps · R`` model rows (``rows_per_sample = n_steps``, so
    the engine sizes passes for that); they run in chunks of at most ``internal_batch_size`` rows,
    whole steps at a time, like Captum's ``internal_batch_size``.

    Args:
        n_steps: integration points.
        integration: "gausslegendre" (Captum's default), "riemann_left", "riemann_right",
            "riemann_middle" or "riemann_trapezoid". (Captum calls this argument ``method``.)
        baseline: None (zeros), a number, Tensor[...] / Tensor[1, ...] (one for all) or
            Tensor[B, ...] (one per example).
        multiply_by_inputs: multiply the path-averaged gradient by ``x - baseline`` (global IG);
            False gives the local variant.
        internal_batch_size: model rows per pass; None: all steps in one pass; "auto": as many
            as the engine's memory budget holds (``planning.rows_in_budget``; whole steps, at
            least one). With None or "auto", a pass that runs out of memory is redone with half
            the steps (and later calls keep the smaller size); a given int is kept as asked.
        record_delta: keep the completeness error of each call in ``self.deltas`` (Tensor[R]),
            ``sum(attribution) - (f(x)[t] - f(baseline)[t])`` per row.
    """

    name = "integrated_gradients"
    supports_layer_noise = True
    # Each pass copies its step weights from the host, sizes its step chunks in Python and may
    # record deltas: nothing a CUDA graph could replay.
    capturable = False

    def __init__(self, n_steps: int = 50, integration: str = "gausslegendre",
                 baseline: float | Tensor | None = None, multiply_by_inputs: bool = True,
                 internal_batch_size: int | str | None = "auto",
                 record_delta: bool = False) -> None:
        check_rule(integration, n_steps)
        size = internal_batch_size
        if not (size is None or size == "auto" or (
                isinstance(size, int) and not isinstance(size, bool) and size >= 1)):
            raise ValueError(f"internal_batch_size must be None, 'auto' or an int >= 1, got "
                             f"{internal_batch_size!r}")
        self.n_steps = n_steps
        self.integration = integration
        self.baseline = baseline
        self.multiply_by_inputs = bool(multiply_by_inputs)
        self.internal_batch_size = internal_batch_size
        self.record_delta = bool(record_delta)
        self.deltas: list[Tensor] = []
        self.rows_per_sample = n_steps
        self._row_cap: int | None = None       # model rows that fit, learnt from OOM errors
        self._input_dim: int | None = None     # dims of the rows seen (tells [B, ...] baselines)

    def subset(self, index: Tensor) -> IntegratedGradients:
        """A copy whose per-example baseline (Tensor[B, ...], B > 1) keeps only ``index``."""
        per_example = (isinstance(self.baseline, Tensor) and self._input_dim is not None
                       and self.baseline.dim() == self._input_dim and self.baseline.shape[0] > 1)
        if not per_example:
            return self
        clone = copy.copy(self)
        clone.baseline = self.baseline[index.to(self.baseline.device)]
        return clone

    def _steps_per_pass(self, model: nn.Module, x: Tensor) -> int:
        size = self.internal_batch_size
        if size is None:
            size = self.n_steps * x.shape[0]
        elif size == "auto":
            size = self._rows_in_budget(model, x)
        if self._row_cap is not None and not isinstance(self.internal_batch_size, int):
            size = min(size, self._row_cap)
        return min(self.n_steps, max(1, size // x.shape[0]))  # Captum's rule: whole steps

    def _rows_in_budget(self, model: nn.Module, x: Tensor) -> int:
        """Model rows that fit the engine's memory budget (one probe per model and shape)."""
        return rows_in_budget(saved_bytes_per_row(model, x), x.device)

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor,
                  baseline: Tensor | None = None) -> Tensor:
        """IG of each row; ``baseline`` (Tensor[R, ...]) replaces ``self.baseline`` for this
        call (drawn baselines, one per noisy row)."""
        x = inputs.detach()
        self._input_dim = x.dim()
        baseline = expand_baseline(self.baseline if baseline is None else baseline, x)
        sizes, alphas = steps_and_alphas(self.integration, self.n_steps)
        per_pass = self._steps_per_pass(model, x)
        total, start = None, 0
        while start < self.n_steps:
            try:
                part = self._partial(model, x, baseline, target, sizes[start:start + per_pass],
                                     alphas[start:start + per_pass])
            except Exception as err:  # noqa: BLE001 - only OOM is retried, the rest re-raised
                if not is_out_of_memory(err) or per_pass == 1 or \
                        isinstance(self.internal_batch_size, int):
                    raise
                release_cached_memory(x.device)
                per_pass //= 2
                self._row_cap = per_pass * x.shape[0]
                continue
            total = part if total is None else total + part
            start += per_pass
        if self.record_delta:
            self.deltas.append(self._delta(model, x, baseline, target, total))
        return total

    def _partial(self, model: nn.Module, x: Tensor, baseline: float | Tensor, target: Tensor,
                 sizes: list[float], alphas: list[float]) -> Tensor:
        """Σ over these steps of size · gradient at ``baseline + alpha (x - baseline)``."""
        steps, rows = len(alphas), x.shape[0]
        scaled = torch.cat([baseline + alpha * (x - baseline) for alpha in alphas], dim=0)
        grad = input_gradient(model, scaled, target.repeat(steps))
        weights = torch.tensor(sizes).float().view(steps, 1).to(grad.device)
        summed = (grad.contiguous().view(steps, -1) * weights).view(steps, rows, *x.shape[1:])
        summed = summed.sum(0)
        return summed * (x - baseline) if self.multiply_by_inputs else summed

    @staticmethod
    def _delta(model: nn.Module, x: Tensor, baseline: float | Tensor, target: Tensor,
               attribution: Tensor) -> Tensor:
        start = torch.full_like(x, baseline) if not isinstance(baseline, Tensor) else (
            baseline.expand_as(x))
        index = target.view(-1, 1)
        with torch.no_grad():
            start_out = model(start).gather(1, index).view(-1)
            end_out = model(x).gather(1, index).view(-1)
        return attribution.reshape(x.shape[0], -1).sum(-1) - (end_out - start_out)

    def __repr__(self) -> str:
        return (f"IntegratedGradients(n_steps={self.n_steps}, integration={self.integration!r}, "
                f"multiply_by_inputs={self.multiply_by_inputs})")

