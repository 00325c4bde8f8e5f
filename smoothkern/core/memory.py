"""Recognising and recovering from out-of-memory errors, on every device."""

from __future__ import annotations

import weakref
from typing import Any

import torch

# How allocation failures read when they surface as plain RuntimeErrors (CPU allocator, MPS).
_OOM_MESSAGES = ("out of memory", "can't allocate memory", "not enough memory")


def is_out_of_memory(err: BaseException) -> bool:
    """A CUDA OOM, or a CPU allocator failure (both surface as RuntimeError subclasses)."""
    oom_type = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    if isinstance(err, (oom_type, MemoryError)):
        return True
    return isinstance(err, RuntimeError) and any(text in str(err) for text in _OOM_MESSAGES)


def release_cached_memory(device: torch.device) -> None:
    """Hands cached blocks back after an OOM so that the smaller retry can use them."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


# Kept CUDA graphs (smoothkern.model_cache.cuda_graphs): their private pools are reserved by the
# allocator, yet no eager pass can use them. Held weakly: a dropped set of graphs counts no more.
_GRAPH_POOLS: weakref.WeakSet = weakref.WeakSet()


def hold_graph_pools(graphs: Any) -> None:
    """Counts ``graphs.kept_pool_bytes(device)`` in :func:`graph_pool_bytes` while it lives."""
    _GRAPH_POOLS.add(graphs)


def graph_pool_bytes(device: torch.device) -> int:
    """Bytes the kept CUDA graphs' pools hold on ``device``."""
    return sum(graphs.kept_pool_bytes(device) for graphs in list(_GRAPH_POOLS))
