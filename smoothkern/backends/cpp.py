"""The "cpp" backend: the C++ CPU ops (``csrc/cpu``), fused perturb and one-read accumulate."""

from __future__ import annotations

from .. import _ext, ops
from .registry import Backend, register

# Above torch (0) and the Triton interpreter, which auto never picks on the CPU.
CPP = register(Backend(
    name="cpp", perturb=ops.perturb, accumulate=ops.accumulate, device_types=("cpu",),
    auto_priority=10, why_unavailable=_ext.why_no_ops,
    description="C++ CPU kernels: Philox noise in one pass, one-read streaming statistics"))
