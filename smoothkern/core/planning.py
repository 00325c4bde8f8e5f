"""How many noise samples go into one forward/backward pass (``samples_per_pass=None``).

The cost of a pass is dominated by the activations autograd saves, so we measure them on the
clean forward and fill a memory budget (half the free memory on a GPU). On a CPU two more
limits apply: past a few dozen rows a larger batch no longer runs faster and falls out of cache,
and below that the time per row is flat down to about a dozen rows, so a small job is split into
several passes: the same time, a fraction of the peak memory.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from .memory import graph_pool_bytes

# Why each constant has its value: benchmarks/RESULTS.md, section "Planning constants".
# Half of free GPU memory: the rest is headroom for the backward's temporaries (not measured).
GPU_MEMORY_FRACTION = 0.5
# CPU rows per pass: larger batches fall out of cache and run slower (SMOOTHKERN_CPU_ROWS).
CPU_ROWS = 48
# Saved activations per CPU pass: binds only for large rows (ImageNet-sized inputs).
CPU_MEMORY_BUDGET = 192 * 1024**2
# Small CPU jobs run in this many passes: the same time as one pass, a fraction of its memory.
CPU_MIN_PASSES = 4
# ...of at least this many rows each: below it the time per row grows.
CPU_MIN_ROWS = 12
# ...and of at least this many saved bytes each: below it a pass's fixed work outweighs the
# memory the split saves (16 MiB until ResNet18/CIFAR at B = 1 ran 14-17 % faster in one pass
# of 50 than in four of 13, fp32 and bf16; benchmarks/RESULTS.md).
CPU_MIN_PASS_BYTES = 64 * 1024**2


def forward_measuring_saved_bytes(model: nn.Module, x: Tensor) -> tuple[Tensor, int]:
    """The model's output for ``x`` and the bytes autograd saves per row for it.

    One forward serves both the clean logits the engine needs anyway and the memory probe.

    Args:
        x (Tensor[B, ...]): clean inputs.

    Returns:
        (logits detached, saved bytes per row)
    """
    with counting_saved_bytes(model) as saved, torch.enable_grad():
        out = model(x.detach().requires_grad_(True))
    per_row = saved() // x.shape[0]
    out = out.detach() if isinstance(out, Tensor) else out  # the caller checks the type
    return out, max(per_row, x[0].numel() * x.element_size())


@contextlib.contextmanager
def counting_saved_bytes(model: nn.Module) -> Iterator[Callable[[], int]]:
    """Counts the bytes autograd saves for backward while inside; yields a function giving the
    total so far. Each storage counts once (a conv's output saved by the next BatchNorm and
    ReLU is one buffer) and the model's parameters not at all: they do not grow with the
    batch."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield lambda: sum(seen.values())


def rows_in_budget(row_bytes: int, device: torch.device, memory_limit: int | None = None,
                   row_scale: float = 1.0) -> int:
    """Model rows one pass may hold: the memory budget, and on a CPU the cache limit CPU_ROWS.

    ``SMOOTHKERN_CPU_ROWS`` overrides CPU_ROWS.

    Args:
        row_bytes: activations autograd saves per model row.
        memory_limit: the caller's cap on saved bytes per pass (below the budget wins).
        row_scale: how many times smaller a row is than in float32 (bf16 passes: about 2):
            CPU_ROWS is a cache limit measured in float32 rows, so it grows by this factor.
    """
    budget = memory_budget(device)
    if memory_limit is not None:
        budget = min(budget, memory_limit)
    rows = budget // max(1, row_bytes)
    if device.type == "cpu":
        rows = min(rows, int(_environment_number("SMOOTHKERN_CPU_ROWS", CPU_ROWS) * row_scale))
    return max(1, rows)


def memory_budget(device: torch.device) -> int:
    """Bytes of saved activations one pass may use (``SMOOTHKERN_MEMORY_BUDGET`` overrides)."""
    override = _environment_number("SMOOTHKERN_MEMORY_BUDGET", None)
    if override is not None:
        return override
    if device.type == "cuda":
        return int(gpu_free_bytes(device) * GPU_MEMORY_FRACTION)
    return CPU_MEMORY_BUDGET


def gpu_free_bytes(device: torch.device) -> int:
    """Free bytes on a GPU, counting the blocks PyTorch's allocator holds cached but unused
    (the driver reports them as taken, yet the next pass can use them), except those of kept
    CUDA graphs' private pools."""
    free, _ = torch.cuda.mem_get_info(device)
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    # kept CUDA graphs' pools are reserved but not free for a pass
    return free + max(0, cached - graph_pool_bytes(device))


def choose_samples_per_pass(rows_per_sample: int, x: Tensor, row_bytes: int,
                            levels: int, n_samples: int, memory_limit: int | None = None,
                            row_scale: float = 1.0) -> int:
    """Sample indices per pass: fills the memory budget; on a CPU, also splits a small job.

    Chunks are balanced so the last pass is not a sliver: 50 samples at a limit of 48 become
    two passes of 25, not 48 + 2. On a CPU a job of fewer than ``CPU_MIN_PASSES`` full passes is
    split into up to that many, none below ``CPU_MIN_ROWS`` rows nor ``CPU_MIN_PASS_BYTES``
    saved bytes (50 rows of 8 MiB: four passes of 13; of 4 MiB: three of 17).

    Args:
        x (Tensor[B, ...]): the clean inputs.
        row_bytes: activations autograd saves per model row (``forward_measuring_saved_bytes``).
        levels: noise levels S in the sweep.
        memory_limit: the caller's cap on saved bytes per pass (``smooth_grad(memory_limit=)``).
        row_scale: float32 bytes per row over ``row_bytes`` (reduced precision; see
            :func:`rows_in_budget`).
    """
    model_rows_per_sample = levels * x.shape[0] * max(1, rows_per_sample)
    rows = rows_in_budget(row_bytes, x.device, memory_limit, row_scale)
    if x.device.type == "cpu":
        job_rows = n_samples * model_rows_per_sample
        split = max(1, min(CPU_MIN_PASSES, job_rows * row_bytes // CPU_MIN_PASS_BYTES))
        rows = min(rows, max(CPU_MIN_ROWS, math.ceil(job_rows / split)))
    per_pass = max(1, min(n_samples, rows // model_rows_per_sample))
    passes = math.ceil(n_samples / per_pass)
    return math.ceil(n_samples / passes)


def _environment_number(name: str, default: int | None) -> int | None:
    """A positive whole number from the environment variable ``name`` (``1e9`` allowed), or
    ``default`` when it is unset or empty.

    Raises:
        ValueError: the variable is set to something else.
    """
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 1 and value == int(value)):
        raise ValueError(f"{name} must be a positive whole number, got {text!r}")
    return int(value)

