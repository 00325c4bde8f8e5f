"""What one step of a deletion or insertion curve removes, and what replaces it: the units
(pixels, patches or elements) ranked by their attribution, the number removed after each step,
and the baseline values (black, white, mean, blur, a number or a tensor)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

BASELINES = ("black", "white", "mean", "blur")
# Blur baseline: Gaussian σ as a fraction of the larger image side (RISE blurs 224² images with
# σ = 5 px, about 2.5 %); never below one pixel.
BLUR_SIGMA_FRACTION = 0.025


def removal_units(attributions: Tensor, inputs: Tensor, patch: int | tuple[int, int]
           ) -> tuple[Tensor, Tensor]:
    """Groups attribution elements into the units removed together and scores each unit.

    Returns:
        scores (Tensor[B, U]) the summed attribution per unit; unit (LongTensor[*a]) the unit of
        each element of one example's attribution (a: its shape without the batch dimension).
    """
    if not isinstance(attributions, Tensor) or not attributions.is_floating_point():
        raise TypeError("attributions must be a floating-point Tensor")
    a = attributions.detach().to(inputs.device)
    if inputs.dim() == 4 and a.dim() == 3:
        a = a[:, None]
    per_pixel = inputs.dim() == 4 and a.dim() == 4 and a.shape[1] == 1
    if a.shape != inputs.shape and not (per_pixel and a.shape[2:] == inputs.shape[2:]
                                        and a.shape[0] == inputs.shape[0]):
        raise ValueError(f"attributions must be shaped like the inputs {tuple(inputs.shape)} "
                         f"(or [B, 1, H, W] / [B, H, W] for images), got "
                         f"{tuple(attributions.shape)}")
    if torch.isnan(a).any():
        raise ValueError("attributions contain NaN")
    ph, pw = patch_size(patch)
    if (ph, pw) == (1, 1):
        unit = torch.arange(a[0].numel(), device=a.device).reshape(a.shape[1:])
        return a.flatten(1), unit
    if inputs.dim() != 4:
        raise ValueError(f"patch needs image inputs [B, C, H, W], got {tuple(inputs.shape)}")
    channels, height, width = a.shape[1:]
    if ph > height or pw > width:
        raise ValueError(f"patch {(ph, pw)} is larger than the image ({height}, {width})")
    rows, cols = math.ceil(height / ph), math.ceil(width / pw)
    cell_row = torch.arange(height, device=a.device) // ph
    cell_col = torch.arange(width, device=a.device) // pw
    cell = cell_row[:, None] * cols + cell_col[None, :]                          # [H, W]
    unit = torch.arange(channels, device=a.device)[:, None, None] * (rows * cols) + cell
    scores = torch.zeros(a.shape[0], channels * rows * cols, dtype=a.dtype, device=a.device)
    scores.index_add_(1, unit.flatten(), a.flatten(1))
    return scores, unit


def patch_size(patch: int | tuple[int, int]) -> tuple[int, int]:
    sizes = (patch, patch) if isinstance(patch, int) else tuple(patch)
    if len(sizes) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1
                              for s in sizes):
        raise ValueError(f"patch must be a positive int or (height, width), got {patch!r}")
    return sizes


def step_counts(n_units: int, features_per_step: int | None, steps: int | None) -> Tensor:
    """Units removed after 0, 1, ..., T steps: LongTensor[T + 1] from 0 to n_units."""
    if features_per_step is not None and steps is not None:
        raise ValueError("give features_per_step or steps, not both")
    if steps is None:
        per_step = 1 if features_per_step is None else features_per_step
        if isinstance(per_step, bool) or not isinstance(per_step, int) or per_step < 1:
            raise ValueError(f"features_per_step must be a positive int, got {per_step!r}")
        total = math.ceil(n_units / per_step)
        return (torch.arange(total + 1) * per_step).clamp(max=n_units)
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= n_units:
        raise ValueError(f"steps must be an int within 1..{n_units} (the number of features), "
                         f"got {steps!r}")
    return torch.arange(steps + 1) * n_units // steps


def baseline_values(baseline: str | float | Tensor, inputs: Tensor, blur_sigma: float | None
              ) -> Tensor:
    """The value each feature takes when removed: Tensor shaped like ``inputs``."""
    per_example = (inputs.shape[0],) + (1,) * (inputs.dim() - 1)
    if isinstance(baseline, str):
        if baseline == "black":
            value = inputs.flatten(1).min(1).values.view(per_example)
        elif baseline == "white":
            value = inputs.flatten(1).max(1).values.view(per_example)
        elif baseline == "mean":
            value = inputs.flatten(1).mean(1).view(per_example)
        elif baseline == "blur":
            value = blurred(inputs, blur_sigma)
        else:
            raise ValueError(f"baseline must be one of {BASELINES}, a float or a Tensor, got "
                             f"{baseline!r}")
        return value.expand_as(inputs)
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        value = torch.tensor(float(baseline), dtype=inputs.dtype, device=inputs.device)
    elif isinstance(baseline, Tensor):
        value = baseline.detach().to(device=inputs.device, dtype=inputs.dtype)
    else:
        raise TypeError(f"baseline must be a name, a float or a Tensor, got "
                        f"{type(baseline).__name__}")
    if not torch.isfinite(value).all():
        raise ValueError("baseline contains NaN or infinite values")
    try:
        return value.expand_as(inputs)
    except RuntimeError:
        raise ValueError(f"baseline of shape {tuple(value.shape)} does not broadcast to the "
                         f"inputs {tuple(inputs.shape)}") from None


def blurred(inputs: Tensor, sigma: float | None) -> Tensor:
    """Gaussian blur per channel with reflected borders. inputs (Tensor[B, C, H, W])."""
    if inputs.dim() != 4:
        raise ValueError(f"the 'blur' baseline needs images [B, C, H, W], got "
                         f"{tuple(inputs.shape)}")
    height, width = inputs.shape[2:]
    if sigma is None:
        sigma = max(1.0, BLUR_SIGMA_FRACTION * max(height, width))
    if not sigma > 0 or not math.isfinite(sigma):
        raise ValueError(f"blur_sigma must be positive, got {sigma}")
    radius = min(math.ceil(3 * sigma), height - 1, width - 1)
    offsets = torch.arange(-radius, radius + 1, dtype=inputs.dtype, device=inputs.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = inputs.shape[1]
    x = F.pad(inputs, (radius, radius, radius, radius), mode="reflect") if radius else inputs
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(x, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)
