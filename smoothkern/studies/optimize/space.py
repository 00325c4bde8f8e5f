"""The space the optimisation steps in: the model's normalised input, as the assignment's.

The assignment optimises preprocessed images (``(pixels - mean) / std``), so its step sizes and
its L2 penalty are in those units. smoothkern's model wrappers take pixels in [0, 1] and put the
normalisation inside the model (:class:`smoothkern.models.Normalized`). This module reads the
wrapper's mean and std so that the recipe's constants mean what they meant in the assignment,
while images are kept, clamped and returned as pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ...models.normalize import Normalize


@dataclass(frozen=True)
class InputSpace:
    """Pixels x and model units z = (x − mean) / std, per channel.

    Attributes:
        mean (Tensor[C, 1, 1] or Tensor[1, 1, 1]), std (same shape): the model's normalisation
            (0 and 1 when it has none).
        pixel_range: ``(low, high)`` the pixels are clamped to after every step, or None.
    """

    mean: Tensor
    std: Tensor
    pixel_range: tuple[float, float] | None

    def to_model_units(self, x: Tensor) -> Tensor:
        """x (Tensor[B, C, H, W]) pixels → z, the normalised image the recipe's penalty sees."""
        return (x - self.mean) / self.std

    def gradient_in_model_units(self, grad_pixels: Tensor) -> Tensor:
        """d/dz from d/dx (Tensor[B, C, H, W]): the chain rule through x = z · std + mean."""
        return grad_pixels * self.std

    def move(self, x: Tensor, step_model_units: Tensor) -> Tensor:
        """x + std · Δz, clamped to the pixel range: a step taken in model units, on pixels."""
        x = x + step_model_units * self.std
        return self.clamp(x)

    def clamp(self, x: Tensor) -> Tensor:
        return x if self.pixel_range is None else x.clamp(*self.pixel_range)

    def to(self, like: Tensor) -> InputSpace:
        """The same space with its tensors on ``like``'s device and dtype."""
        return InputSpace(self.mean.to(like), self.std.to(like), self.pixel_range)


def input_space(model: nn.Module, channels: int, normalization: Any = "auto",
                pixel_range: tuple[float, float] | None = (0.0, 1.0)) -> InputSpace:
    """The space of ``model``'s inputs.

    Args:
        model: the classifier.
        channels: C of the images.
        normalization: ``"auto"`` (the mean and std of a :class:`~smoothkern.models.Normalize`
            or ``torchvision.transforms.Normalize`` that is the model's first module; none if
            there is none), None (step in pixels), or ``(mean, std)`` (one value or one per
            channel each) for a model that normalises some other way.
        pixel_range: the checked ``(low, high)`` or None.

    Raises:
        ValueError: the normalisation does not fit ``channels``; bad values.
    """
    if isinstance(normalization, str):
        if normalization != "auto":
            raise ValueError(f"normalization must be 'auto', None or (mean, std), got "
                             f"{normalization!r}")
        found = _first_normalize(model)
        mean, std = found if found is not None else ((0.0,), (1.0,))
    elif normalization is None:
        mean, std = (0.0,), (1.0,)
    elif isinstance(normalization, Sequence) and len(normalization) == 2:
        mean, std = normalization
    else:
        raise TypeError(f"normalization must be 'auto', None or a pair (mean, std), got "
                        f"{normalization!r}")
    mean_t, std_t = _per_channel(mean, "mean", channels), _per_channel(std, "std", channels)
    if bool((std_t <= 0).any()):
        raise ValueError(f"normalization std must be positive, got {std_t.flatten().tolist()}")
    return InputSpace(mean_t, std_t, pixel_range)


def _first_normalize(model: nn.Module) -> tuple[Tensor, Tensor] | None:
    """(mean, std) of the model's leading normalisation module, or None."""
    first = model
    while isinstance(first, nn.Sequential) and len(first):
        first = first[0]
    if isinstance(first, Normalize):
        return first.mean.detach().cpu().flatten(), first.std.detach().cpu().flatten()
    try:
        from torchvision.transforms import Normalize as TorchvisionNormalize
    except ImportError:
        return None
    if isinstance(first, TorchvisionNormalize):
        return torch.as_tensor(first.mean).flatten(), torch.as_tensor(first.std).flatten()
    return None


def _per_channel(values: Any, name: str, channels: int) -> Tensor:
    try:
        t = torch.as_tensor(values, dtype=torch.float32).detach().cpu().flatten()
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"normalization {name} must be numbers, got {values!r}") from None
    if t.numel() not in (1, channels):
        raise ValueError(f"normalization {name} has {t.numel()} values; the images have "
                         f"{channels} channels")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"normalization {name} must be finite, got {t.tolist()}")
    return t.view(-1, 1, 1)
