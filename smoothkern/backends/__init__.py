"""Backends: the registry plus one module per kernel set (perturb/accumulate implementation).

Importing this package registers every kernel set; those whose extension or Triton is missing
register anyway and report why they are unavailable (``smoothkern.backend_status()``).
"""

from __future__ import annotations

from . import cpp, cuda, torch_ref, triton  # noqa: F401  (each registers its kernel set)
from .registry import Backend, Choice, available, choose, names, register, resolve, status

__all__ = ["Backend", "Choice", "available", "choose", "names", "register", "resolve", "status"]
