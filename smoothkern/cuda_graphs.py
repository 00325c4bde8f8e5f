"""CUDA graphs for the model passes of small models: capture a pass once, replay it after.

A small model's pass on a GPU is a few hundred short kernels, and the CPU launching them one
by one is the limit, not the GPU. A CUDA graph records the launches of one pass (forward and
backward) once; each later pass of the same shape copies its rows into the captured input and
replays the whole pass with one call. The noise and accumulate kernels stay outside the graph
(one launch each).

What may be captured: one batched pass of a method with no per-row extras (integrated
gradients' steps are extras and run eagerly), on CUDA rows, of a model whose forward does not
synchronise with the host (no ``.item()``, no data-dependent shapes). A model that cannot be
captured runs eagerly from then on, with one warning that says why. Results equal the eager
passes': the same kernels run on the same data.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .methods import AttributionMethod
from .precision import autocast

# Graphs kept per call: the full pass, the last (shorter) pass, and a few shapes more for
# adaptive sample counts, whose batch shrinks as examples finish. Each holds its activations.
MAX_GRAPHS = 4
# Eager passes before capture: cuDNN picks its algorithms and the caching allocator fills
# on a side stream, as torch.cuda.graph's documentation asks.
WARMUP_PASSES = 2


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    rows: Tensor      # Tensor[R, ...] the captured input, rows are copied in
    target: Tensor    # LongTensor[R]
    out: Tensor       # Tensor[R, *attr] written by each replay


class GraphedPasses:
    """Replays captured passes on ``model`` for the methods and pass shapes seen before.

    ``attribute(method, rows, target)`` returns what ``method.attribute(model, rows, target)``
    returns; the tensor is the graph's output buffer, valid until the next call (the engine
    folds it into its statistics at once).
    """

    def __init__(self, model: nn.Module, compute_dtype: torch.dtype | None = None) -> None:
        self.model, self.compute_dtype = model, compute_dtype
        self._graphs: OrderedDict[tuple, _Graph] = OrderedDict()
        self._pool = None          # one memory pool shared by this call's graphs
        self.disabled: str | None = None   # why passes run eagerly, once capture failed
        self.replays = 0

    def attribute(self, method: AttributionMethod, rows: Tensor, target: Tensor) -> Tensor:
        """Tensor[R, *attr] for ``rows`` (Tensor[R, ...] on CUDA) and ``target`` (LongTensor[R]).

        A method that holds per-example state is a new object after adaptive counts drop
        examples (``subset``), hence its own graph."""
        if rows.device.type != "cuda":
            raise ValueError(f"CUDA graphs need CUDA rows, got {rows.device}")
        if self.disabled is not None:
            return self._eager(method, rows, target)
        key = (id(method), tuple(rows.shape), rows.dtype, rows.device, tuple(target.shape))
        graph = self._graphs.get(key)
        if graph is None:
            try:
                graph = self._capture(method, rows, target)
            except Exception as err:  # noqa: BLE001 - any capture failure means: run eagerly
                self.disabled = f"{type(err).__name__}: {str(err).strip().splitlines()[0]}"
                warnings.warn(f"cuda_graphs: the passes run eagerly, the model could not be "
                              f"captured ({self.disabled})", RuntimeWarning, stacklevel=3)
                self._graphs.clear()
                torch.cuda.synchronize(rows.device)
                return self._eager(method, rows, target)
            self._graphs[key] = graph
            if len(self._graphs) > MAX_GRAPHS:
                self._graphs.popitem(last=False)
        else:
            self._graphs.move_to_end(key)
        graph.rows.copy_(rows)
        graph.target.copy_(target)
        graph.graph.replay()
        self.replays += 1
        return graph.out

    def _eager(self, method: AttributionMethod, rows: Tensor, target: Tensor) -> Tensor:
        with autocast(rows.device, self.compute_dtype):
            return method.attribute(self.model, rows, target)

    def _run(self, method: AttributionMethod, rows: Tensor, target: Tensor) -> Tensor:
        # autocast's weight cache would hold casts made outside the graph's pool: off here.
        with autocast(rows.device, self.compute_dtype, cache_enabled=False):
            return method.attribute(self.model, rows, target)

    def _capture(self, method: AttributionMethod, rows: Tensor, target: Tensor) -> _Graph:
        static_rows, static_target = rows.clone(), target.clone()
        side = torch.cuda.Stream(device=rows.device)
        side.wait_stream(torch.cuda.current_stream(rows.device))
        with torch.cuda.stream(side):
            for _ in range(WARMUP_PASSES):
                self._run(method, static_rows, static_target)
        torch.cuda.current_stream(rows.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        with torch.cuda.graph(graph, pool=self._pool):
            out = self._run(method, static_rows, static_target)
        return _Graph(graph, static_rows, static_target, out)
