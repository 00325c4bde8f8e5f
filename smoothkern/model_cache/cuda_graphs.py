"""CUDA graphs for the model passes of small models: capture a pass once, replay it after.

A small model's pass on a GPU is a few hundred short kernels, and the CPU launching them one
by one is the limit, not the GPU. A CUDA graph records the launches of one pass (forward and
backward) once; each later pass of the same shape copies its rows into the captured input and
replays the whole pass with one call. The noise and accumulate kernels stay outside the graph
(one launch each).

What may be captured: one batched pass of a ``capturable`` method with no per-row extras
(integrated gradients is not: its passes run eagerly), on CUDA rows, of a model whose forward
does not synchronise with the host (no ``.item()``, no data-dependent shapes). A model that
cannot be captured runs eagerly from then on, with one warning that says why. Results equal
the eager passes': the same kernels run on the same data.

Graphs are kept across calls (:func:`graphed_passes`): a small model's call is often one pass,
so capturing per call would never replay. They belong to the module the passes run (the cached
prepared copy, or the model) and are dropped with it, or when the caller's model changes in a
way a replay would not see: a parameter or buffer replaced (the graph reads fixed addresses;
values written in place are seen), a flag or plain attribute changed, a hook added or removed.
A method shares graphs across calls when its configuration is plain values (the same method
runs the same kernels); one holding tensors gets graphs for its own call only. The key of a
graph also holds the numerics it was recorded under: TF32 and cuDNN flags and an enclosing
autocast. A call never evicts a graph it used itself (a call with more pass shapes than
:data:`MAX_GRAPHS` keeps them all). The kept graphs live in the model cache
(:func:`smoothkern.clear_caches` frees them; their activations stay allocated while they are
kept, and the planner counts their pools as used memory).

A failed capture leaves the process as it was: a forward that synchronises with the host is
found in the warm-up (torch's sync debug mode, :func:`no_host_sync`) before any capture
starts, and a capture that fails anyway is reset so that the allocator stops routing to its
pool and the pool is released.
"""

from __future__ import annotations

import contextlib
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ..core.memory import hold_graph_pools, is_out_of_memory
from ..core.precision import autocast
from .cache import entry
from .fingerprint import fingerprint, without_values
from .toggles import counted

if TYPE_CHECKING:
    from ..methods import AttributionMethod

# Graphs kept per module and compute dtype: the full pass, the last (shorter) pass, and a few
# shapes more for adaptive sample counts, whose batch shrinks as examples finish. Each holds
# its activations.
MAX_GRAPHS = 4
# Eager passes before capture: cuDNN picks its algorithms and the caching allocator fills
# on a side stream, as torch.cuda.graph's documentation asks.
WARMUP_PASSES = 2
_PLAIN = (int, float, bool, str, type(None), torch.dtype)


@dataclass
class _Graph:
    graph: Any        # torch.cuda.CUDAGraph: replay() runs the captured pass
    rows: Tensor      # Tensor[R, ...] the captured input, rows are copied in
    target: Tensor    # LongTensor[R]
    out: Tensor       # Tensor[R, *attr] written by each replay
    method: AttributionMethod   # kept alive: a key by id must not be reused while cached


class GraphedPasses:
    """Replays captured passes for the methods and pass shapes seen before.

    ``attribute(model, method, rows, target)`` returns what ``method.attribute(model, rows,
    target)`` returns; the tensor is the graph's output buffer, valid until the next replay
    (the engine folds it into its statistics at once). It holds no reference to ``model``.
    """

    DEVICE_TYPE = "cuda"

    def __init__(self, compute_dtype: torch.dtype | None = None) -> None:
        self.compute_dtype = compute_dtype
        self._graphs: OrderedDict[tuple, _Graph] = OrderedDict()
        self._pool = None          # one memory pool shared by these graphs
        self._streams: dict[torch.device, Any] = {}   # capture streams, one per device
        self._used: set[tuple] = set()                # keys replayed in the current call
        self._keep = MAX_GRAPHS       # graphs kept: MAX_GRAPHS, or as many as the last call used
        self.pool_bytes: dict[torch.device, int] = {}  # reserved by captures, per device
        self.disabled: str | None = None   # why passes run eagerly, once capture failed
        self.replays = 0
        self.captures = 0
        hold_graph_pools(self)

    def attribute(self, model: nn.Module, method: AttributionMethod, rows: Tensor,
                  target: Tensor) -> Tensor:
        """Tensor[R, *attr] for ``rows`` (Tensor[R, ...] on CUDA) and ``target`` (LongTensor[R]).

        A method that holds per-example state is a new object after adaptive counts drop
        examples (``subset``), hence its own graph."""
        if rows.device.type != self.DEVICE_TYPE:
            raise ValueError(f"CUDA graphs need CUDA rows, got {rows.device}")
        if self.disabled is not None:
            return self._eager(model, method, rows, target)
        key = (method_key(method) or ("object", id(method)), tuple(rows.shape), rows.dtype,
               rows.device, tuple(target.shape), numerics_key(rows.device))
        graph = self._graphs.get(key)
        if graph is None:
            try:
                graph = self._capture(model, method, rows, target)
            except CaptureFailed as failed:     # the warm-up ran: the model itself is fine
                err = failed.__cause__
                self.disabled = f"{type(err).__name__}: {str(err).strip().splitlines()[0]}"
            if self.disabled is not None:       # outside the except: its traceback would
                warnings.warn(                  # keep the failed capture's memory alive
                    f"cuda_graphs: the passes run eagerly, the model could not be captured "
                    f"({self.disabled})", RuntimeWarning, stacklevel=3)
                self._graphs.clear()
                self.pool_bytes.clear()
                self._synchronize(rows.device)
                return self._eager(model, method, rows, target)
            self.captures += 1
            self._graphs[key] = graph
            self._used.add(key)
            self._evict(self._keep)
        else:
            self._graphs.move_to_end(key)
            self._used.add(key)
        graph.rows.copy_(rows)
        graph.target.copy_(target)
        graph.graph.replay()
        self.replays += 1
        return graph.out

    def _evict(self, keep: int) -> None:
        """Drops the least recently used graphs beyond ``keep``, never one this call used."""
        for key in [k for k in self._graphs if k not in self._used]:
            if len(self._graphs) <= keep:
                break
            del self._graphs[key]
        if not self._graphs:
            self.pool_bytes.clear()

    def _eager(self, model: nn.Module, method: AttributionMethod, rows: Tensor,
               target: Tensor) -> Tensor:
        with autocast(rows.device, self.compute_dtype):
            return method.attribute(model, rows, target)

    def _run(self, model: nn.Module, method: AttributionMethod, rows: Tensor,
             target: Tensor) -> Tensor:
        # autocast's weight cache would hold casts made outside the graph's pool: off here.
        with autocast(rows.device, self.compute_dtype, cache_enabled=False):
            return method.attribute(model, rows, target)

    def _capture(self, model: nn.Module, method: AttributionMethod, rows: Tensor,
                 target: Tensor) -> _Graph:
        device = rows.device
        # On the rows' device, whichever is current, and on a capture stream of that device:
        # torch.cuda.graph's default stream lives on the device current when it was made, and
        # work on another device's stream would leave the graph empty.
        with torch.cuda.device(device):
            caller = torch.cuda.current_stream(device)
            static_rows, static_target = rows.clone(), target.clone()
            if device not in self._streams:
                self._streams[device] = torch.cuda.Stream(device=device)
            stream = self._streams[device]
            stream.wait_stream(caller)
            with torch.cuda.stream(stream):
                for _ in range(WARMUP_PASSES - 1):
                    self._run(model, method, static_rows, static_target)
                try:          # the same pass again, refusing host syncs: not capturable
                    with no_host_sync():
                        self._run(model, method, static_rows, static_target)
                except Exception as err:
                    if is_out_of_memory(err):
                        raise
                    raise CaptureFailed from err
            caller.wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            if self._pool is None:
                self._pool = torch.cuda.graph_pool_handle()
            torch.cuda.empty_cache()                 # so that what capture reserves is its pool
            reserved = torch.cuda.memory_reserved(device)
            try:
                with torch.cuda.graph(graph, pool=self._pool, stream=stream):
                    out = self._run(model, method, static_rows, static_target)
            except Exception as err:
                abandon_capture(graph, device, self._pool)
                if is_out_of_memory(err):       # the engine retries with smaller passes
                    raise
                raise CaptureFailed from err
            finally:
                # a capture that fails ends without restoring the caller's stream
                torch.cuda.set_stream(caller)
            self.pool_bytes[device] = self.pool_bytes.get(device, 0) + max(
                0, torch.cuda.memory_reserved(device) - reserved)
        return _Graph(graph, static_rows, static_target, out, method)

    def drop_call_graphs(self) -> None:
        """The end of a call: drops the graphs of methods that do not share theirs (keyed by
        object: no later call can use them), then the least recently used beyond
        :data:`MAX_GRAPHS` or the number this call used, whichever is larger (a call that runs
        more pass shapes than MAX_GRAPHS would otherwise recapture some on every call)."""
        for key in [k for k in self._graphs if k[0][0] == "object"]:
            del self._graphs[key]
            self._used.discard(key)
        self._keep = max(MAX_GRAPHS, len(self._used))
        self._used.clear()
        self._evict(self._keep)

    def kept_pool_bytes(self, device: torch.device) -> int:
        """Bytes the kept graphs' pool holds on ``device`` (0 once none is kept)."""
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        return self.pool_bytes.get(device, 0) if self._graphs else 0

    @staticmethod
    def _synchronize(device: torch.device) -> None:
        torch.cuda.synchronize(device)


class CaptureFailed(RuntimeError):
    """Recording a pass failed after its eager warm-up ran (its cause says why: a host
    synchronisation, a data-dependent shape...): the passes can run, just not as a graph."""


@contextlib.contextmanager
def no_host_sync() -> Iterator[None]:
    """Inside, an operation that synchronises the GPU with the host raises
    :class:`HostSync` at the end (a capture would fail on it). torch's sync debug mode is
    process-wide: it is set to "warn", not "error", so that another thread's passes are not
    failed by it, counted across overlapping users, and this thread's warnings are read."""
    with counted("sync_debug_mode", torch.cuda.get_sync_debug_mode,
                 torch.cuda.set_sync_debug_mode, "warn"), \
            warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        yield
    synced = [w for w in seen if "synchroniz" in str(w.message)]
    if synced:
        raise HostSync(str(synced[0].message))


class HostSync(RuntimeError):
    """The pass synchronised the GPU with the host (``.item()``, a host copy, a data-dependent
    shape)."""


def abandon_capture(graph: Any, device: torch.device, pool: Any) -> None:
    """After a failed capture: torch's ``capture_end`` raises before it tells the allocator the
    capture ended, which would leave every later allocation routed to the capture's pool
    (``empty_cache`` then fails, later captures too). Resetting the graph ends the routing and
    releases the pool where torch does so; the explicit end covers torch versions whose reset
    does not (it raises, ignored, where the routing ended already)."""
    with contextlib.suppress(RuntimeError):
        graph.reset()
    index = device.index if device.index is not None else torch.cuda.current_device()
    with contextlib.suppress(RuntimeError, AttributeError):
        torch._C._cuda_endAllocateToPool(index, pool)


def numerics_key(device: torch.device) -> tuple:
    """What else decides which kernels a pass runs: TF32 and cuDNN flags, and an autocast the
    caller entered around the call (a graph replays the kernels it recorded)."""
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    if hasattr(matmul, "fp32_precision") and hasattr(cudnn, "conv"):
        tf32 = (matmul.fp32_precision, cudnn.conv.fp32_precision)
    else:
        tf32 = (matmul.allow_tf32, cudnn.allow_tf32)
    autocasting = torch.is_autocast_enabled(device.type)
    return (tf32, torch.get_float32_matmul_precision(), cudnn.enabled, cudnn.benchmark,
            cudnn.deterministic, autocasting,
            torch.get_autocast_dtype(device.type) if autocasting else None)


def graphed_passes(runner: nn.Module, compute_dtype: torch.dtype | None,
                   state: tuple) -> GraphedPasses:
    """The graphs of ``runner`` kept from earlier calls (in the model cache, with the runner:
    the cached prepared copy, or the model), or a fresh set when ``state`` (:func:`model_state`
    of the caller's model) changed since they were captured. Starts a call: see
    :meth:`GraphedPasses.drop_call_graphs` for its end."""
    kept = entry(runner).graphs
    cached = kept.get(compute_dtype)
    if cached is not None and cached[0] == state:
        cached[1]._used.clear()
        return cached[1]
    graphs = GraphedPasses(compute_dtype)
    kept[compute_dtype] = (state, graphs)
    return graphs


def model_state(model: nn.Module, state: tuple | None = None) -> tuple:
    """What a captured pass depends on besides its rows: the model's tensors (identities and
    addresses; a graph reads values written in place, and a prepared copy writes its derived
    tensors in place), flags, plain attributes and hooks (:func:`fingerprint`, or ``state`` if
    taken already). Taken before a method installs hooks of its own."""
    return without_values(fingerprint(model) if state is None else state)


def method_key(method: AttributionMethod) -> tuple | None:
    """The method's type and public configuration, for a class that declares
    ``shares_graphs`` itself, when that configuration is plain values (and modules of the
    model, by identity): equal keys run the same kernels. None otherwise (a subclass with state
    of its own, tensors, lists): such a method's graphs serve its own call only."""
    if not vars(type(method)).get("shares_graphs", False):
        return None
    items = []
    for name, value in sorted(vars(method).items()):
        if name.startswith("_"):                 # runtime state (hook handles)
            continue
        plain = _plain_value(value)
        if plain is None:
            return None
        items.append((name, plain))
    return type(method).__module__, type(method).__qualname__, tuple(items)


def _plain_value(value: Any) -> Any:
    if isinstance(value, _PLAIN):
        return ("value", value)
    if isinstance(value, nn.Module):
        return ("module", id(value))
    if isinstance(value, tuple) and all(isinstance(v, _PLAIN) for v in value):
        return ("tuple", value)
    if isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, _PLAIN)
                                       for k, v in value.items()):
        return ("dict", tuple(sorted(value.items())))
    return None
