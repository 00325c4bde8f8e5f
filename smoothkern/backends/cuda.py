"""The "cuda" backend: the CUDA kernels (``csrc/cuda``) behind the same ops as "cpp"."""

from __future__ import annotations

import torch

from .. import _ext, ops
from .registry import Backend, register


def why_unavailable() -> str | None:
    reason = _ext.why_no_cuda_ops()
    if reason is None and not torch.cuda.is_available():
        reason = "no CUDA device"
    return reason


# Preferred over Triton on the GPU: no JIT compile on first use (benchmarks/gpu.py times both).
CUDA = register(Backend(
    name="cuda", perturb=ops.perturb, accumulate=ops.accumulate, device_types=("cuda",),
    auto_priority=30, why_unavailable=why_unavailable,
    description="CUDA kernels: Philox noise with 16-byte stores, one-read streaming statistics"))
