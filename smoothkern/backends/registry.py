"""The backend registry: every way of drawing noise and reducing attributions, by name.

A backend supplies the two ops that are not the model:

    perturb(x[B, ...], sigma[S, B], seed, start, count, noise) -> Tensor[count*S*B, ...]
    accumulate(state: StreamingStats (element shape [N]), chunk[k, N]) -> None   (in place)

and says how the model passes run (``pass_mode``): "batched" (one forward/backward over many
noisy copies), "vmap" (``torch.func.vmap(grad(...))``) or "loop" (the naive per-sample
reference). ``backend="auto"`` picks the available batched backend with the highest
``auto_priority`` for the inputs' device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..stats import StreamingStats

PerturbFn = Callable[[Tensor, Tensor, int, int, int, str], Tensor]
AccumulateFn = Callable[[StreamingStats, Tensor], None]
PASS_MODES = ("batched", "vmap", "loop")


@dataclass(frozen=True)
class Backend:
    """One entry of the registry.

    Attributes:
        name: what ``backend=`` accepts.
        perturb, accumulate: the two ops (see the module docstring).
        device_types: device types it runs on ("cpu", "cuda").
        pass_mode: "batched", "vmap" or "loop".
        auto_priority: higher wins under ``backend="auto"``; negative never auto-picked.
        why_unavailable: returns None when usable, else a one-line reason.
        auto_device_types: device types "auto" may pick it on (None: all of device_types);
            e.g. Triton runs on the CPU under its interpreter but is never the fastest there.
    """

    name: str
    perturb: PerturbFn
    accumulate: AccumulateFn
    device_types: tuple[str, ...] = ("cpu", "cuda")
    pass_mode: str = "batched"
    auto_priority: int = -1
    why_unavailable: Callable[[], str | None] = lambda: None
    description: str = ""
    auto_device_types: tuple[str, ...] | None = None


_REGISTRY: dict[str, Backend] = {}


def register(backend: Backend) -> Backend:
    """Adds (or replaces) a backend; returns it."""
    if backend.pass_mode not in PASS_MODES:
        raise ValueError(f"pass_mode must be one of {PASS_MODES}, got {backend.pass_mode!r}")
    _REGISTRY[backend.name] = backend
    return backend


def names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def status(device: torch.device | str | None = None) -> dict[str, str]:
    """``{name: "available" | reason}`` for every registered backend (on ``device`` if given)."""
    out = {}
    for name, backend in _REGISTRY.items():
        reason = backend.why_unavailable()
        if reason is None and device is not None:
            kind = torch.device(device).type
            if kind not in backend.device_types:
                reason = f"does not run on {kind} (runs on {', '.join(backend.device_types)})"
        out[name] = "available" if reason is None else reason
    return out


def available(device: torch.device | str) -> tuple[str, ...]:
    return tuple(name for name, state in status(device).items() if state == "available")


def resolve(name: str, device: torch.device | str) -> Backend:
    """The backend for ``name`` on ``device``; "auto" picks the fastest available.

    Raises:
        ValueError: unknown name, or a named backend that cannot run here (the message lists
            the available ones and why this one is not).
    """
    if not isinstance(name, str):
        raise TypeError(f"backend must be a name, got {type(name).__name__}")
    usable = available(device)
    if name == "auto":
        kind = torch.device(device).type
        ranked = sorted((b for b in _REGISTRY.values()
                         if b.name in usable and b.pass_mode == "batched" and b.auto_priority >= 0
                         and kind in (b.auto_device_types or b.device_types)),
                        key=lambda b: -b.auto_priority)
        if not ranked:
            raise RuntimeError(f"no batched backend is available on {device}")
        return ranked[0]
    if name not in _REGISTRY:
        raise ValueError(f"unknown backend {name!r}; choose from {('auto',) + names()}")
    if name not in usable:
        raise ValueError(f"backend {name!r} is not available on {torch.device(device).type}: "
                         f"{status(device)[name]}. Available: {('auto',) + usable}")
    return _REGISTRY[name]
