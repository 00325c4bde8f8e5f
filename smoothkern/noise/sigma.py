"""σ planning: the noise standard deviation of every level and example.

``noise_level`` is relative to each example's range (the SmoothGrad paper's
``sigma = level * (max x_b - min x_b)``); ``stdevs`` is absolute. A sequence of either is a sweep:
every level reuses the same standard draws (common random numbers), so level 0.1 inside a sweep
equals a run at 0.1 alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

# The SmoothGrad paper's default: σ = 15 % of each example's range.
DEFAULT_NOISE_LEVEL = 0.15


def _as_levels(value: float | Sequence[float] | Tensor, name: str) -> tuple[Tensor, bool]:
    """Turns a scalar, sequence or tensor of noise levels into float64 [S] or [S, B].

    Returns the tensor and whether the user asked for a sweep (a sequence / leading dim).
    """
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a number, a sequence of numbers or a Tensor, not bool")
    if isinstance(value, (int, float)):
        levels, sweep = torch.tensor([float(value)], dtype=torch.float64), False
    elif isinstance(value, Tensor):
        if not (value.is_floating_point() or value.dtype in (torch.int32, torch.int64)):
            raise TypeError(f"{name} must be a real tensor, got dtype {value.dtype}")
        levels, sweep = value.detach().to("cpu", torch.float64), None
    elif isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) == 0:
            raise ValueError(f"{name} is an empty sequence")
        try:
            levels = torch.tensor([float(v) for v in value], dtype=torch.float64)
        except (TypeError, ValueError):
            raise TypeError(f"{name} must contain numbers, got {value!r}") from None
        sweep = True
    else:
        raise TypeError(f"{name} must be a number, a sequence of numbers or a Tensor, "
                        f"got {type(value).__name__}")
    if not torch.isfinite(levels).all():
        raise ValueError(f"{name} must be finite, got {value!r}")
    if (levels < 0).any():
        raise ValueError(f"{name} must be non-negative, got {value!r}")
    return levels, sweep


def plan_sigma(x: Tensor, noise_level: float | Sequence[float] | None,
               stdevs: float | Sequence[float] | Tensor | None) -> tuple[Tensor, bool]:
    """Per-example noise standard deviations.

    ``noise_level`` is relative to each example's range (the SmoothGrad paper's
    ``sigma = level * (max x_b - min x_b)``); ``stdevs`` is absolute: a float, a Tensor[B] (one σ
    per example), a sequence (a sweep) or a Tensor[S, B].

    Args:
        x (Tensor[B, ...]): clean inputs.

    Returns:
        (sigma (Tensor[S, B] float32 on x's device), is_sweep)
    """
    batch = x.shape[0]
    if stdevs is not None and noise_level is not None:
        raise ValueError("give either noise_level (relative to each example's range) or stdevs "
                         "(absolute), not both")
    if stdevs is None:
        if noise_level is None:
            raise ValueError("one of noise_level or stdevs is needed")
        levels, sweep = _as_levels(noise_level, "noise_level")
        if levels.dim() != 1:
            raise ValueError(f"noise_level must be a number or a 1-d sequence, got shape "
                             f"{tuple(levels.shape)}")
        flat = x.detach().reshape(batch, -1).to(torch.float64)
        span = (flat.max(dim=1).values - flat.min(dim=1).values).cpu()
        sigma = levels.view(-1, 1) * span.view(1, -1)
        return sigma.to(x.device, torch.float32), bool(sweep)
    levels, sweep = _as_levels(stdevs, "stdevs")
    if sweep is None:  # a Tensor: [B] per example, [S, B] a sweep, 0-d a scalar
        if levels.dim() == 0:
            levels, sweep = levels.view(1, 1).expand(1, batch), False
        elif levels.dim() == 1:
            if levels.shape[0] != batch:
                raise ValueError(f"stdevs tensor must have one value per example ({batch}), "
                                 f"got shape {tuple(levels.shape)}")
            levels, sweep = levels.view(1, batch), False
        elif levels.dim() == 2 and levels.shape[1] == batch:
            sweep = True
        else:
            raise ValueError(f"stdevs tensor must be [B] or [S, B] with B={batch}, "
                             f"got shape {tuple(levels.shape)}")
        return levels.to(x.device, torch.float32), sweep
    sigma = levels.view(-1, 1).expand(-1, batch)
    return sigma.to(x.device, torch.float32).contiguous(), bool(sweep)
