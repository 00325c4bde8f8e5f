"""How alike two attribution maps are, per example: rank correlation, SSIM, top-k overlap.

These are the similarity measures of the sanity checks (Adebayo et al., 2018). Image maps
``[B, C, H, W]`` are first reduced to one value per pixel: summed over channels (``abs``: the
magnitudes summed, as heatmaps are drawn). Other maps ``[B, ...]`` are compared as flat vectors.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..viz.heatmap import heatmap

SIMILARITIES = ("spearman", "ssim", "top_k")
# skimage.metrics.structural_similarity's defaults (Wang et al., 2004).
SSIM_WINDOW = 7
SSIM_K1, SSIM_K2 = 0.01, 0.03


def reduce_map(maps: Tensor, abs: bool = False) -> Tensor:  # noqa: A002 - the paper's word
    """One value per pixel (images) or per feature.

    Args:
        maps (Tensor[B, C, H, W] or Tensor[B, ...]): attribution maps.
        abs: take magnitudes before summing over channels.

    Returns:
        Tensor[B, H, W] for 4-D maps, else Tensor[B, F] (flattened).
    """
    m = maps.detach().double()
    m = m.abs() if abs else m
    return m.sum(1) if m.dim() == 4 else m.flatten(1)


def average_ranks(values: Tensor) -> Tensor:
    """Ranks 0..F-1 along the last dimension, ties sharing their average rank (as SciPy's
    ``rankdata(method="average")`` minus one). values (Tensor[B, F]) → Tensor[B, F] float64."""
    rows, width = values.shape
    ordered, order = torch.sort(values, dim=1, stable=True)
    starts = torch.ones_like(ordered, dtype=torch.bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    run = starts.long().cumsum(1) - 1 + torch.arange(rows, device=values.device)[:, None] * width
    position = torch.arange(width, device=values.device, dtype=torch.float64).expand(rows, width)
    first = torch.full((rows * width,), float(width), dtype=torch.float64, device=values.device)
    last = torch.full_like(first, -1.0)
    first.scatter_reduce_(0, run.flatten(), position.flatten(), "amin")
    last.scatter_reduce_(0, run.flatten(), position.flatten(), "amax")
    run_rank = ((first + last) / 2)[run]                                   # by sorted position
    ranks = torch.empty_like(run_rank)
    ranks.scatter_(1, order, run_rank)
    return ranks


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman rank correlation per row (NaN where a row is constant).

    Args:
        a, b (Tensor[B, F]): two sets of vectors.

    Returns:
        Tensor[B] float64 in [-1, 1].
    """
    ra, rb = average_ranks(a), average_ranks(b)
    ra = ra - ra.mean(1, keepdim=True)
    rb = rb - rb.mean(1, keepdim=True)
    return (ra * rb).sum(1) / (ra.square().sum(1) * rb.square().sum(1)).sqrt()


def ssim(a: Tensor, b: Tensor, data_range: float, window: int = SSIM_WINDOW) -> Tensor:
    """Mean structural similarity per image, as ``skimage.metrics.structural_similarity`` with
    its defaults: a uniform ``window``² window, sample covariances, the mean over the windows
    that fit inside the image.

    Args:
        a, b (Tensor[B, H, W]): two sets of images.
        data_range: the span of possible values (1 for [0, 1], 2 for [-1, 1]).
        window: odd window side; shrunk to the largest odd size that fits a smaller image.

    Returns:
        Tensor[B] float64.
    """
    if a.dim() != 3 or a.shape != b.shape:
        raise ValueError(f"ssim needs two [B, H, W] tensors of one shape, got {tuple(a.shape)} "
                         f"and {tuple(b.shape)}")
    side = min(window, *a.shape[1:])
    side -= 1 - side % 2
    if side < 3:
        raise ValueError(f"ssim needs images of at least 3×3 pixels, got {tuple(a.shape[1:])}")
    x, y = a.double()[:, None], b.double()[:, None]

    def mean(t: Tensor) -> Tensor:
        return F.avg_pool2d(t, side, stride=1)

    n = side * side
    mx, my = mean(x), mean(y)
    vx = (mean(x * x) - mx * mx) * n / (n - 1)
    vy = (mean(y * y) - my * my) * n / (n - 1)
    vxy = (mean(x * y) - mx * my) * n / (n - 1)
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1)


def top_k_overlap(a: Tensor, b: Tensor, k: int) -> Tensor:
    """The fraction of the k highest features of ``a`` that are among the k highest of ``b``
    (ties broken by position). a, b (Tensor[B, F]) → Tensor[B] float64 in [0, 1]."""
    if not 1 <= k <= a.shape[1]:
        raise ValueError(f"k must be within 1..{a.shape[1]}, got {k}")
    top_a = torch.zeros_like(a, dtype=torch.bool)
    top_b = torch.zeros_like(b, dtype=torch.bool)
    top_a.scatter_(1, torch.sort(a, dim=1, descending=True, stable=True).indices[:, :k], True)
    top_b.scatter_(1, torch.sort(b, dim=1, descending=True, stable=True).indices[:, :k], True)
    return (top_a & top_b).sum(1).double() / k


def map_similarity(original: Tensor, other: Tensor, *,
                   measures: Sequence[str] = SIMILARITIES, top_k: int | float = 0.1
                   ) -> dict[str, Tensor]:
    """Similarity of attribution maps to the original ones, with and without absolute values.

    Spearman and top-k compare the channel-reduced maps; SSIM compares them as heatmaps
    (``smoothkern.viz.heatmap``: scaled by the 99th percentile of the magnitude, so in [0, 1]
    with ``abs`` and in [-1, 1] signed) and needs image maps.

    Args:
        original, other (Tensor[B, ...]): maps of one shape.
        measures: any of "spearman", "ssim", "top_k".
        top_k: k as a number of features (int) or a fraction of them (float in (0, 1]).

    Returns:
        {measure: Tensor[B], measure + "_abs": Tensor[B]} float64; NaN for every measure of an
        example whose original or other map holds a NaN (a broken map has no similarity: ranks
        and top-k of NaN would look plausible).
    """
    if original.shape != other.shape:
        raise ValueError(f"maps differ in shape: {tuple(original.shape)} and "
                         f"{tuple(other.shape)}")
    unknown = [m for m in measures if m not in SIMILARITIES]
    if unknown or not measures:
        raise ValueError(f"measures must be some of {SIMILARITIES}, got {tuple(measures)}")
    if "ssim" in measures and original.dim() != 4:
        raise ValueError(f"ssim needs image maps [B, C, H, W], got {tuple(original.shape)}")
    out: dict[str, Tensor] = {}
    for use_abs in (False, True):
        suffix = "_abs" if use_abs else ""
        a = reduce_map(original, use_abs).flatten(1)
        b = reduce_map(other, use_abs).flatten(1)
        if "spearman" in measures:
            out["spearman" + suffix] = spearman(a, b)
        if "top_k" in measures:
            out["top_k" + suffix] = top_k_overlap(a, b, _top_k_count(top_k, a.shape[1]))
        if "ssim" in measures:
            ha = heatmap(original, signed=not use_abs).double()
            hb = heatmap(other, signed=not use_abs).double()
            out["ssim" + suffix] = ssim(ha, hb, data_range=1.0 if use_abs else 2.0)
    broken = original.detach().flatten(1).isnan().any(1) | other.detach().flatten(1).isnan().any(1)
    if bool(broken.any()):
        out = {k: v.masked_fill(broken.to(v.device), float("nan")) for k, v in out.items()}
    return out


def _top_k_count(top_k: int | float, features: int) -> int:
    if isinstance(top_k, bool) or not isinstance(top_k, (int, float)):
        raise TypeError(f"top_k must be an int or a float, got {type(top_k).__name__}")
    if isinstance(top_k, float):
        if not 0 < top_k <= 1:
            raise ValueError(f"a fractional top_k must be within (0, 1], got {top_k}")
        return max(1, round(top_k * features))
    if not 1 <= top_k <= features:
        raise ValueError(f"top_k must be within 1..{features}, got {top_k}")
    return top_k
