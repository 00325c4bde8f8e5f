"""Attribution maps → 2-D heatmaps, drawn the way the SmoothGrad authors draw them.

``abs``: |a| summed over channels, scaled from its minimum (0) to its 99th percentile (1), clipped.
``signed``: a summed over channels, divided by the 99th percentile of its magnitude, in [-1, 1].
"""

from __future__ import annotations

import torch
from torch import Tensor

PERCENTILE = 99.0
_TINY = 1e-30


def _per_image_quantile(values: Tensor, percentile: float) -> Tensor:
    """values (Tensor[B, H, W]) → Tensor[B, 1, 1], the percentile of each image."""
    flat = values.flatten(1).double()
    return torch.quantile(flat, percentile / 100.0, dim=1).to(values.dtype)[:, None, None]


def heatmap(attributions: Tensor, signed: bool = False, percentile: float = PERCENTILE) -> Tensor:
    """One heatmap per attribution map.

    Args:
        attributions (Tensor[B, C, H, W] or Tensor[C, H, W]): attribution maps.
        signed: keep the sign (diverging map in [-1, 1]) instead of the magnitude ([0, 1]).
        percentile: values at or beyond this percentile of |map| saturate.

    Returns:
        Tensor[B, H, W] (or Tensor[H, W]) in [0, 1], or in [-1, 1] when ``signed``.
    """
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be within (0, 100], got {percentile}")
    single = attributions.dim() == 3
    a = (attributions[None] if single else attributions).detach().float().cpu()
    if a.dim() != 4:
        raise ValueError(f"expected [B, C, H, W] or [C, H, W], got {tuple(attributions.shape)}")
    if signed:
        summed = a.sum(1)
        span = _per_image_quantile(summed.abs(), percentile)
        # A flat map (e.g. a zero gradient) stays 0 instead of dividing by 0.
        out = (summed / span.clamp_min(_TINY)).clamp(-1.0, 1.0)
    else:
        summed = a.abs().sum(1)
        low = summed.flatten(1).min(1).values[:, None, None]
        span = _per_image_quantile(summed, percentile) - low
        out = ((summed - low) / span.clamp_min(_TINY)).clamp(0.0, 1.0)
    return out[0] if single else out
