"""The "triton" backend: Triton kernels (``smoothkern/kernels``), on the GPU or, under
``TRITON_INTERPRET=1``, on the CPU (slow, for tests; "auto" never picks it there).

``import smoothkern`` does not import triton (about 75 ms, and a broken install must not break
the package): :func:`why_unavailable` only looks for the module (``find_spec``), and the kernel
modules are imported on the first perturb/accumulate. An import that fails then is remembered
and reported by :func:`why_unavailable` from then on.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from types import ModuleType

import torch
from torch import Tensor

from ..core.stats import StreamingStats
from .registry import Backend, register

INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"

_import_failure: str | None = None


def _kernels(name: str) -> ModuleType:
    """``smoothkern.kernels.<name>``, imported (with triton) on first use."""
    global _import_failure
    try:
        return importlib.import_module(f"smoothkern.kernels.{name}")
    except Exception as err:  # noqa: BLE001 - a broken triton install: report, keep the reason
        _import_failure = f"triton not importable ({type(err).__name__}: {err})"
        raise RuntimeError(f"backend 'triton': {_import_failure}") from err


def why_unavailable() -> str | None:
    """None when the Triton kernels can run, else a one-line reason; never imports triton."""
    if _import_failure is not None:
        return _import_failure
    if importlib.util.find_spec("triton") is None:
        return "triton not importable (pip install triton)"
    if not INTERPRETED and not torch.cuda.is_available():
        return "no CUDA device (set TRITON_INTERPRET=1 to run the kernels on the CPU)"
    return None


def perturb(x: Tensor, sigma: Tensor, seed: int, start: int, count: int,
            noise: str = "gaussian", *, example_index: Tensor | None = None) -> Tensor:
    return _kernels("perturb").perturb(x, sigma, seed, start, count, noise,
                                       example_index=example_index)


def accumulate(state: StreamingStats, chunk: Tensor) -> None:
    _kernels("accumulate").accumulate(state, chunk)


# Below cuda (30): JIT-compiled on first use; above torch (0) on the GPU.
TRITON = register(Backend(
    name="triton", perturb=perturb, accumulate=accumulate,
    device_types=("cuda", "cpu") if INTERPRETED else ("cuda",),
    auto_priority=20, why_unavailable=why_unavailable,
    auto_device_types=("cuda",),
    description="Triton kernels: tl.philox noise in one pass, one-read streaming statistics"))
