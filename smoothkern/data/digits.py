"""scikit-learn's bundled handwritten digits (1797 real images, 8×8), resized for the MNIST CNN.

They ship inside the scikit-learn wheel, so they work offline.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .transforms import resize

INSTALL_HINT = "pip install 'smoothkern[data]' (or: pip install scikit-learn)"


def load_digits(size: int = 28) -> tuple[Tensor, Tensor]:
    """All 1797 digits, scaled to [0, 1] and resized.

    Args:
        size: output height and width (28 for MNIST-shaped models).

    Returns:
        images (Tensor[1797, 1, size, size]) in [0, 1], white strokes on black as in MNIST;
        labels (LongTensor[1797]).
    """
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError:
        raise ImportError(f"the digits data need scikit-learn: {INSTALL_HINT}") from None
    bunch = sk_load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32)[:, None] / 16.0
    if size != 8:
        images = resize(images, size)
    return images.contiguous(), torch.tensor(bunch.target, dtype=torch.int64)


def digits_split(size: int = 28, test_fraction: float = 0.25,
                 seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """A fixed, stratified train/held-out split of :func:`load_digits`.

    Returns:
        x_train (Tensor[N, 1, size, size]), y_train (LongTensor[N]),
        x_test (Tensor[M, 1, size, size]), y_test (LongTensor[M]).
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be within (0, 1), got {test_fraction}")
    images, labels = load_digits(size)
    generator = torch.Generator().manual_seed(seed)
    test = torch.zeros(len(labels), dtype=torch.bool)
    for digit in range(10):  # stratified: the same fraction of every class is held out
        idx = (labels == digit).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=generator)]
        test[idx[:round(len(idx) * test_fraction)]] = True
    return images[~test], labels[~test], images[test], labels[test]


def digit_examples(per_class: int = 1, size: int = 28, held_out: bool = True,
                   seed: int = 0) -> tuple[Tensor, Tensor]:
    """The first ``per_class`` examples of each digit 0..9 (from the held-out part by default).

    Returns:
        images (Tensor[10·per_class, 1, size, size]), labels (LongTensor[10·per_class]).
    """
    x_train, y_train, x_test, y_test = digits_split(size, seed=seed)
    x, y = (x_test, y_test) if held_out else (x_train, y_train)
    picks = [(y == d).nonzero().flatten()[:per_class] for d in range(10)]
    order = torch.stack(picks, dim=1).flatten()  # 0, 1, ..., 9, 0, 1, ...
    return x[order], y[order]
