"""Training the study's classifiers, with or without AugMix, reproducibly.

Optimiser defaults (:data:`OPTIMISER`): Adam at learning rate 1e-3 with torch's default betas,
batch size 64, no weight decay and no schedule: the plain setting the course's MNIST exercises
use for this CNN, so that the clean and the AugMix model differ only in their data.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .augment import JSD_WEIGHT, BatchAugMix, augmix_jsd_loss

AUGMENTATIONS = ("none", "augmix", "augmix-jsd")


@dataclass(frozen=True)
class TrainSettings:
    """How one model is trained.

    Attributes:
        epochs: passes over the training set.
        batch_size, lr: Adam's mini-batch and learning rate.
        augmentation: "none"; "augmix" (train on one AugMix view of every image); or
            "augmix-jsd" (the paper's loss: cross-entropy on the clean image plus
            ``jsd_weight`` × the Jensen–Shannon divergence between it and two AugMix views).
        jsd_weight: λ of the consistency term.
    """

    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    augmentation: str = "none"
    jsd_weight: float = JSD_WEIGHT

    def __post_init__(self) -> None:
        if self.augmentation not in AUGMENTATIONS:
            raise ValueError(f"augmentation must be one of {', '.join(AUGMENTATIONS)}, got "
                             f"{self.augmentation!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs}, "
                             f"{self.batch_size}")
        if not self.lr > 0 or not self.jsd_weight >= 0:
            raise ValueError(f"lr must be > 0 and jsd_weight >= 0, got {self.lr}, "
                             f"{self.jsd_weight}")


OPTIMISER = TrainSettings()


def train_model(model: nn.Module, x: Tensor, y: Tensor, settings: TrainSettings = OPTIMISER, *,
                seed: int = 0, progress: bool = False, desc: str = "training") -> list[float]:
    """Trains ``model`` in place; the same seed gives the same weights.

    Everything random (the order of the batches, AugMix's draws) comes from ``seed``; torch's
    global generator is used inside ``torch.random.fork_rng`` and comes back as it was.
    Initialise the model under a seed of your own before calling (see :func:`train_trial`).

    Args:
        model: a classifier taking ``x``'s images (left in eval mode).
        x (Tensor[N, C, H, W]): training images in [0, 1].
        y (LongTensor[N]): labels.
        settings: epochs, batch size, learning rate, augmentation.
        seed: the trial's seed.
        progress: a tqdm bar per epoch (over its batches, with the running loss).
        desc: the bars' label.

    Returns:
        The mean training loss of every epoch.
    """
    if x.dim() != 4 or y.dim() != 1 or len(x) != len(y) or not len(x):
        raise ValueError(f"expected images [N, C, H, W] and labels [N], got {tuple(x.shape)} "
                         f"and {tuple(y.shape)}")
    augmix = BatchAugMix() if settings.augmentation != "none" else None
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    generator = torch.Generator().manual_seed(seed)
    losses = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # AugMix draws from the global generator
        model.train()
        try:
            for epoch in range(settings.epochs):
                order = torch.randperm(len(x), generator=generator)
                batches = range(0, len(x), settings.batch_size)
                bar = None
                if progress:
                    from tqdm.auto import tqdm

                    bar = tqdm(batches, desc=f"{desc} epoch {epoch + 1}/{settings.epochs}",
                               unit="batch", leave=False)
                total = 0.0
                for start in bar if bar is not None else batches:
                    index = order[start:start + settings.batch_size]
                    loss = _loss(model, x[index], y[index], settings, augmix)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    total += loss.item() * len(index)
                    if bar is not None:
                        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
                losses.append(total / len(x))
                if bar is not None:
                    bar.close()
        finally:
            model.eval()
    return losses


def _loss(model: nn.Module, images: Tensor, labels: Tensor, settings: TrainSettings,
          augmix: BatchAugMix | None) -> Tensor:
    if augmix is None:
        return F.cross_entropy(model(images), labels)
    if settings.augmentation == "augmix":
        return F.cross_entropy(model(augmix(images)), labels)
    # One forward over the clean images and both views, as the paper's code does.
    logits = model(torch.cat([images, augmix(images), augmix(images)]))
    clean, view1, view2 = logits.chunk(3)
    return augmix_jsd_loss(clean, view1, view2, labels, settings.jsd_weight)


def train_trial(make_model, x: Tensor, y: Tensor, settings: TrainSettings = OPTIMISER, *,
                seed: int = 0, progress: bool = False, desc: str = "training") -> nn.Module:
    """A new model from ``make_model()`` initialised under ``seed``, trained with
    :func:`train_model`; torch's global generator comes back as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = make_model()
    train_model(model, x, y, settings, seed=seed, progress=progress, desc=desc)
    return model
