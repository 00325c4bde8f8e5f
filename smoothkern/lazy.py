"""Names a package loads on first use (PEP 562), so that importing it stays light: the command
line's parser, for one, must not import torch-heavy modules to print ``--help``."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from typing import Any


def lazy_exports(package: str, namespace: dict[str, Any], exports: dict[str, str],
                 modules: Iterable[str] = ()) -> tuple[Callable[[str], Any],
                                                     Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of a package whose names load on first use.

    Args:
        package: the package's ``__name__``.
        namespace: its ``globals()`` (a loaded name is kept there).
        exports: ``{name: submodule}``: where each name lives.
        modules: submodules reachable as attributes themselves.
    """
    modules = tuple(modules)

    def getattr_(name: str) -> Any:
        if name in modules:
            return importlib.import_module(f".{name}", package)
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{exports[name]}", package), name)
        namespace[name] = value
        return value

    def dir_() -> list[str]:
        return sorted(set(namespace) | set(exports) | set(modules))

    return getattr_, dir_
