"""Backends: the registry plus one module per implementation of ``perturb``/``accumulate``.

Importing this package registers every backend; kernel backends whose extension or Triton is
missing register anyway and report why they are unavailable (``smoothkern.backends_status()``).
"""

from __future__ import annotations

from . import cpp, cuda, torch_ref, triton  # noqa: F401  (each registers its backends)
from .registry import Backend, available, names, register, resolve, status

__all__ = ["Backend", "available", "names", "register", "resolve", "status"]
