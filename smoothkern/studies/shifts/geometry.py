"""Geometry: the tutorial's ``rr`` (torchvision's ``RandomResizedCrop`` with its default scale
and ratio) and rotation (an extra of the study)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import ExampleIndex, check_images, generators

ROTATION_DEGREES = 90.0
# torchvision's RandomResizedCrop defaults (the tutorial's rr passes only the size).
CROP_SCALE, CROP_RATIO = (0.08, 1.0), (3 / 4, 4 / 3)


def crop_seeds(seed: int, batch: int, example_index: ExampleIndex = None) -> list[int]:
    """The torch seed each image's :func:`rr` crop is drawn under, keyed like every shift."""
    return [int(g.integers(2**62)) for g in generators(seed, "rr", example_index, batch)]


def rr(x: Tensor, seed: int = 0, example_index: ExampleIndex = None,
       size: tuple[int, int] | None = None) -> Tensor:
    """The tutorial's ``rr``: ``torchvision.transforms.RandomResizedCrop(size)`` with its default
    scale (0.08, 1) and ratio (3/4, 4/3), bilinear, per image.

    Image k is cropped by torchvision's own code under ``torch.manual_seed(crop_seeds(...)[k])``
    (inside ``fork_rng``: the caller's generator comes back unchanged), so the crop is the one
    ``RandomResizedCrop`` draws under that seed.

    Args:
        x (Tensor[B, C, H, W]): images in [0, 1].
        seed, example_index: as in :func:`~.colour.coloured`.
        size: the output (height, width); default the input's own (28 × 28 for digits, the
            tutorial's ``(28, 28)``).

    Returns:
        Tensor[B, C, *size].
    """
    check_images(x, "rr")
    try:
        from torchvision.transforms import RandomResizedCrop
    except ImportError:
        raise ImportError("rr needs torchvision (pip install 'smoothkern[vision]')") from None
    crop = RandomResizedCrop(tuple(size) if size else tuple(x.shape[-2:]), scale=CROP_SCALE,
                             ratio=CROP_RATIO)
    out = []
    with torch.random.fork_rng(devices=[]):
        for image, key in zip(x, crop_seeds(seed, len(x), example_index)):
            torch.manual_seed(key)
            out.append(crop(image))
    return torch.stack(out).clamp_(0, 1)


def rotation_angles(seed: int, batch: int, example_index: ExampleIndex = None,
                    max_degrees: float = ROTATION_DEGREES) -> Tensor:
    """The angles :func:`rotate` uses: Tensor[B] of degrees, uniform in ±max_degrees."""
    return torch.tensor([g.uniform(-max_degrees, max_degrees)
                         for g in generators(seed, "rotate", example_index, batch)],
                        dtype=torch.float64)


def rotate(x: Tensor, seed: int = 0, example_index: ExampleIndex = None,
           max_degrees: float = ROTATION_DEGREES) -> Tensor:
    """Rotates each image about its centre by an angle uniform in ±``max_degrees``
    (:func:`rotation_angles`; :func:`rotate_by` does the rotation).

    Args:
        x (Tensor[B, C, H, W]): images in [0, 1].
        seed, example_index: as in :func:`~.colour.coloured`.
        max_degrees: the largest rotation either way (0 ≤ max_degrees ≤ 180).

    Returns:
        Tensor[B, C, H, W].
    """
    check_images(x, "rotate")
    if not 0 <= max_degrees <= 180:
        raise ValueError(f"max_degrees must be within [0, 180], got {max_degrees}")
    return rotate_by(x, rotation_angles(seed, len(x), example_index, max_degrees))


def rotate_by(x: Tensor, degrees: Tensor) -> Tensor:
    """Rotates image b by ``degrees[b]`` counter-clockwise about its centre (bilinear; what
    comes in from outside the image is black).

    Args:
        x (Tensor[B, C, H, W]): images. degrees (Tensor[B]): angles.

    Returns:
        Tensor[B, C, H, W].
    """
    check_images(x, "rotate_by")
    if degrees.shape != (len(x),):
        raise ValueError(f"need one angle per image, got {tuple(degrees.shape)} for {len(x)}")
    radians = torch.deg2rad(degrees.to(torch.float64))
    height, width = x.shape[-2:]
    cos, sin = radians.cos(), radians.sin()
    # affine_grid maps output to input coordinates in [-1, 1] (x right, y down); the aspect
    # ratio scales the off-diagonal terms so that non-square images rotate undistorted.
    theta = torch.zeros(len(x), 2, 3, dtype=torch.float64)
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin * height / width
    theta[:, 1, 0], theta[:, 1, 1] = sin * width / height, cos
    grid = F.affine_grid(theta.to(x.dtype).to(x.device), list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.clamp_(0, 1)
