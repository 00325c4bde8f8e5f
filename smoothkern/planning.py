"""How many noise samples go into one forward/backward pass (``samples_per_pass=None``).

The cost of a pass is dominated by the activations autograd saves, so we measure them on the
clean forward and fill a memory budget (half the free memory on a GPU). On a CPU two more
limits apply: past a few dozen rows a larger batch no longer runs faster and falls out of cache,
and below that the time per row is flat down to about a dozen rows, so a small job is split into
several passes: the same time, a fraction of the peak memory.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from .methods import AttributionMethod

# Share of free GPU memory one pass may fill with saved activations.
GPU_MEMORY_FRACTION = 0.5
# Model rows per pass on a CPU. Measured on 2 cores (AMD EPYC), m·B = 400 rows, input gradients,
# interleaved medians: ResNet18/CIFAR took 5.2 s at 48 rows per pass, 5.5 s at 24, 5.9 s at 80,
# 6.9 s at 136 and 8.1 s at 200; the MNIST CNN was flat from 24 to 200 rows (0.23-0.26 s) but
# took 0.57 s in one pass of 400 rows against 0.30 s at 80. A byte budget alone (256 MiB) sent
# the MNIST CNN to 400 rows, so the cache limit is a row count. SMOOTHKERN_CPU_ROWS overrides.
CPU_ROWS = 48
# Saved activations per pass on a CPU: a memory bound for models with very large rows.
CPU_MEMORY_BUDGET = 2 * 1024**3
# A CPU job is split into at least this many passes while they keep CPU_MIN_ROWS model rows:
# peak memory follows the pass, and the time per row is flat from about 12 rows up. Measured on
# 2 cores, one example, m = 50 (interleaved medians of whole calls): ResNet18/CIFAR 0.69 s at 13
# rows per pass, 0.65 s at 17, 0.67 s at 25 (Captum's single 50-row pass: 0.69 s); the MNIST CNN
# 53, 51 and 49 ms (Captum: 50 ms), differences within the machine's ±5 % noise; peak memory
# falls from about 200 to 100 MiB (ResNet18). At 10 rows ResNet18 was 8 % slower (0.80 s).
CPU_MIN_PASSES = 4
CPU_MIN_ROWS = 12


def forward_measuring_saved_bytes(model: nn.Module, x: Tensor) -> tuple[Tensor, int]:
    """The model's output for ``x`` and the bytes autograd saves per row for it.

    One forward serves both the clean logits the engine needs anyway and the memory probe.

    Args:
        x (Tensor[B, ...]): clean inputs.

    Returns:
        (logits detached, saved bytes per row)
    """
    # Count each storage once (a conv's output saved by the next BatchNorm and ReLU is one
    # buffer) and leave out parameters: they do not grow with the batch.
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x.detach().requires_grad_(True))
    per_row = sum(seen.values()) // x.shape[0]
    return out.detach(), max(per_row, x[0].numel() * x.element_size())


def rows_in_budget(row_bytes: int, device: torch.device) -> int:
    """Model rows one pass may hold: the memory budget, and on a CPU the cache limit CPU_ROWS.

    Args:
        row_bytes: activations autograd saves per model row.
    """
    rows = memory_budget(device) // max(1, row_bytes)
    if device.type == "cpu":
        rows = min(rows, int(os.environ.get("SMOOTHKERN_CPU_ROWS", CPU_ROWS)))
    return max(1, rows)


def memory_budget(device: torch.device) -> int:
    """Bytes of saved activations one pass may use (``SMOOTHKERN_MEMORY_BUDGET`` overrides)."""
    override = os.environ.get("SMOOTHKERN_MEMORY_BUDGET")
    if override:
        return int(float(override))
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * GPU_MEMORY_FRACTION)
    return CPU_MEMORY_BUDGET


def choose_samples_per_pass(method: AttributionMethod, x: Tensor, row_bytes: int,
                            levels: int, n_samples: int) -> int:
    """Sample indices per pass: fills the memory budget; on a CPU, also splits a small job.

    Chunks are balanced so the last pass is not a sliver: 50 samples at a limit of 48 become
    two passes of 25, not 48 + 2. On a CPU a job of fewer than ``CPU_MIN_PASSES`` full passes is
    split into up to that many, none below ``CPU_MIN_ROWS`` rows (50 rows: four passes of 13).

    Args:
        x (Tensor[B, ...]): the clean inputs.
        row_bytes: activations autograd saves per model row (``forward_measuring_saved_bytes``).
        levels: noise levels S in the sweep.
    """
    model_rows_per_sample = levels * x.shape[0] * max(1, method.rows_per_sample)
    rows = rows_in_budget(row_bytes, x.device)
    if x.device.type == "cpu":
        job_rows = n_samples * model_rows_per_sample
        rows = min(rows, max(CPU_MIN_ROWS, math.ceil(job_rows / CPU_MIN_PASSES)))
    per_pass = max(1, min(n_samples, rows // model_rows_per_sample))
    passes = math.ceil(n_samples / per_pass)
    return math.ceil(n_samples / passes)
