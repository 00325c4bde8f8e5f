"""The machine a benchmark ran on."""

from __future__ import annotations

import os
import platform
from typing import Any

import torch


def machine_info() -> dict[str, Any]:
    """The machine a benchmark ran on: CPU model, cores, threads, GPU, library versions."""
    from .. import __version__

    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {"cpu": cpu or platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "threads": torch.get_num_threads(), "gpu": gpu, "torch": torch.__version__,
            "python": platform.python_version(), "smoothkern": __version__,
            "captum": captum_version(), "platform": platform.platform()}


def machine_line(info: dict[str, Any] | None = None) -> str:
    """One line naming the CPU (and GPU if any), cores, threads and versions."""
    info = info or machine_info()
    gpu = f", GPU {info['gpu']}" if info.get("gpu") else ""
    return (f"{info['cpu']}, {info['cores']} cores, {info['threads']} threads{gpu}, "
            f"torch {info['torch']}, Python {info['python']}")


def captum_version() -> str | None:
    """Captum's version, or None when it is not installed."""
    try:
        import captum
    except ImportError:
        return None
    return getattr(captum, "__version__", "unknown")
