"""A base attribution method run on drawn weights: each row on the weights of its model draw.

Two ways, one result:

- **vmap over draws**: the k drawn weight sets of a pass are stacked, and the caller's model runs
  once on all rows under ``torch.func.vmap`` with the weights swapped in, a functional call
  (rows of draw d on weight set d; a convolution with a batch of weights becomes one grouped
  convolution). The base
  method sees an ordinary module and takes its gradients through it with autograd.
- **one draw at a time**: for methods that hook the caller's modules (guided backprop, the
  Grad-CAMs), whose hooks must see one ordinary forward, and for passes whose draws have unequal
  row counts: the drawn weights are swapped into the caller's model
  (:func:`~smoothkern.noise.weights.swap.swapped_parameters`) around the base method's call.

The caller's parameter tensors are never written either way.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from ...methods import AttributionMethod
from .draws import WeightDraws
from .swap import parameter_slots, swapped_parameters

# Modules torch.func.vmap cannot batch over draws: recurrent layers have no batching rule, and
# attention takes torch's fused fast path inside vmap. Their draws run one per pass.
UNBATCHABLE = (nn.RNNBase, nn.MultiheadAttention, nn.TransformerEncoderLayer,
               nn.TransformerDecoderLayer)


class OnDrawnWeights(AttributionMethod):
    """``base`` under weight noise: rows carry their model draw (the source's ``model_draw``).

    Args:
        base: the attribution method.
        model: the caller's model.
        draws: the weight draws (no parameters when weight_noise is 0: every draw is the model).
        vmap_draws: batch the draws of a pass with vmap (False: one draw at a time).
    """

    uses_model_structure = True        # never a prepared copy: the noise is on these parameters

    def __init__(self, base: AttributionMethod, model: nn.Module, draws: WeightDraws,
                 vmap_draws: bool = True) -> None:
        self.base, self.draws = base, draws
        self.name = base.name
        self.rows_per_sample = base.rows_per_sample
        self.vmap_draws = vmap_draws and not base.uses_model_structure and \
            not any(isinstance(m, UNBATCHABLE) for m in model.modules())
        self.slots = parameter_slots(model)
        # One module across passes: integrated gradients keys its memory probe by the model.
        self.stacked_model = StackedDraws(model, self.slots)

    @contextlib.contextmanager
    def session(self, model: nn.Module) -> Iterator[None]:
        with self.base.session(model):
            yield

    def subset(self, index: Tensor) -> OnDrawnWeights:
        clone = copy.copy(self)
        clone.base = self.base.subset(index)
        return clone

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor,
                  model_draw: Tensor) -> Tensor:
        """Attributions of rows ``inputs`` (Tensor[R, ...]), row r on the weights of model draw
        ``model_draw[r]`` (LongTensor[R], ascending: the engine's rows are sample-major)."""
        if not self.draws.parameters:                 # no weight noise: the caller's weights
            return self.base.attribute(model, inputs, target)
        # model_draw is on the host (the source keeps it there): reading it costs no device
        # synchronisation; only the per-row positions go to the device
        host = model_draw.cpu()
        first = int(host.min())
        count = int(host.max()) - first + 1
        stacked = self.draws.stacked(first, count)
        host_position = host - first
        sizes = torch.bincount(host_position, minlength=count)
        if self.vmap_draws and bool((sizes == sizes[0]).all()):
            position = host_position.to(inputs.device, non_blocking=True)
            with self.stacked_model.holding(stacked, position, host_position):
                return self.base.attribute(self.stacked_model, inputs, target)
        return self._one_draw_at_a_time(model, inputs, target, stacked, host_position, count)

    def _one_draw_at_a_time(self, model: nn.Module, inputs: Tensor, target: Tensor,
                            stacked: dict[str, Tensor], host_position: Tensor, count: int
                            ) -> Tensor:
        out = None
        for d in range(count):
            rows = (host_position == d).nonzero().view(-1)
            if rows.numel() == 0:
                continue
            rows = rows.to(inputs.device, non_blocking=True)
            with swapped_parameters(self.slots, {name: v[d] for name, v in stacked.items()}):
                part = self.base.attribute(model, inputs[rows], target[rows])
            if out is None:
                out = part.new_empty((inputs.shape[0], *part.shape[1:]))
            out[rows] = part
        return out

    def __repr__(self) -> str:
        return f"OnDrawnWeights({self.base!r})"


class StackedDraws(nn.Module):
    """The caller's model on k drawn weight sets at once (rows of draw d on weight set d).

    Not a copy: the caller's model runs with the drawn weights swapped in for its parameters
    (its buffers, e.g. BatchNorm statistics, as they are), under ``torch.func.vmap`` over the
    weight sets. The swap is :func:`~smoothkern.noise.weights.swap.swapped_parameters`, not
    ``torch.func.functional_call``: in torch 2.14 the latter leaves a plain tensor in place of
    the caller's ``Parameter`` when one module sits at two places in the model (tied layers).
    """

    def __init__(self, model: nn.Module, slots: list[tuple[nn.Module, str, str]]) -> None:
        super().__init__()
        object.__setattr__(self, "model", model)      # not a submodule of this wrapper
        self.slots = slots
        self.stacked: dict[str, Tensor] = {}
        self.position: Tensor | None = None
        self.host_position: Tensor | None = None
        self.train(False)                             # it only ever runs an eval-mode model

    @contextlib.contextmanager
    def holding(self, stacked: dict[str, Tensor], position: Tensor,
                host_position: Tensor | None = None) -> Iterator[None]:
        """Inside: stacked (``{name: Tensor[k, *shape]}``) weights, ``position`` (LongTensor[R])
        the weight set of each row of the method's batch (``host_position``: the same on the
        host, read without a device synchronisation; taken from ``position`` if None)."""
        self.stacked, self.position = stacked, position
        self.host_position = position.cpu() if host_position is None else host_position
        try:
            yield
        finally:
            self.stacked, self.position, self.host_position = {}, None, None

    def parameters(self, recurse: bool = True) -> Iterator[Tensor]:
        """The drawn weights: memory probes leave them out of the bytes a row saves."""
        yield from self.stacked.values()

    def forward(self, x: Tensor) -> Tensor:
        """x (Tensor[N, ...]): row n on weight set ``position[n mod R]`` (a method may run
        its rows several times in one batch, integrated gradients once per step)."""
        assert self.position is not None, "StackedDraws runs inside holding()"
        n, k = x.shape[0], next(iter(self.stacked.values())).shape[0]
        if k == 1:
            return self._call({name: v[0] for name, v in self.stacked.items()}, x)
        copies = -(-n // self.position.shape[0])
        position = self.position.repeat(copies)[:n]
        host = self.host_position.repeat(copies)[:n]
        sizes = torch.bincount(host, minlength=k)
        if bool((sizes == sizes[0]).all()):
            return self._vmapped(x, position, k)
        parts = []
        for d in sizes.nonzero().view(-1).tolist():      # a probe of a few rows
            rows = (host == d).nonzero().view(-1).to(x.device, non_blocking=True)
            parts.append((rows, self._call({name: v[d] for name, v in self.stacked.items()},
                                           x[rows])))
        order = torch.cat([rows for rows, _ in parts])
        out = torch.cat([part for _, part in parts])
        return out[order.argsort()]

    def _call(self, weights: dict[str, Tensor], x: Tensor) -> Tensor:
        with swapped_parameters(self.slots, weights):
            return self.model(x)

    def _vmapped(self, x: Tensor, position: Tensor, k: int) -> Tensor:
        n = x.shape[0]
        grouped = bool((position[1:] >= position[:-1]).all())
        order = None if grouped else position.argsort(stable=True)
        rows = x if grouped else x[order]
        out = torch.func.vmap(self._call)(self.stacked, rows.view(k, n // k, *x.shape[1:]))
        out = out.reshape(n, *out.shape[2:])
        return out if grouped else out[order.argsort()]
