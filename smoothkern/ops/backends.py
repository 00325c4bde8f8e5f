"""Backends: the kernel sets as one priority table, and how a ``backend=`` name chooses passes.

A kernel set (:class:`Backend`) supplies the two ops that are not the model:

    perturb(x[B, ...], sigma[S, B] or [S, B, N], seed, start, count, noise, *,
            example_index=None) -> Tensor[count*S*B, ...]           (:mod:`.perturb`)
    accumulate(state: AccumulatorState (element shape [N]), chunk[k, N]) -> None   (in place,
                                                                                 :mod:`.accumulate`)

How the model passes run is a separate choice, the pass strategy (:class:`PassStrategy`):
"batched" (one forward/backward over many noisy copies), "vmap" (``torch.func.vmap(grad(...))``)
or "loop" (the naive per-sample reference). The names ``backend=`` accepts are the kernel sets
(batched passes) plus "vmap" and "loop" (pure-torch kernels with that strategy).
``backend="auto"`` picks the available kernel set with the highest ``auto_priority`` for the
inputs' device. A user's own :class:`Backend` object is accepted wherever a name is.
"""

from __future__ import annotations

import enum
import importlib
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import torch
from torch import Tensor

from ..noise.kinds import NoiseKind
from ..noise.sampling import Sampling
from . import extension
from .accumulate import AccumulatorState, accumulate, accumulate_reference
from .perturb import perturb, perturb_reference

PerturbFn = Callable[[Tensor, Tensor, int, int, int, NoiseKind | str], Tensor]
AccumulateFn = Callable[[AccumulatorState, Tensor], None]


class PassStrategy(str, enum.Enum):
    """How the model passes run. String-valued: ``PassStrategy.LOOP == "loop"``."""

    BATCHED = "batched"   # one forward/backward over many noisy copies
    VMAP = "vmap"         # torch.func.vmap(grad(...)) over the copies
    LOOP = "loop"         # one sample per pass: the naive reference

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


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
    passes: PassStrategy


# ----------------------------------------------------------------------------------------------
# availability of the compiled and Triton kernel sets

TRITON_INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"
_triton_failure: str | None = None


def _why_no_cuda() -> str | None:
    reason = extension.why_no_cuda_ops()
    if reason is None and not torch.cuda.is_available():
        reason = "no CUDA device"
    return reason


def _why_no_triton() -> str | None:
    """None when the Triton kernels can run, else a one-line reason; never imports triton.

    ``import smoothkern`` does not import triton (about 75 ms, and a broken install must not
    break the package): this only looks for the module; the kernels are imported on first use,
    and an import that fails then is reported from then on.
    """
    if _triton_failure is not None:
        return _triton_failure
    if importlib.util.find_spec("triton") is None:
        return "triton not importable (pip install triton)"
    if not TRITON_INTERPRETED and not torch.cuda.is_available():
        return "no CUDA device (set TRITON_INTERPRET=1 to run the kernels on the CPU)"
    return None


def _triton(op: str) -> ModuleType:
    """``smoothkern.ops.triton.<op>``, imported (with triton) on first use."""
    global _triton_failure
    try:
        return importlib.import_module(f"smoothkern.ops.triton.{op}")
    except Exception as err:  # noqa: BLE001 - a broken triton install: report, keep the reason
        _triton_failure = f"triton not importable ({type(err).__name__}: {err})"
        raise RuntimeError(f"backend 'triton': {_triton_failure}") from err


def _triton_perturb(x: Tensor, sigma: Tensor, seed: int, start: int, count: int,
                    noise: NoiseKind | str = NoiseKind.GAUSSIAN, *,
                    example_index: Tensor | None = None,
                    sampling: Sampling | str = Sampling.IID) -> Tensor:
    return _triton("perturb").perturb(x, sigma, seed, start, count, noise,
                                      example_index=example_index, sampling=sampling)


def _triton_accumulate(state: AccumulatorState, chunk: Tensor) -> None:
    _triton("accumulate").accumulate(state, chunk)


# ----------------------------------------------------------------------------------------------
# the table: "auto" takes the available set with the highest priority for the device

KERNEL_SETS = (
    # pure torch, everywhere; the reference of the others
    Backend("torch", perturb_reference, accumulate_reference, ("cpu", "cuda"), 0,
            description="pure-torch Philox noise and streaming statistics (the kernels' "
                        "reference)"),
    # above torch on the CPU (the Triton interpreter is never picked there)
    Backend("cpp", perturb, accumulate, ("cpu",), 10, extension.why_no_ops,
            description="C++ CPU kernels: Philox noise in one pass, one-read streaming "
                        "statistics"),
    # below cuda: JIT-compiled on first use; runs on the CPU only under TRITON_INTERPRET=1
    Backend("triton", _triton_perturb, _triton_accumulate,
            ("cuda", "cpu") if TRITON_INTERPRETED else ("cuda",), 20, _why_no_triton,
            description="Triton kernels: tl.philox noise in one pass, one-read streaming "
                        "statistics",
            auto_device_types=("cuda",)),
    # first on the GPU: no JIT compile on first use (benchmarks/gpu.py times both)
    Backend("cuda", perturb, accumulate, ("cuda",), 30, _why_no_cuda,
            description="CUDA kernels: Philox noise with 16-byte stores, one-read streaming "
                        "statistics"),
)

_REGISTRY: dict[str, Backend] = {backend.name: backend for backend in KERNEL_SETS}
# backend names that choose a pass strategy rather than kernels: name -> (kernel set, passes)
_STRATEGY_NAMES = {"vmap": ("torch", PassStrategy.VMAP), "loop": ("torch", PassStrategy.LOOP)}


def register(backend: Backend) -> Backend:
    """Adds (or replaces) a kernel set by name; returns it."""
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


def choose(name: str | Backend, device: torch.device | str) -> Choice:
    """The kernel set and pass strategy for ``name`` on ``device``; "auto": the fastest.

    A :class:`Backend` object (a user's own kernel set) runs batched passes as it is.

    Raises:
        ValueError: unknown name, or a named backend that cannot run here (the message lists
            the available ones and why this one is not).
    """
    if isinstance(name, Backend):
        return Choice(name, PassStrategy.BATCHED)
    if not isinstance(name, str):
        raise TypeError(f"backend must be a name, got {type(name).__name__}")
    kind = torch.device(device).type
    if name == "auto":
        ranked = sorted((b for b in _REGISTRY.values()
                         if b.auto_priority >= 0 and kind in (b.auto_device_types or b.device_types)
                         and _reason(b, device) is None), key=lambda b: -b.auto_priority)
        if not ranked:
            raise RuntimeError(f"no kernel set is available on {device}")
        return Choice(ranked[0], PassStrategy.BATCHED)
    if name not in names():
        raise ValueError(f"unknown backend {name!r}; choose from {('auto',) + names()}")
    kernels, passes = _STRATEGY_NAMES.get(name, (name, PassStrategy.BATCHED))
    reason = _reason(_REGISTRY[kernels], device)
    if reason is not None:
        raise ValueError(f"backend {name!r} is not available on {kind}: {reason}. "
                         f"Available: {('auto',) + available(device)}")
    return Choice(_REGISTRY[kernels], passes)
