"""Colour and grayscale: the tutorial's ``gen_colored`` and ``gen_weighted_grayscale``, and the
luma-weighted grayscale of a coloured digit (an extra of the study)."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import ExampleIndex, check_images, generators, gray

TINTS = {"red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0)}
# The tutorial's gen_weighted_grayscale: the gray image times one of these, in three channels.
TUTORIAL_GRAY_WEIGHTS = (0.3, 0.59, 0.11)
# RGB → gray weightings: ITU-R BT.601 luma (PIL, OpenCV), BT.709 luma (sRGB), and the plain mean.
GRAYSCALE_WEIGHTS = {"bt601": (0.299, 0.587, 0.114), "bt709": (0.2126, 0.7152, 0.0722),
                     "mean": (1 / 3, 1 / 3, 1 / 3)}


def coloured(x: Tensor, seed: int = 0, example_index: ExampleIndex = None) -> Tensor:
    """Draws each digit in one colour: red, green or blue, chosen per image.

    Args:
        x (Tensor[B, 1 or 3, H, W]): gray images in [0, 1] (a 3-channel image's mean is used).
        seed: the draws' seed (>= 0).
        example_index: the images' indices in their data set (an int offset, or B indices);
            default 0..B-1.

    Returns:
        Tensor[B, 3, H, W]: the gray value in the chosen channel, zero in the other two.
    """
    check_images(x, "coloured")
    tints = torch.tensor(list(TINTS.values()), dtype=x.dtype, device=x.device)
    picks = [int(g.integers(len(TINTS))) for g in generators(seed, "coloured", example_index,
                                                                len(x))]
    return gray(x) * tints[picks].view(-1, 3, 1, 1)


def weighted_grayscale(x: Tensor, seed: int = 0, example_index: ExampleIndex = None) -> Tensor:
    """RGB → gray with one of three channel weightings per image (BT.601, BT.709, mean).

    A coloured digit turns into a dimmer gray one (a red stroke keeps 0.299 of its brightness
    under BT.601); a gray image is its own grayscale, so RGB input is required.

    Args:
        x (Tensor[B, 3, H, W]): RGB images in [0, 1], e.g. from :func:`coloured`.
        seed, example_index: as in :func:`coloured`.

    Returns:
        Tensor[B, 3, H, W]: the weighted gray value in all three channels.
    """
    check_images(x, "weighted_grayscale", channels=(3,))
    weights = torch.tensor(list(GRAYSCALE_WEIGHTS.values()), dtype=x.dtype, device=x.device)
    picks = [int(g.integers(len(GRAYSCALE_WEIGHTS)))
             for g in generators(seed, "weighted_grayscale", example_index, len(x))]
    gray = (x * weights[picks].view(-1, 3, 1, 1)).sum(1, keepdim=True)
    return gray.expand(-1, 3, -1, -1).contiguous()


gen_colored = coloured  # the tutorial's name for the same definition


def gen_weighted_grayscale(x: Tensor, seed: int = 0,
                           example_index: ExampleIndex = None) -> Tensor:
    """The tutorial's ``gen_weighted_grayscale``: the gray image times one of 0.3, 0.59 or 0.11
    (chosen per image), repeated in three channels.

    Args:
        x (Tensor[B, 1 or 3, H, W]): gray images in [0, 1] (a 3-channel image's mean is used).
        seed, example_index: as in :func:`coloured`.

    Returns:
        Tensor[B, 3, H, W]: ``w · x`` in every channel.
    """
    check_images(x, "gen_weighted_grayscale")
    weights = torch.tensor(TUTORIAL_GRAY_WEIGHTS, dtype=x.dtype, device=x.device)
    picks = [int(g.integers(len(TUTORIAL_GRAY_WEIGHTS)))
             for g in generators(seed, "gen_weighted_grayscale", example_index, len(x))]
    return (gray(x) * weights[picks].view(-1, 1, 1, 1)).expand(-1, 3, -1, -1).contiguous()


def coloured_grayscale(x: Tensor, seed: int = 0, example_index: ExampleIndex = None) -> Tensor:
    """The weighted grayscale of the coloured digit: :func:`weighted_grayscale` ∘
    :func:`coloured` (a dimmed gray digit, Tensor[B, 3, H, W]; the study's ``grayscale`` before
    it took the tutorial's definition)."""
    return weighted_grayscale(coloured(x, seed, example_index), seed, example_index)
