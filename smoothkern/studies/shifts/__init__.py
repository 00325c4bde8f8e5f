"""Distribution shifts for digit images: the course tutorial's colour, weighted grayscale and
random resized crop, the MNIST-C corruptions motion blur, fog and zigzag, and two extras (the
luma grayscale of a coloured digit, rotation).

Every shift takes images ``x (Tensor[B, C, H, W])`` with pixels in [0, 1] (the bundled digits,
real MNIST) and returns new images; the input is never changed. Its random choices (a tint, a
weighting, a crop, a fog pattern) are drawn per image from a generator keyed by ``(seed, shift,
example index)``, so image k is shifted the same way in any batch: ``shift(x, seed)[k]`` equals
``shift(x[k:k+1], seed, example_index=k)[0]``.

One module per kind: :mod:`.colour`, :mod:`.geometry`, :mod:`.corruptions` (MNIST-C), and
:mod:`.base` (checks, keyed generators, gray ↔ RGB).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from .base import ExampleIndex, to_rgb
from .colour import (
    GRAYSCALE_WEIGHTS,
    TINTS,
    TUTORIAL_GRAY_WEIGHTS,
    coloured,
    coloured_grayscale,
    gen_colored,
    gen_weighted_grayscale,
    weighted_grayscale,
)
from .corruptions import (
    FOG_DECAY,
    FOG_MAP_SIZE,
    FOG_STRENGTH,
    MOTION_BLUR_DEGREES,
    MOTION_BLUR_RADIUS,
    MOTION_BLUR_SIGMA,
    ZIGZAG_LENGTH,
    ZIGZAG_WIDTH,
    fog,
    line_image,
    motion_blur,
    motion_blur_by,
    motion_blur_kernel,
    plasma_fractal,
    zigzag,
    zigzag_image,
)
from .geometry import (
    CROP_RATIO,
    CROP_SCALE,
    ROTATION_DEGREES,
    crop_seeds,
    rotate,
    rotate_by,
    rotation_angles,
    rr,
)


def original(x: Tensor, seed: int = 0, example_index: ExampleIndex = None) -> Tensor:
    """No shift: the images as RGB (Tensor[B, 3, H, W])."""
    return to_rgb(x)


def _rgb(shift: Callable[..., Tensor], name: str | None = None) -> Callable[..., Tensor]:
    def shifted(x: Tensor, seed: int = 0, example_index: ExampleIndex = None) -> Tensor:
        return to_rgb(shift(x, seed, example_index))

    shifted.__name__ = name or shift.__name__
    shifted.__doc__ = f"{shift.__name__} with the defaults, as RGB (Tensor[B, 3, H, W])."
    return shifted


# name → shift(x, seed, example_index) returning RGB images [B, 3, H, W]: what a 3-channel
# digits model is tested on. The study's seven: the test set, the tutorial's gen_colored,
# gen_weighted_grayscale and rr, then MNIST-C's three.
SHIFTS: dict[str, Callable[..., Tensor]] = {
    "original": original, "coloured": gen_colored,
    "weighted_grayscale": gen_weighted_grayscale,
    "random_resized_crop": _rgb(rr, "random_resized_crop"),
    "motion_blur": _rgb(motion_blur), "fog": _rgb(fog), "zigzag": _rgb(zigzag),
}
# The study's earlier readings of the tutorial's grayscale and rr, kept by name.
EXTRA_SHIFTS: dict[str, Callable[..., Tensor]] = {
    "coloured_grayscale": coloured_grayscale, "rotated": _rgb(rotate, "rotated"),
}
MNIST_C_SHIFTS = ("motion_blur", "fog", "zigzag")


def apply_shift(name: str, x: Tensor, seed: int = 0,
                example_index: ExampleIndex = None) -> Tensor:
    """One of :data:`SHIFTS` or :data:`EXTRA_SHIFTS` by name → RGB images Tensor[B, 3, H, W]."""
    shift = SHIFTS.get(name) or EXTRA_SHIFTS.get(name)
    if shift is None:
        raise ValueError(f"unknown shift {name!r}; choose from "
                         f"{', '.join([*SHIFTS, *EXTRA_SHIFTS])}")
    return shift(x, seed, example_index)


__all__ = [
    "CROP_RATIO", "CROP_SCALE", "EXTRA_SHIFTS", "FOG_DECAY", "FOG_MAP_SIZE", "FOG_STRENGTH",
    "GRAYSCALE_WEIGHTS", "MNIST_C_SHIFTS", "MOTION_BLUR_DEGREES", "MOTION_BLUR_RADIUS",
    "MOTION_BLUR_SIGMA", "ROTATION_DEGREES", "SHIFTS", "TINTS", "TUTORIAL_GRAY_WEIGHTS",
    "ZIGZAG_LENGTH", "ZIGZAG_WIDTH", "ExampleIndex", "apply_shift", "coloured",
    "coloured_grayscale", "crop_seeds", "fog", "gen_colored", "gen_weighted_grayscale",
    "line_image", "motion_blur", "motion_blur_by", "motion_blur_kernel", "original",
    "plasma_fractal", "rotate", "rotate_by", "rotation_angles", "rr", "to_rgb",
    "weighted_grayscale", "zigzag", "zigzag_image",
]
