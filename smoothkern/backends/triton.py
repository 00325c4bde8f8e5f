"""The "triton" backend: Triton kernels (``smoothkern/kernels``), on the GPU or, under
``TRITON_INTERPRET=1``, on the CPU (slow, for tests; "auto" never picks it there)."""

from __future__ import annotations

import importlib.util
import os

import torch
from torch import Tensor

from ..stats import StreamingStats
from .registry import Backend, register

INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"


def _import_error() -> str | None:
    if importlib.util.find_spec("triton") is None:
        return "triton not importable (pip install triton)"
    try:
        from ..kernels import accumulate, perturb  # noqa: F401
    except Exception as err:  # noqa: BLE001 - a broken triton install must not break import
        return f"triton not importable ({type(err).__name__}: {err})"
    return None


_IMPORT_ERROR = _import_error()


def why_unavailable() -> str | None:
    if _IMPORT_ERROR is not None:
        return _IMPORT_ERROR
    if not INTERPRETED and not torch.cuda.is_available():
        return "no CUDA device (set TRITON_INTERPRET=1 to run the kernels on the CPU)"
    return None


def perturb(x: Tensor, sigma: Tensor, seed: int, start: int, count: int,
            noise: str = "gaussian") -> Tensor:
    from ..kernels.perturb import perturb as kernel

    return kernel(x, sigma, seed, start, count, noise)


def accumulate(state: StreamingStats, chunk: Tensor) -> None:
    from ..kernels.accumulate import accumulate as kernel

    kernel(state, chunk)


# Below cuda (30): JIT-compiled on first use; above torch (0) on the GPU.
TRITON = register(Backend(
    name="triton", perturb=perturb, accumulate=accumulate,
    device_types=("cuda", "cpu") if INTERPRETED else ("cuda",),
    pass_mode="batched", auto_priority=20, why_unavailable=why_unavailable,
    auto_device_types=("cuda",),
    description="Triton kernels: tl.philox noise in one pass, one-read streaming statistics"))
