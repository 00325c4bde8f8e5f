"""What every shift shares: argument checks, the per-image generators keyed by (seed, shift,
example index), and gray ↔ RGB."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import Tensor

ExampleIndex = int | Sequence[int] | Tensor | None

# Keeps the per-image draws of different shifts independent at the same seed.
SALTS = {"coloured": 1, "weighted_grayscale": 2, "rotate": 3, "motion_blur": 4, "fog": 5,
         "zigzag": 6, "gen_weighted_grayscale": 7, "rr": 8}


def check_images(x: Tensor, name: str, channels: tuple[int, ...] = (1, 3)) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: images must be a Tensor, got {type(x).__name__}")
    if x.dim() != 4 or x.shape[1] not in channels:
        allowed = " or ".join(str(c) for c in channels)
        raise ValueError(f"{name}: expected images [B, {allowed}, H, W], got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name}: expected floating-point pixels in [0, 1], got {x.dtype}")


def _indices(example_index: ExampleIndex, batch: int) -> list[int]:
    if example_index is None:
        return list(range(batch))
    if isinstance(example_index, int) and not isinstance(example_index, bool):
        if example_index < 0:
            raise ValueError(f"example_index must be >= 0, got {example_index}")
        return list(range(example_index, example_index + batch))
    if isinstance(example_index, Tensor):
        if example_index.is_floating_point() or example_index.dim() != 1:
            raise ValueError("example_index must be an int or a 1-D integer tensor, got "
                             f"{example_index.dtype} {tuple(example_index.shape)}")
        index = example_index.tolist()
    else:
        index = [int(i) for i in example_index]
    if len(index) != batch:
        raise ValueError(f"example_index has {len(index)} entries for {batch} images")
    if index and min(index) < 0:
        raise ValueError(f"example_index must be >= 0, got {min(index)}")
    return index


def generators(seed: int, shift: str, example_index: ExampleIndex,
                batch: int) -> list[np.random.Generator]:
    """One numpy generator per image, keyed by (seed, shift, example index)."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    salt = SALTS[shift]
    return [np.random.default_rng([int(seed), salt, i]) for i in _indices(example_index, batch)]


def to_rgb(x: Tensor) -> Tensor:
    """Gray images (Tensor[B, 1, H, W]) → Tensor[B, 3, H, W], the gray value in every channel;
    RGB images come back as a copy."""
    check_images(x, "to_rgb")
    return x.expand(-1, 3, -1, -1).clone() if x.shape[1] == 1 else x.clone()


def gray(x: Tensor) -> Tensor:
    """[B, C, H, W] → [B, 1, H, W]: the image itself, or the mean of a 3-channel image."""
    return x if x.shape[1] == 1 else x.mean(1, keepdim=True)
