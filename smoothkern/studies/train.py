"""A small, deterministic training loop for the assignment models (CPU-friendly)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def random_shift(x: Tensor, max_shift: int, generator: torch.Generator) -> Tensor:
    """Translates each image by up to ``max_shift`` pixels (zero padding): cheap augmentation.

    Args:
        x (Tensor[B, C, H, W]): images.
    """
    if max_shift == 0:
        return x
    height, width = x.shape[-2:]
    padded = F.pad(x, (max_shift,) * 4)
    offsets = torch.randint(0, 2 * max_shift + 1, (x.shape[0], 2), generator=generator)
    return torch.stack([padded[i, :, dy:dy + height, dx:dx + width]
                        for i, (dy, dx) in enumerate(offsets.tolist())])


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 512) -> float:
    """Fraction of ``x`` (Tensor[N, ...]) classified as ``y`` (LongTensor[N]), in eval mode."""
    was_training = model.training
    model.eval()
    correct = sum((model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum().item()
                  for i in range(0, len(x), batch_size))
    model.train(was_training)
    return correct / len(x)


def train(model: nn.Module, x: Tensor, y: Tensor, *, epochs: int = 10, batch_size: int = 64,
          lr: float = 2e-3, weight_decay: float = 1e-4, max_shift: int = 2, seed: int = 0,
          progress: bool = False) -> list[float]:
    """Trains a classifier with Adam and a cosine schedule; deterministic for a given seed.

    Args:
        model: the classifier (trained in place, left in eval mode).
        x (Tensor[N, C, H, W]): training images in the model's input range.
        y (LongTensor[N]): labels.
        epochs, batch_size, lr, weight_decay: the usual.
        max_shift: random translation in pixels (0: no augmentation).
        seed: fixes initialisation order, shuffling and augmentation.
        progress: a tqdm bar over epochs.

    Returns:
        Mean training loss per epoch.
    """
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * -(-len(x) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    epoch_iter = range(epochs)
    if progress:
        from tqdm.auto import tqdm

        epoch_iter = tqdm(epoch_iter, desc="training", unit="epoch")
    losses = []
    model.train()
    for _ in epoch_iter:
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        for i in range(0, len(x), batch_size):
            idx = order[i:i + batch_size]
            loss = F.cross_entropy(model(random_shift(x[idx], max_shift, generator)), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(idx)
        losses.append(total / len(x))
        if progress:
            epoch_iter.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    return losses
