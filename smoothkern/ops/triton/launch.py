"""Launch arithmetic shared by the Triton kernels: grids within CUDA's limits, the device to
launch on, and the interpreter switch. Pure Python (no triton import), so it is tested at the
limits without a GPU."""

from __future__ import annotations

import contextlib
import os

import torch
from torch import Tensor

# CUDA grid limits (compute capability >= 3.0): x up to 2**31 - 1 blocks, y and z up to 65535.
MAX_GRID_X = 2**31 - 1
MAX_GRID_Y = 65535


def interpreted() -> bool:
    """Whether triton runs under its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def perturb_grid(rows: int, n: int, block: int) -> tuple[int, int]:
    """Grid of the perturb kernel: element blocks on x, (sample, example) rows on y.

    Rows past 65535 are covered by a strided loop in the kernel (row += grid y), so any count
    of rows launches; element blocks sit on x, whose limit (2**31 - 1) n <= 2**32 cannot reach
    with blocks of at least 2 elements.

    Args:
        rows: count * B, the (sample, example) rows to draw.
        n: elements per example.
        block: elements per program.

    Returns:
        (programs along x, programs along y).
    """
    if rows < 1 or n < 1 or block < 1:
        raise ValueError(f"rows, n and block must be positive, got {rows}, {n}, {block}")
    blocks = cdiv(n, block)
    if blocks > MAX_GRID_X:
        raise ValueError(f"{blocks} element blocks exceed the grid's x limit {MAX_GRID_X}")
    return blocks, min(rows, MAX_GRID_Y)


def accumulate_grid(n: int, block: int) -> tuple[int]:
    """Grid of the accumulate kernel: one program per block of elements, on x."""
    if n < 1 or block < 1:
        raise ValueError(f"n and block must be positive, got {n}, {block}")
    blocks = cdiv(n, block)
    if blocks > MAX_GRID_X:
        raise ValueError(f"{blocks} element blocks exceed the grid's x limit {MAX_GRID_X}")
    return (blocks,)


def on_device_of(tensor: Tensor) -> contextlib.AbstractContextManager:
    """Makes the tensor's GPU the current device while a kernel launches on it.

    Triton launches on the current device: without this, tensors on ``cuda:1`` while ``cuda:0``
    is current would be read through the wrong device's context (an illegal address).
    """
    if tensor.device.type == "cuda":
        return torch.cuda.device(tensor.device)
    return contextlib.nullcontext()
