"""CIFAR-10 from the local python pickle batches (``cifar-10-batches-py``)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .errors import DataError

FOLDER = "cifar-10-batches-py"
BATCHES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck")


def read_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """One pickle batch → (uint8 [N, 3, 32, 32], int64 [N]).

    Raises:
        DataError: missing, unreadable, or not a CIFAR-10 batch.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"CIFAR-10 batch not found: {path}")
    try:
        with open(path, "rb") as f:
            # The official batches are python pickles of plain dicts/arrays (encoding for py2).
            batch = pickle.load(f, encoding="bytes")
    except Exception as err:  # noqa: BLE001 - any failure means "not a batch file"
        raise DataError(f"cannot read CIFAR-10 batch {path} ({type(err).__name__})") from None
    if not isinstance(batch, dict):
        raise DataError(f"{path} is not a CIFAR-10 batch (no dict inside)")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise DataError(f"{path} is not a CIFAR-10 batch (needs 'data' and 'labels')")
    data = np.asarray(batch["data"], dtype=np.uint8)
    labels = np.asarray(batch["labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise DataError(f"{path} has data {data.shape} and {len(labels)} labels; expected "
                        "[N, 3072] and N")
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar10(root: str | os.PathLike, split: str = "train") -> tuple[Tensor, Tensor]:
    """CIFAR-10 from a local folder (the ``cifar-10-batches-py`` folder or its parent).

    Args:
        root: folder with ``data_batch_1`` .. ``data_batch_5`` and ``test_batch``.
        split: "train" (50000 images) or "test" (10000).

    Returns:
        images (Tensor[N, 3, 32, 32]) in [0, 1]; labels (LongTensor[N]); see :data:`CLASSES`.
    """
    if split not in BATCHES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(root).expanduser()
    if (root / FOLDER).is_dir():
        root = root / FOLDER
    if not root.is_dir():
        raise DataError(f"CIFAR-10 folder not found: {root}")
    parts = [read_batch(root / name) for name in BATCHES[split]]
    data = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return torch.from_numpy(data.astype(np.float32) / 255.0), torch.from_numpy(labels)
