"""MNIST-C (Mu & Gilmer, 2019) from a local copy of the published ``.npy`` files.

The release is a folder per corruption (``mnist_c/motion_blur/``, ``mnist_c/fog/``, ...), each
holding ``train_images.npy``, ``train_labels.npy``, ``test_images.npy`` and ``test_labels.npy``
(images uint8 [N, 28, 28, 1], labels [N]); ``identity/`` holds plain MNIST.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..data.errors import DataError

SPLITS = ("train", "test")


def _root(root: str | os.PathLike) -> Path:
    """The folder with one subfolder per corruption (``root`` or ``root/mnist_c``)."""
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataError(f"MNIST-C folder not found: {path}")
    nested = path / "mnist_c"
    if not any((path / d).is_dir() for d in ("identity", "fog", "motion_blur", "zigzag")) \
            and nested.is_dir():
        return nested
    return path


def mnist_c_corruptions(root: str | os.PathLike) -> list[str]:
    """The corruptions present in a local MNIST-C folder (subfolders with test files), sorted."""
    path = _root(root)
    return sorted(d.name for d in path.iterdir()
                  if (d / "test_images.npy").is_file() and (d / "test_labels.npy").is_file())


def _load_array(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"MNIST-C file not found: {path}")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise DataError(f"cannot read {path}: {err}") from None


def load_mnist_c(root: str | os.PathLike, corruption: str,
                 split: str = "test") -> tuple[Tensor, Tensor]:
    """One corruption of MNIST-C from a local folder.

    Args:
        root: the MNIST-C folder (the one holding ``fog/``, ``zigzag/``, ...; a folder with an
            ``mnist_c/`` inside is accepted too).
        corruption: a subfolder name, e.g. "motion_blur", "fog", "zigzag", "identity".
        split: "train" or "test".

    Returns:
        images (Tensor[N, 1, 28, 28]) in [0, 1]; labels (LongTensor[N]).

    Raises:
        DataError: a missing folder or file, an unreadable file, or arrays of the wrong shape.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if not isinstance(corruption, str) or not corruption or "/" in corruption or \
            corruption in (".", ".."):
        raise ValueError(f"corruption must be a folder name such as 'fog', got {corruption!r}")
    path = _root(root)
    folder = path / corruption
    if not folder.is_dir():
        present = ", ".join(mnist_c_corruptions(path)) or "none"
        raise DataError(f"MNIST-C corruption {corruption!r} not found in {path} "
                        f"(present: {present})")
    images = _load_array(folder / f"{split}_images.npy")
    labels = _load_array(folder / f"{split}_labels.npy")
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"MNIST-C {corruption}/{split} files disagree: images {images.shape}, "
                        f"labels {labels.shape}")
    if not (np.issubdtype(images.dtype, np.number) and np.issubdtype(labels.dtype, np.integer)):
        raise DataError(f"MNIST-C {corruption}/{split}: expected numeric images and integer "
                        f"labels, got {images.dtype} and {labels.dtype}")
    pixels = images.astype(np.float32)
    # The release stores uint8 (0..255); float copies of it may hold 0..255 or 0..1.
    if images.dtype == np.uint8 or (pixels.size and pixels.max() > 1.0):
        pixels /= 255.0
    x = torch.from_numpy(np.clip(pixels, 0.0, 1.0))[:, None].contiguous()
    return x, torch.from_numpy(labels.astype(np.int64))
