"""Loads the compiled ops (``smoothkern._C``, ``smoothkern._C_cuda``) when they were built.

Never fails at import: a missing or broken extension only makes the cpp/cuda backends report
why they are unavailable. ``SMOOTHKERN_SKIP_EXT=1`` also skips loading a built extension. The
ops' fake kernels (for ``torch.compile``) are registered beside each op's wrapper
(:mod:`smoothkern.ops.perturb`, :mod:`smoothkern.ops.accumulate`) once the schemas are loaded.
"""

from __future__ import annotations

import importlib
import os

import torch  # noqa: F401  (loads libc10/libtorch, which the extension links against)

_SKIP_VALUES = ("1", "true", "yes", "on")


def _load(module: str) -> str | None:
    """Imports ``smoothkern.<module>``; returns None on success, else the reason it failed."""
    if os.environ.get("SMOOTHKERN_SKIP_EXT", "0").lower() in _SKIP_VALUES:
        return "extension not built (SMOOTHKERN_SKIP_EXT=1)"
    try:
        importlib.import_module(f"smoothkern.{module}")
    except ImportError as err:
        if isinstance(err, ModuleNotFoundError) and err.name == f"smoothkern.{module}":
            return ("extension not built (install with a C++ compiler: "
                    "pip install -e . --no-build-isolation)")
        return f"extension failed to load: {err}"
    except OSError as err:  # a shared library it links against is missing
        return f"extension failed to load: {err}"
    return None


_CPU_REASON = _load("_C")
_CUDA_REASON = _CPU_REASON if _CPU_REASON is not None else _load("_C_cuda")
if _CUDA_REASON is not None and _CPU_REASON is None and "not built" in _CUDA_REASON:
    _CUDA_REASON = ("CUDA op not built (needs a CUDA build of torch and nvcc at install time; "
                    "see docs/kernels.md)")


def has_ops() -> bool:
    """Whether the C++ ops (schemas and CPU kernels) are loaded."""
    return _CPU_REASON is None


def has_cuda_ops() -> bool:
    """Whether the CUDA kernels of the ops are loaded."""
    return _CUDA_REASON is None


def why_no_ops() -> str | None:
    return _CPU_REASON


def why_no_cuda_ops() -> str | None:
    return _CUDA_REASON
