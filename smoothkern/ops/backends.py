"""The backend registry: kernel sets by name, and how a ``backend=`` name chooses model passes.

A kernel set (:class:`Backend`) supplies the two ops that are not the model:

    perturb(x[B, ...], sigma[S, B] or [S, B, N], seed, start, count, noise)
        -> Tensor[count*S*B, ...]
    accumulate(state: StreamingStats (element shape [N]), chunk[k, N]) -> None   (in place)

How the model passes run is a separate choice, the pass strategy (``engine.PASS_STRATEGIES``):
"batched" (one forward/backward over many noisy copies), "vmap" (``torch.func.vmap(grad(...))``)
or "loop" (the naive per-sample reference). The names ``backend=`` accepts are the kernel sets
(batched passes) plus "vmap" and "loop" (pure-torch kernels with that strategy).
``backend="auto"`` picks the available kernel set with the highest ``auto_priority`` for the
inputs' device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..stats import StreamingStats

PerturbFn = Callable[[Tensor, Tensor, int, int, int, str], Tensor]
AccumulateFn = Callable[[StreamingStats, Tensor], None]


@dataclass(frozen=True)
class Backend:
    """A kernel set: perturb and accumulate for some device types.

    Attributes:
        name: what ``backend=`` accepts.
        perturb, accumulate: the two ops (see the module docstring).
        device_types: device types it runs on ("cpu", "cuda").
        auto_priority: higher wins under ``backend="auto"``; negative never auto-picked.
        why_unavailable: returns None when usable, else a one-line reason (cheap: it runs for
            every ``backend_status`` call).
        auto_device_types: device types "auto" may pick it on (None: all of device_types);
            e.g. Triton runs on the CPU under its interpreter but is never the fastest there.
    """

    name: str
    perturb: PerturbFn
    accumulate: AccumulateFn
    device_types: tuple[str, ...] = ("cpu", "cuda")
    auto_priority: int = -1
    why_unavailable: Callable[[], str | None] = lambda: None
    description: str = ""
    auto_device_types: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Choice:
    """What a ``backend=`` name resolves to: a kernel set and a pass strategy."""

    kernels: Backend
    passes: str


_REGISTRY: dict[str, Backend] = {}
# backend names that choose a pass strategy rather than kernels: name -> (kernel set, passes)
_STRATEGY_NAMES = {"vmap": ("torch", "vmap"), "loop": ("torch", "loop")}


def register(backend: Backend) -> Backend:
    """Adds (or replaces) a kernel set; returns it."""
    if backend.name in _STRATEGY_NAMES or backend.name == "auto":
        raise ValueError(f"{backend.name!r} is reserved")
    _REGISTRY[backend.name] = backend
    return backend


def names() -> tuple[str, ...]:
    """Every name ``backend=`` accepts besides "auto"."""
    return tuple(_REGISTRY) + tuple(_STRATEGY_NAMES)


def _reason(backend: Backend, device: torch.device | str | None) -> str | None:
    reason = backend.why_unavailable()
    if reason is None and device is not None:
        kind = torch.device(device).type
        if kind not in backend.device_types:
            reason = f"does not run on {kind} (runs on {', '.join(backend.device_types)})"
        elif kind == "cuda" and not torch.cuda.is_available():
            reason = "no CUDA device"
    return reason


def status(device: torch.device | str | None = None) -> dict[str, str]:
    """``{name: "available" | reason}`` for every name (on ``device`` if given)."""
    out = {}
    for name, backend in _REGISTRY.items():
        reason = _reason(backend, device)
        out[name] = "available" if reason is None else reason
    for name, (kernels, _) in _STRATEGY_NAMES.items():
        out[name] = out[kernels]
    return out


def available(device: torch.device | str) -> tuple[str, ...]:
    return tuple(name for name, state in status(device).items() if state == "available")


def resolve(name: str, device: torch.device | str) -> Backend:
    """The kernel set ``name`` runs on ``device`` (see :func:`choose`)."""
    return choose(name, device).kernels


def choose(name: str, device: torch.device | str) -> Choice:
    """The kernel set and pass strategy for ``name`` on ``device``; "auto": the fastest.

    Raises:
        ValueError: unknown name, or a named backend that cannot run here (the message lists
            the available ones and why this one is not).
    """
    if not isinstance(name, str):
        raise TypeError(f"backend must be a name, got {type(name).__name__}")
    kind = torch.device(device).type
    if name == "auto":
        ranked = sorted((b for b in _REGISTRY.values()
                         if b.auto_priority >= 0 and kind in (b.auto_device_types or b.device_types)
                         and _reason(b, device) is None), key=lambda b: -b.auto_priority)
        if not ranked:
            raise RuntimeError(f"no kernel set is available on {device}")
        return Choice(ranked[0], "batched")
    if name not in names():
        raise ValueError(f"unknown backend {name!r}; choose from {('auto',) + names()}")
    kernels, passes = _STRATEGY_NAMES.get(name, (name, "batched"))
    reason = _reason(_REGISTRY[kernels], device)
    if reason is not None:
        raise ValueError(f"backend {name!r} is not available on {kind}: {reason}. "
                         f"Available: {('auto',) + available(device)}")
    return Choice(_REGISTRY[kernels], passes)
