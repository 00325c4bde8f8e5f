"""MNIST from local IDX files (as distributed: ``train-images-idx3-ubyte[.gz]`` and friends)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .errors import DataError

FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
# IDX type codes → numpy dtypes (big-endian as the format stores them).
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """One IDX file (gzipped or not) → its array.

    Raises:
        DataError: missing file, bad magic number, or a size that disagrees with the header.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"IDX file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as err:
        raise DataError(f"cannot read {path}: {err}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise DataError(f"{path} has a truncated IDX header")
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_TYPES[data[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise DataError(f"{path} holds {len(data) - header} bytes of data, the header {shape} "
                        f"says {expected}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def _find(root: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"),
                 stem.replace("-idx", ".idx") + ".gz"):
        for folder in (root, root / "raw", root / "MNIST" / "raw"):
            if (folder / name).is_file():
                return folder / name
    raise DataError(f"{stem}[.gz] not found in {root} (nor in raw/ or MNIST/raw/)")


def load_mnist(root: str | os.PathLike, split: str = "train") -> tuple[Tensor, Tensor]:
    """MNIST (or Fashion-MNIST, same format) from a local folder.

    Args:
        root: the folder with the four IDX files (``raw/`` and ``MNIST/raw/`` below it are
            searched too, torchvision's layout).
        split: "train" or "test".

    Returns:
        images (Tensor[N, 1, 28, 28]) in [0, 1]; labels (LongTensor[N]).
    """
    if split not in FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"MNIST folder not found: {root}")
    images = read_idx(_find(root, FILES[split][0]))
    labels = read_idx(_find(root, FILES[split][1]))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"MNIST {split} files disagree: images {images.shape}, labels "
                        f"{labels.shape}")
    x = torch.from_numpy(images.astype(np.float32) / 255.0)[:, None]
    return x, torch.from_numpy(labels.astype(np.int64))
