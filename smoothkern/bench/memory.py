"""Peak memory: the resident set size a call adds (Linux ``VmHWM``, in a fresh subprocess per
variant), or torch's peak allocated bytes on a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .variants import make_call


def status_mib(field: str) -> float:
    """A ``/proc/self/status`` size in MiB (Linux). VmHWM (peak RSS) belongs to this process's
    own address space; ``ru_maxrss`` would also carry the parent's peak across fork + exec."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise OSError(f"no {field} in /proc/self/status")


def reset_peak_rss() -> None:
    """Sets VmHWM to the current RSS (Linux >= 4.0), so the next peak is the caller's own."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def rss_measurable() -> bool:
    """Whether this process can read and reset its peak RSS (Linux /proc)."""
    try:
        status_mib("VmHWM")
        reset_peak_rss()
    except OSError:
        return False
    return True


def warm_model(model: nn.Module, x: Tensor) -> None:
    """One forward and backward of one row: torch's one-time buffers (thread pool, oneDNN
    primitives) are then allocated before a memory baseline is taken."""
    one = x[:1].detach().clone().requires_grad_(True)
    out = model(one)
    out = out if isinstance(out, Tensor) else next(iter(out.values() if isinstance(out, dict)
                                                        else out))
    torch.autograd.grad(out.float().sum(), one)


def peak_rss_of_call(call: Callable[[], object],
                     warm: Callable[[], object] | None = None) -> dict[str, float]:
    """Peak RSS (MiB) that ``call`` adds over the resident size just before it.

    Meant for the first call in a fresh process (freed memory a process keeps would hide a
    later call's allocations); ``warm`` runs first, outside the measurement.
    """
    if warm is not None:
        warm()
    before = status_mib("VmRSS")
    reset_peak_rss()
    call()
    return {"peak_mib": max(0.0, status_mib("VmHWM") - before)}


def peak_cuda_of_call(call: Callable[[], object], device: torch.device) -> dict[str, float]:
    """Peak bytes (MiB) torch's CUDA allocator handed out during ``call``, over those before."""
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    call()
    torch.cuda.synchronize(device)
    return {"peak_mib": max(0, torch.cuda.max_memory_allocated(device) - before) / 2**20}


def run_child(cmd: Sequence[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Runs a measuring subprocess that prints one JSON object on its last stdout line.

    Returns that object, or ``{"error": the last stderr line}``.
    """
    done = subprocess.run(list(cmd), capture_output=True, text=True, check=False, env=env)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        err = done.stderr.strip().splitlines()
        return {"error": err[-1] if err else f"exit status {done.returncode}"}
    try:
        return json.loads(lines[-1])
    except json.JSONDecodeError:
        return {"error": f"unreadable child output: {lines[-1][:80]}"}


def subprocess_peaks(rows, names, model, inputs, target, cfg, model_name, weights, say):
    """Each variant's first call in a fresh interpreter (``python -m smoothkern.bench``)."""
    with tempfile.TemporaryDirectory(prefix="smoothkern-bench-") as folder:
        payload = Path(folder) / "payload.pt"
        data = {"model": None if model_name else model, "model_name": model_name,
                "weights": None if weights is None else str(weights), "inputs": inputs.cpu(),
                "target": target.cpu(), "cfg": cfg}
        try:
            torch.save(data, payload)
        except Exception as err:  # noqa: BLE001 - e.g. a model that cannot be pickled
            for name in names:
                rows[name].memory = f"not taken: the model cannot be saved ({err})"[:120]
            return
        env = dict(os.environ)
        # The child must find what the parent imports (a model class in the caller's modules).
        env["PYTHONPATH"] = os.pathsep.join([p for p in sys.path if p] +
                                            [env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        for name in names:
            say(f"memory: {rows[name].label} in a fresh process")
            got = run_child([sys.executable, "-m", "smoothkern.bench", "--child", str(payload),
                             name], env)
            if "peak_mib" in got:
                rows[name].peak_mib, rows[name].memory = got["peak_mib"], "subprocess VmHWM"
            else:
                rows[name].memory = f"not taken: {got.get('error', '?')}"[:160]


def child(payload: str, variant: str) -> None:
    """The memory subprocess: rebuild the inputs, warm the model, measure one call."""
    import warnings

    warnings.simplefilter("ignore")
    data = torch.load(payload, weights_only=False)
    model = data["model"]
    if model is None:
        from ..models import load_named_model

        model = load_named_model(data["model_name"], data["weights"])[0]
    x, target = data["inputs"], data["target"]
    call = make_call(variant, model, x, target, data["cfg"])
    print(json.dumps(peak_rss_of_call(call, warm=lambda: warm_model(model, x))))
