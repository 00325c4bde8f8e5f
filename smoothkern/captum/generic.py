"""Any Captum algorithm as an engine method: the generic path of :class:`NoiseTunnel`.

The engine draws the noisy rows (counter-based or Captum's replay) and reduces the results; this
method calls the wrapped algorithm's own ``attribute`` once per chunk, on the chunk's rows in
Captum's order (row ``b*k + s``), with ``target``, ``additional_forward_args``, ``baselines``
and ``feature_mask`` expanded by Captum's own helpers, exactly as ``captum.attr.NoiseTunnel``
calls it. Its outputs (a tensor or a tuple, any shapes: input attributions, layer attributions)
are flattened per row for the engine and given back their structure at the end.
"""

from __future__ import annotations

from typing import Any

import torch
from captum._utils.common import (
    _expand_and_update_additional_forward_args,
    _expand_and_update_baselines,
    _expand_and_update_feature_mask,
    _expand_and_update_target,
    _format_tensor_into_tuples,
)
from captum.attr._utils.attribution import GradientAttribution
from torch import Tensor, nn

from ..methods import AttributionMethod
from .arguments import Layout


class CaptumAlgorithm(AttributionMethod):
    """``algorithm.attribute(noisy inputs, **options)`` on the engine's rows.

    Args:
        algorithm: a ``captum.attr`` attribution object.
        inputs: the clean inputs, each Tensor[B, ...] (Captum expands options against them).
        is_tuple: whether the caller gave a tuple of inputs.
        layout: how the inputs join into the engine's rows.
        options: the ``attribute`` keyword arguments (target, additional_forward_args, baselines,
            feature_mask, n_steps, ...), not yet expanded.
        record_delta: call with ``return_convergence_delta=True`` and keep each chunk's delta
            (Captum's order) in ``deltas``.
    """

    name = "captum"

    def __init__(self, algorithm: Any, inputs: tuple[Tensor, ...], is_tuple: bool,
                 layout: Layout, options: dict[str, Any], record_delta: bool) -> None:
        self.algorithm, self.inputs, self.is_tuple, self.layout = (
            algorithm, inputs, is_tuple, layout)
        self.options = dict(options)
        self.record_delta = record_delta
        self.batch = inputs[0].shape[0]
        self.deltas: list[Tensor] = []
        # (whether the algorithm returned a tuple, per-example shape of each output)
        self.structure: tuple[bool, tuple[tuple[int, ...], ...]] | None = None
        self._expanded: dict[int, dict[str, Any]] = {}
        steps = options.get("n_steps", 1)
        self.rows_per_sample = steps if isinstance(steps, int) and steps > 0 else 1

    def expanded_options(self, count: int) -> dict[str, Any]:
        """The options for ``count`` samples per example, expanded as Captum's NoiseTunnel does."""
        if count not in self._expanded:
            options = dict(self.options)
            _expand_and_update_additional_forward_args(count, options)
            _expand_and_update_target(count, options)
            _expand_and_update_baselines(self.inputs, count, options)
            _expand_and_update_feature_mask(count, options)
            self._expanded[count] = options
        return self._expanded[count]

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor,
                  baseline: Tensor | None = None) -> Tensor:
        """inputs (Tensor[k·B, ...]), engine order → Tensor[k·B, N_out], engine order.

        ``target`` is unused (Captum's own ``target`` option is expanded instead); ``baseline``
        (Tensor[k·B, ...], engine order) are drawn baselines that replace ``baselines``.
        """
        count = inputs.shape[0] // self.batch
        options = dict(self.expanded_options(count))
        if baseline is not None:
            options["baselines"] = tuple(self._captum_order(part, count) for part in
                                         self.layout.split(baseline))
        noisy = tuple(self._captum_order(part, count) for part in self.layout.split(inputs))
        if isinstance(self.algorithm, GradientAttribution):
            noisy = tuple(t.requires_grad_() for t in noisy)     # as Captum's NoiseTunnel
        if self.record_delta:
            options["return_convergence_delta"] = True
        with torch.no_grad():  # Captum's NoiseTunnel calls the algorithm under no_grad too
            out = self._call(noisy if self.is_tuple else noisy[0], **options)
        if self.record_delta:
            out, delta = out
            self.deltas.append(delta)
        was_tuple = isinstance(out, tuple)
        parts = _format_tensor_into_tuples(out)
        rows = count * self.batch
        for i, part in enumerate(parts):
            if not isinstance(part, Tensor) or part.dim() == 0 or part.shape[0] != rows:
                shape = tuple(part.shape) if isinstance(part, Tensor) else type(part).__name__
                raise ValueError(f"{type(self.algorithm).__name__}.attribute returned output {i} "
                                 f"of shape {shape}; NoiseTunnel needs one row per noisy input "
                                 f"({rows})")
        self.structure = (was_tuple, tuple(tuple(p.shape[1:]) for p in parts))
        flat = torch.cat([p.detach().reshape(rows, -1) for p in parts], dim=1)   # row b*k + s
        return flat.view(self.batch, count, -1).transpose(0, 1).reshape(rows, -1)

    def _call(self, inputs: Any, **options: Any) -> Any:
        """``attribute`` without Captum's usage logging (as Captum's NoiseTunnel calls it);
        plainly where it is not decorated (LayerLRP, which Captum's NoiseTunnel cannot wrap)."""
        bound = self.algorithm.attribute
        if hasattr(bound, "__wrapped__"):
            return bound.__wrapped__(self.algorithm, inputs, **options)
        return bound(inputs, **options)

    def _captum_order(self, rows: Tensor, count: int) -> Tensor:
        """Rows ``s*B + b`` → ``b*k + s``."""
        shape = rows.shape[1:]
        return rows.reshape(count, self.batch, *shape).transpose(0, 1).reshape(-1, *shape)

    def split_result(self, flat: Tensor) -> tuple[Tensor, ...]:
        """Tensor[B, N_out] → the algorithm's parts, each Tensor[B, *shape]."""
        assert self.structure is not None
        _, shapes = self.structure
        sizes = [int(torch.Size(s).numel()) for s in shapes]
        return tuple(p.reshape(flat.shape[0], *s)
                     for p, s in zip(torch.split(flat, sizes, dim=1), shapes))

    def __repr__(self) -> str:
        return f"CaptumAlgorithm({type(self.algorithm).__name__})"
