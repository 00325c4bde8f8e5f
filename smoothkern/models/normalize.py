"""``Normalize`` as a module, and the wrapper that puts it in front of a network.

Keeping the normalisation inside the model means inputs stay in the pixel range [0, 1], so a
noise level is a fraction of that range, as the SmoothGrad paper defines it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel.

    Args:
        mean: one value per channel.
        std: one positive value per channel.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std) or not len(mean):
            raise ValueError(f"mean and std need one value per channel, got {mean} and {std}")
        if min(std) <= 0:
            raise ValueError(f"std must be positive, got {std}")
        # Not persistent: the state dict stays that of the network, as checkpoints store it.
        self.register_buffer("mean", torch.tensor(mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(-1, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """x (Tensor[B, C, H, W]) in [0, 1] → normalised Tensor[B, C, H, W]."""
        if x.dim() != 4 or x.shape[1] != self.mean.shape[0]:
            raise ValueError(f"expected inputs [B, {self.mean.shape[0]}, H, W], got "
                             f"{tuple(x.shape)}")
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


class Normalized(nn.Sequential):
    """``Normalize`` followed by the network: ``model[0]`` is the normalisation.

    Attributes:
        normalize: the :class:`Normalize` module.
        net: the wrapped network (its state dict is what weight files hold).
    """

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.add_module("normalize", Normalize(mean, std))
        self.add_module("net", net)
