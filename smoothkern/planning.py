"""How many noise samples go into one forward/backward pass (``samples_per_pass=None``).

The cost of a pass is dominated by the activations autograd saves, so we measure them once with
a one-row probe and fill a memory budget. On CPUs a second limit applies: past a few dozen rows,
a larger batch no longer runs faster and falls out of cache (2 cores: ResNet18/CIFAR took
5.5 s at 16–40 rows per pass vs 7.1 s at 200 and 8.6 s at 400 for m·B = 400 rows).
"""

from __future__ import annotations

import math
import os

import torch
from torch import Tensor, nn

from .methods import AttributionMethod

# Rows per pass on the CPU: the measured sweet spot above (16–80 rows best for the MNIST CNN and
# ResNet18/CIFAR on 2 cores; 200+ rows slower). Override with SMOOTHKERN_CPU_ROWS.
CPU_ROWS = 48
# Share of free GPU memory one pass may fill with saved activations.
GPU_MEMORY_FRACTION = 0.5
CPU_MEMORY_BUDGET = 2 * 1024**3


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
    """Sample indices per pass: fills the memory budget (and, on CPU, the cache sweet spot).

    Chunks are balanced so the last pass is not a sliver: 50 samples at a limit of 48 become
    two passes of 25, not 48 + 2.

    Args:
        x (Tensor[B, ...]): the clean inputs.
        row_bytes: activations autograd saves per model row (``forward_measuring_saved_bytes``).
        levels: noise levels S in the sweep.
    """
    rows_per_sample = levels * x.shape[0] * max(1, method.rows_per_sample)
    max_rows = memory_budget(x.device) // (row_bytes * max(1, method.rows_per_sample))
    if x.device.type == "cpu":
        max_rows = min(max_rows, int(os.environ.get("SMOOTHKERN_CPU_ROWS", CPU_ROWS)))
    per_pass = max(1, min(n_samples, max_rows // rows_per_sample))
    passes = math.ceil(n_samples / per_pass)
    return math.ceil(n_samples / passes)
