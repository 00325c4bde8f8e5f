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
from .transforms import resize as resize_to
from .transforms import resize_center_crop, set_channels, to_tensor


def load_image(path: str | os.PathLike, channels: int = 3, size: int | None = None,
               crop: bool = True, resize: int | None = None) -> Tensor:
    """One image file → Tensor[channels, H, W] in [0, 1].

    With ``crop``, 8-bit images are resized and cropped by Pillow on their integer pixels, as
    torchvision's ``Resize(resize)`` + ``CenterCrop(size)`` do on a PIL image (antialiased
    bilinear; the longer side ``int(resize · long / short)``; the crop's corner rounded).

    Args:
        path: a file Pillow can read.
        channels: 1 (gray) or 3 (RGB); alpha is dropped.
        size: resize to size×size (shorter side + centre crop when ``crop``); None keeps it.
        resize: with ``crop``, the shorter side before the centre crop (default ``size``; e.g.
            256 for a 224 crop, as ImageNet models are evaluated).

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
                eight_bit = image.mode not in (*WIDE_GRAY_MODES, "F")
                if size is not None and crop and eight_bit:
                    image = image.convert("L" if channels == 1 else "RGB")
                    array = np.asarray(_resize_crop(image, size, resize or size))
                else:
                    array = _pixels(image, channels)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        claim = str(err).split(",")[0]  # "Image size (N pixels) exceeds limit of M pixels"
        raise DataError(f"image too large: {path} ({claim}; downscale it first)") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as err:
        raise DataError(f"not a readable image: {path} ({type(err).__name__})") from None
    x = set_channels(to_tensor(array), channels)
    if size is not None and tuple(x.shape[1:]) != (size, size):
        if not crop:
            x = resize_to(x, size)
        else:
            x = resize_center_crop(x, resize or size)
            top = (x.shape[1] - size) // 2
            x = x[:, top:top + size, top:top + size].contiguous()
    return x


def _resize_crop(image, size: int, short: int):
    """A Pillow image: shorter side to ``short`` (antialiased bilinear), the central
    size×size (torchvision's Resize + CenterCrop on a PIL image)."""
    from PIL import Image

    width, height = image.size
    if width <= height:
        new_w, new_h = short, int(short * height / width)
    else:
        new_w, new_h = int(short * width / height), short
    if (new_w, new_h) != (width, height):
        image = image.resize((new_w, new_h), Image.BILINEAR)
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


# Pillow's integer modes deeper than 8 bits (16-bit PNG/TIFF gray): convert("L") would clip them
# to 255, so they are scaled by their bit depth instead.
WIDE_GRAY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def _pixels(image, channels: int) -> np.ndarray:
    """An open Pillow image → H×W (gray) or H×W×3 array: uint8, or float32 in [0, 1] for
    images deeper than 8 bits (16-bit gray is divided by 65535, 32-bit integers by 2³¹ − 1)."""
    if image.mode in WIDE_GRAY_MODES:
        array = np.asarray(image).astype(np.float64)
        full = 65535.0 if image.mode != "I" or array.max(initial=0) <= 65535 else 2.0 ** 31 - 1
        return (np.clip(array, 0, None) / full).astype(np.float32)
    if image.mode == "F":  # float pixels: taken as they are (values outside [0, 1] clip)
        return np.asarray(image, dtype=np.float32)
    return np.asarray(image.convert("L" if channels == 1 else "RGB"))


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
