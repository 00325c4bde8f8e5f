"""The MNIST-C corruptions motion blur, fog and zigzag.

They follow the definitions of Mu & Gilmer, *MNIST-C: A Robustness Benchmark for Computer
Vision* (2019), at the severity the published data set uses for each (motion blur: ImageMagick's
motion blur with radius 10, sigma 3, angle uniform in ±45°; fog: a plasma fractal of strength
3.0 and decay 1.4; zigzag: a zigzag line of the paper's shape at a random height). Here they are
re-implemented in numpy/torch (no ImageMagick), so the draws differ from the published files;
:mod:`smoothkern.studies.mnist_c` loads those when you have them.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from .base import ExampleIndex, check_images, generators

MOTION_BLUR_RADIUS, MOTION_BLUR_SIGMA, MOTION_BLUR_DEGREES = 10, 3.0, 45.0
FOG_STRENGTH, FOG_DECAY, FOG_MAP_SIZE = 3.0, 1.4, 256
ZIGZAG_LENGTH, ZIGZAG_WIDTH = 2.0, 2.0


def motion_blur_kernel(radius: int = MOTION_BLUR_RADIUS,
                       sigma: float = MOTION_BLUR_SIGMA) -> Tensor:
    """ImageMagick's one-sided motion-blur weights: Tensor[2·radius + 1], w_i ∝ exp(−i²/2σ²)."""
    taps = torch.arange(2 * math.ceil(radius) + 1, dtype=torch.float64)
    weights = torch.exp(-taps**2 / (2 * sigma**2))
    return weights / weights.sum()


def motion_blur(x: Tensor, seed: int = 0, example_index: ExampleIndex = None,
                radius: int = MOTION_BLUR_RADIUS, sigma: float = MOTION_BLUR_SIGMA,
                max_degrees: float = MOTION_BLUR_DEGREES) -> Tensor:
    """MNIST-C motion blur at an angle uniform in ±``max_degrees`` per image
    (:func:`motion_blur_by` does the blur).

    Args:
        x (Tensor[B, C, H, W]): images in [0, 1].
        seed, example_index: as in :func:`~.colour.coloured`.
        radius, sigma: the blur's length (2·radius + 1 taps) and the Gaussian's width in pixels.
        max_degrees: the largest angle either way from horizontal.

    Returns:
        Tensor[B, C, H, W].
    """
    check_images(x, "motion_blur")
    angles = torch.tensor([g.uniform(-max_degrees, max_degrees)
                           for g in generators(seed, "motion_blur", example_index, len(x))],
                          dtype=torch.float64)
    return motion_blur_by(x, angles, radius, sigma)


def motion_blur_by(x: Tensor, degrees: Tensor, radius: int = MOTION_BLUR_RADIUS,
                   sigma: float = MOTION_BLUR_SIGMA) -> Tensor:
    """ImageMagick's ``-motion-blur radius x sigma + angle``: each pixel becomes the
    :func:`motion_blur_kernel`-weighted sum of the pixels at whole-pixel offsets
    round(i·cos θ), round(i·sin θ) (column, row) from it, i = 0..2·radius; pixels beyond the
    border repeat the edge.

    Args:
        x (Tensor[B, C, H, W]): images. degrees (Tensor[B]): θ per image (0: along +x).
        radius, sigma: as in :func:`motion_blur`.

    Returns:
        Tensor[B, C, H, W].
    """
    check_images(x, "motion_blur_by")
    if radius < 1 or not sigma > 0:
        raise ValueError(f"motion blur needs radius >= 1 and sigma > 0, got {radius}, {sigma}")
    if degrees.shape != (len(x),):
        raise ValueError(f"need one angle per image, got {tuple(degrees.shape)} for {len(x)}")
    batch, channels, height, width = x.shape
    weights = motion_blur_kernel(radius, sigma).to(x.dtype).to(x.device)
    taps = torch.arange(len(weights), dtype=torch.float64)
    radians = torch.deg2rad(degrees.to(torch.float64))[:, None]
    # Offsets rounded to whole pixels, as ImageMagick does: [B, taps].
    dx = torch.floor(taps * radians.cos() + 0.5).long().to(x.device)
    dy = torch.floor(taps * radians.sin() + 0.5).long().to(x.device)
    rows = torch.arange(height, device=x.device).view(1, 1, height, 1)
    cols = torch.arange(width, device=x.device).view(1, 1, 1, width)
    src_rows = (rows + dy[:, :, None, None]).clamp(0, height - 1)
    src_cols = (cols + dx[:, :, None, None]).clamp(0, width - 1)
    flat_index = (src_rows * width + src_cols).flatten(2)  # [B, taps, H·W]
    out = torch.empty_like(x)
    for start in range(0, batch, 256):  # bounds the gathered [b, C, taps, H·W] block
        part = slice(start, start + 256)
        flat = x[part].flatten(2)[:, :, None, :].expand(-1, -1, len(weights), -1)
        index = flat_index[part][:, None].expand(-1, channels, -1, -1)
        gathered = flat.gather(3, index)
        out[part] = torch.einsum("bctp,t->bcp", gathered, weights).view(-1, channels, height,
                                                                           width)
    return out.clamp_(0, 1)


# ----------------------------------------------------------------------------------------------
# MNIST-C: fog


def plasma_fractal(generator: np.random.Generator, size: int = FOG_MAP_SIZE,
                   decay: float = FOG_DECAY) -> np.ndarray:
    """A diamond-square height map (the fog pattern of ImageNet-C and MNIST-C).

    Args:
        generator: the random source.
        size: side length, a power of two.
        decay: how fast the random perturbation shrinks from one scale to the next (smaller:
            more fine detail).

    Returns:
        float64 array [size, size], scaled to [0, 1].
    """
    if size < 2 or size & (size - 1):
        raise ValueError(f"size must be a power of two >= 2, got {size}")
    heights = np.zeros((size, size))
    step, wibble = size, 100.0

    def perturbed_mean(total: np.ndarray) -> np.ndarray:
        # The mean of four neighbours plus noise of the current scale (the published definition
        # scales the uniform noise by the scale twice).
        return total / 4 + wibble * generator.uniform(-wibble, wibble, total.shape)

    while step >= 2:
        half = step // 2
        corners = heights[0:size:step, 0:size:step]
        # Squares: each centre from its four corners.
        square = corners + np.roll(corners, -1, axis=0)
        square = square + np.roll(square, -1, axis=1)
        heights[half:size:step, half:size:step] = perturbed_mean(square)
        # Diamonds: the edge midpoints from the two centres and two corners around each.
        centres = heights[half:size:step, half:size:step]
        corners = heights[0:size:step, 0:size:step]
        around = (centres + np.roll(centres, 1, axis=0)) + (corners + np.roll(corners, -1, axis=1))
        heights[0:size:step, half:size:step] = perturbed_mean(around)
        around = (centres + np.roll(centres, 1, axis=1)) + (corners + np.roll(corners, -1, axis=0))
        heights[half:size:step, 0:size:step] = perturbed_mean(around)
        step //= 2
        wibble /= decay
    heights -= heights.min()
    return heights / heights.max()


def fog(x: Tensor, seed: int = 0, example_index: ExampleIndex = None,
        strength: float = FOG_STRENGTH, decay: float = FOG_DECAY) -> Tensor:
    """MNIST-C fog: adds ``strength`` × a plasma fractal (its top-left H×W corner) and rescales
    so that the image's brightest value maps to max/(max + strength) of the sum.

    Args:
        x (Tensor[B, C, H, W]): images in [0, 1], H and W at most 256.
        seed, example_index: as in :func:`~.colour.coloured`.
        strength, decay: the fog's weight and the fractal's decay.

    Returns:
        Tensor[B, C, H, W]: ``clip((x + s·f) · max(x) / (max(x) + s), 0, 1)`` per image.
    """
    check_images(x, "fog")
    height, width = x.shape[-2:]
    if max(height, width) > FOG_MAP_SIZE:
        raise ValueError(f"fog: images up to {FOG_MAP_SIZE}×{FOG_MAP_SIZE}, got {height}×{width}")
    if strength < 0:
        raise ValueError(f"fog: strength must be >= 0, got {strength}")
    maps = [plasma_fractal(g, FOG_MAP_SIZE, decay)[:height, :width]
            for g in generators(seed, "fog", example_index, len(x))]
    fractal = torch.from_numpy(np.stack(maps)).to(x.dtype).to(x.device)[:, None]
    brightest = x.flatten(1).amax(1).view(-1, 1, 1, 1)
    return ((x + strength * fractal) * brightest / (brightest + strength)).clamp_(0, 1)


# ----------------------------------------------------------------------------------------------
# MNIST-C: zigzag


def line_image(c0: float, r0: float, c1: float, r1: float, height: int, width: int) -> np.ndarray:
    """MNIST-C's anti-aliased line from (column c0, row r0) to (c1, r1), c0 < c1.

    A pixel's value decays with its vertical distance d from the line as log(1 − d/2.3) + 1,
    clipped to [0, 1] (a stroke about three pixels thick); columns outside [⌊c0⌋, ⌈c1⌉) are 0.

    Returns:
        float64 array [height, width] in [0, 1] (all zero for a vertical or reversed segment).
    """
    if c1 <= c0:
        return np.zeros((height, width))
    cols = np.arange(width, dtype=np.float64)[None, :]
    rows = np.arange(height, dtype=np.float64)[:, None]
    slope = (r1 - r0) / (c1 - c0)
    distance = np.clip(np.abs(rows - (slope * (cols - c0) + r0)), 0, 2.3 - 1e-10)
    value = np.clip(np.log(1 - distance / 2.3) + 1, 0, 1)
    value[:, :max(0, math.floor(c0))] = 0
    value[:, max(0, math.ceil(c1)):] = 0
    return value


def zigzag_image(generator: np.random.Generator, height: int = 28, width: int = 28) -> np.ndarray:
    """One MNIST-C zigzag: segments of length 2 and amplitude 2 along a line from column 2 to
    column width − 3, starting at a random row and rising or falling up to 5 rows.

    Returns:
        float64 array [height, width] in [0, 1].
    """
    a, b = ZIGZAG_LENGTH, ZIGZAG_WIDTH
    c0, c1 = 2, width - 3
    r0 = int(generator.integers(0, height - 1))
    r1 = r0 + int(generator.integers(-5, 5))
    theta = math.atan((r1 - r0) / (c1 - c0))
    length = (c1 - c0) / math.cos(theta)
    points = [(0.0, 0.0)]
    r_last = 0.0
    for i in range(int((length - a) // (2 * a)) + 1):
        r_last = (-1) ** i * b
        points.append(((2 * i + 1) * a, r_last))
    full = 2 * a * (length // (2 * a))
    if length != full:  # the published end point, kept as defined
        points.append((length, r_last / (2 * (length - full))))
    cols, rows = np.array(points).T
    # Rotate the zigzag onto the line, then move it to its start.
    cs = math.cos(theta) * cols - math.sin(theta) * rows + c0
    rs = math.sin(theta) * cols + math.cos(theta) * rows + r0
    total = np.zeros((height, width))
    for i in range(1, len(cs)):
        total += line_image(cs[i - 1], rs[i - 1], cs[i], rs[i], height, width)
    return np.clip(total, 0, 1)


def zigzag(x: Tensor, seed: int = 0, example_index: ExampleIndex = None) -> Tensor:
    """MNIST-C zigzag: a white zigzag line across each image (:func:`zigzag_image`).

    Args:
        x (Tensor[B, C, H, W]): images in [0, 1], at least 8×8 (MNIST-C's are 28×28).
        seed, example_index: as in :func:`~.colour.coloured`.

    Returns:
        Tensor[B, C, H, W]: ``clip(x + zigzag, 0, 1)`` in every channel.
    """
    check_images(x, "zigzag")
    height, width = x.shape[-2:]
    if min(height, width) < 8:
        raise ValueError(f"zigzag: images must be at least 8×8, got {height}×{width}")
    lines = [zigzag_image(g, height, width)
             for g in generators(seed, "zigzag", example_index, len(x))]
    overlay = torch.from_numpy(np.stack(lines)).to(x.dtype).to(x.device)[:, None]
    return (x + overlay).clamp_(0, 1)
