"""Resizing and cropping image tensors (pure torch, so loaders need no extra packages)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def to_tensor(image: np.ndarray) -> Tensor:
    """An image array (H×W, H×W×C; uint8, bool or float in [0, 1]) → Tensor[C, H, W] in [0, 1]."""
    array = np.asarray(image)
    if array.dtype == np.uint8:
        array = array.astype(np.float32) / 255.0
    else:
        array = array.astype(np.float32)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise ValueError(f"expected an H×W or H×W×C image, got shape {array.shape}")
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))).clamp_(0, 1)


def set_channels(x: Tensor, channels: int) -> Tensor:
    """x (Tensor[C, H, W]) → Tensor[channels, H, W]: drops alpha, converts gray ↔ RGB."""
    if x.shape[0] == 4:
        x = x[:3]
    if x.shape[0] == channels:
        return x
    if channels == 1:
        weights = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype).view(3, 1, 1)
        return (x[:3] * weights).sum(0, keepdim=True)
    if x.shape[0] == 1:
        return x.expand(channels, -1, -1).clone()
    raise ValueError(f"cannot turn {x.shape[0]} channels into {channels}")


def resize(x: Tensor, size: int | tuple[int, int]) -> Tensor:
    """x (Tensor[C, H, W] or [B, C, H, W]) → resized to ``size`` (antialiased bilinear)."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    batched = x if x.dim() == 4 else x[None]
    out = F.interpolate(batched, size=size, mode="bilinear", antialias=True, align_corners=False)
    out = out.clamp_(0, 1)
    return out if x.dim() == 4 else out[0]


def resize_center_crop(x: Tensor, size: int) -> Tensor:
    """x (Tensor[C, H, W]) → Tensor[C, size, size]: shorter side to ``size``, centre crop."""
    height, width = x.shape[-2:]
    scale = size / min(height, width)
    new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
    x = resize(x, (new_h, new_w))
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return x[..., top:top + size, left:left + size].contiguous()
