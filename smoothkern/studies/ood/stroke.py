"""Does the model still look at the stroke? The share of a SmoothGrad map's magnitude that lies
on the digit's stroke, per shift, against the share of the image the stroke covers (what a map
spread evenly over the image would get).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from ...api import smooth_grad
from ..shifts import rotate, rr

STROKE_LEVEL = 0.5  # a pixel belongs to the stroke at half the full brightness or more
# Shifts that move the stroke: it is where the same shift puts the clean digit.
_MOVING = {"rotated": rotate, "random_resized_crop": rr}


def stroke_masks(clean: Tensor, shift: str, seed: int, example_index: Tensor) -> Tensor:
    """Where the stroke lies after ``shift``: Tensor[K, H, W] of bools.

    Args:
        clean (Tensor[K, 1, H, W]): the unshifted digits.
        shift, seed, example_index: the shift as the test set applies it.
    """
    moved = _MOVING[shift](clean, seed, example_index) if shift in _MOVING else clean
    return moved[:, 0] >= STROKE_LEVEL


def stroke_share(maps: Tensor, masks: Tensor) -> Tensor:
    """The fraction of each map's magnitude on the stroke: Tensor[K].

    Args:
        maps (Tensor[K, C, H, W]): attributions (|a| summed over channels).
        masks (Tensor[K, H, W]): the strokes.
    """
    magnitude = maps.abs().sum(1)
    return (magnitude * masks).flatten(1).sum(1) / magnitude.flatten(1).sum(1).clamp_min(1e-30)


def stroke_share_table(models: Mapping[str, nn.Module], clean: Tensor,
                       tests: Mapping[str, tuple[Tensor, Tensor]], *, examples: int = 100,
                       shift_seed: int = 0, n_samples: int = 20, noise_level: float = 0.15,
                       seed: int = 0) -> dict[tuple[str, str], float]:
    """Mean stroke share of SmoothGrad maps (true class) over the first ``examples`` test
    digits, for every model and shift; key ("stroke area", shift) holds the mean fraction of
    pixels on the stroke.

    Args:
        models: name → model. clean (Tensor[M, 1, H, W]): the clean test digits.
        tests: shift → (images Tensor[M', 3, H, W], labels); their first images must be the
            same digits as ``clean``'s.
        examples, shift_seed, n_samples, noise_level, seed: which digits, how they were
            shifted, SmoothGrad's settings.

    Returns:
        (model name or "stroke area", shift) → a fraction in [0, 1].
    """
    if examples < 1:
        raise ValueError(f"examples must be >= 1, got {examples}")
    count = min(examples, len(clean), *(len(y) for _, y in tests.values()))
    index = torch.arange(count)
    table: dict[tuple[str, str], float] = {}
    for shift, (x, y) in tests.items():
        masks = stroke_masks(clean[:count], shift, shift_seed, index)
        table[("stroke area", shift)] = float(masks.float().mean())
        for name, model in models.items():
            maps = smooth_grad(model, x[:count], y[:count], n_samples=n_samples,
                               noise_level=noise_level, seed=seed)
            table[(name, shift)] = float(stroke_share(maps, masks).mean())
    return table
