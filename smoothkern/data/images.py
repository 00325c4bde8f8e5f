"""Image files (PNG, JPEG, ...) as tensors, for the command line."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .errors import DataError
from .transforms import resize, resize_center_crop, set_channels, to_tensor


def load_image(path: str | os.PathLike, channels: int = 3, size: int | None = None,
               crop: bool = True) -> Tensor:
    """One image file → Tensor[channels, H, W] in [0, 1].

    Args:
        path: a file Pillow can read.
        channels: 1 (gray) or 3 (RGB); alpha is dropped.
        size: resize to size×size (shorter side + centre crop when ``crop``); None keeps it.

    Raises:
        DataError: missing file, not an image, a damaged one, or one whose header claims more
            pixels than Pillow's ``Image.MAX_IMAGE_PIXELS`` (a possible decompression bomb).
    """
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise ImportError("reading image files needs Pillow: pip install 'smoothkern[viz]'") \
            from None
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"image not found: {path}")
    try:
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that (and raises above):
            # refuse both alike. Its other warnings (damaged metadata) would add stderr lines.
            warnings.simplefilter("ignore")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image = image.convert("L" if channels == 1 else "RGB")
                array = np.asarray(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        claim = str(err).split(",")[0]  # "Image size (N pixels) exceeds limit of M pixels"
        raise DataError(f"image too large: {path} ({claim}; downscale it first)") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as err:
        raise DataError(f"not a readable image: {path} ({type(err).__name__})") from None
    x = set_channels(to_tensor(array), channels)
    if size is not None:
        x = resize_center_crop(x, size) if crop else resize(x, size)
    return x


def load_images(paths: Sequence[str | os.PathLike], channels: int = 3,
                size: int | None = None) -> Tensor:
    """Several image files → Tensor[N, channels, size, size] (``size`` needed unless all match)."""
    if not paths:
        raise DataError("no image files given")
    images = [load_image(p, channels, size) for p in paths]
    shapes = {tuple(x.shape) for x in images}
    if len(shapes) > 1:
        raise DataError(f"images differ in size {sorted(shapes)}; give a size to resize them")
    return torch.stack(images)
