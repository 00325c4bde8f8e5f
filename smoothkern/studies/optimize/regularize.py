"""The assignment's image regularisers: random jitter (a circular shift) and Gaussian blur.

Both act on every image of a batch independently, so a batch behaves as its images one by one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# scipy.ndimage.gaussian_filter1d's default: the kernel reaches 4 standard deviations.
TRUNCATE = 4.0


def roll_images(x: Tensor, dy: Tensor, dx: Tensor) -> Tensor:
    """Circularly shifts each image by its own offsets, like ``torch.roll`` per image.

    Pixel (i, j) of the result is pixel ((i − dy) mod H, (j − dx) mod W) of the input: the
    assignment's ``jitter(X, ox, oy)`` is ``roll_images(X, oy, ox)`` and undone by the negated
    offsets.

    Args:
        x (Tensor[B, C, H, W]); dy, dx (LongTensor[B]): offsets along H and W.
    """
    _, _, height, width = x.shape
    rows = (torch.arange(height, device=x.device)[None, :] - dy[:, None]) % height   # [B, H]
    cols = (torch.arange(width, device=x.device)[None, :] - dx[:, None]) % width     # [B, W]
    x = x.gather(2, rows[:, None, :, None].expand(-1, x.shape[1], -1, width))
    return x.gather(3, cols[:, None, None, :].expand(-1, x.shape[1], height, -1))


def gaussian_kernel(sigma: float, truncate: float = TRUNCATE) -> Tensor:
    """The normalised 1-D Gaussian of ``scipy.ndimage.gaussian_filter1d`` (Tensor[2r + 1],
    r = int(truncate · sigma + 0.5))."""
    radius = int(truncate * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return (weights / weights.sum()).to(torch.float32)


def _mirror_pad(x: Tensor, radius: int, dim: int) -> Tensor:
    """Pads ``radius`` pixels on both sides of ``dim`` by mirroring with the edge pixel repeated
    (scipy's ``mode='reflect'``: d c b a | a b c d | d c b a), any radius."""
    size = x.shape[dim]
    positions = torch.arange(-radius, size + radius, device=x.device) % (2 * size)
    index = torch.where(positions >= size, 2 * size - 1 - positions, positions)
    return x.index_select(dim, index)


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Blurs each channel along H and W with a Gaussian of standard deviation ``sigma`` pixels,
    as ``gaussian_filter1d(X, sigma, axis=2)`` then ``axis=3`` (edges mirrored).

    Args:
        x (Tensor[B, C, H, W]).

    Returns:
        Tensor[B, C, H, W]; a convex combination of neighbours, so the pixel range holds.
    """
    kernel = gaussian_kernel(sigma).to(x)
    radius = (kernel.numel() - 1) // 2
    batch, channels, height, width = x.shape
    flat = x.reshape(batch * channels, 1, height, width)
    flat = F.conv2d(_mirror_pad(flat, radius, 2), kernel.view(1, 1, -1, 1))
    flat = F.conv2d(_mirror_pad(flat, radius, 3), kernel.view(1, 1, 1, -1))
    return flat.reshape(batch, channels, height, width)
