"""Tiny models shared by the method and Captum drop-in tests (odd sizes on purpose)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SmallCNN(nn.Module):
    """3×9×9 → 5 classes; one in-place ReLU, layers named for Grad-CAM."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(),
            nn.Conv2d(6, 8, 3, stride=2), nn.ReLU(inplace=True))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 5))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class BNNet(nn.Module):
    """1×10×10 → 4 classes with BatchNorm (non-trivial running stats; use in eval mode)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 5, 3, padding=1)
        self.bn = nn.BatchNorm2d(5)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(5 * 5 * 5, 4)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)
            self.bn.weight.uniform_(0.5, 1.5)
            self.bn.bias.uniform_(-0.2, 0.2)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.relu(self.bn(self.conv(x)))).flatten(1))


class TwoInputNet(nn.Module):
    """(image 2×6×7, vector 4, optional per-example scale) → 3 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3)
        self.relu = nn.ReLU()
        self.vec = nn.Linear(4, 6)
        self.relu2 = nn.ReLU()
        self.out = nn.Linear(4 * 4 * 5 + 6, 3)

    def forward(self, image: Tensor, vector: Tensor, scale: Tensor | None = None) -> Tensor:
        joined = torch.cat([self.relu(self.conv(image)).flatten(1),
                            self.relu2(self.vec(vector))], 1)
        logits = self.out(joined)
        return logits if scale is None else logits * scale.view(-1, 1)


class FunctionalReluNet(nn.Module):
    """Has one nn.ReLU and one F.relu: guided backprop must refuse it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(3 * 4 * 4, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(F.relu(self.relu(self.conv(x))).flatten(1))


class GridOutputNet(nn.Module):
    """3×9×9 → outputs [B, 3, 2] (a target is a tuple of two indices, as in Captum)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = SmallCNN()
        self.grid = nn.Linear(5, 6)

    def forward(self, x: Tensor) -> Tensor:
        return self.grid(self.body(x)).view(-1, 3, 2)


def make(cls: type[nn.Module], seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return cls().eval()


def inputs_for(model: nn.Module, batch: int, seed: int = 1) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    shape = {SmallCNN: (3, 9, 9), BNNet: (1, 10, 10), FunctionalReluNet: (1, 6, 6),
             GridOutputNet: (3, 9, 9)}[type(model)]
    return torch.rand(batch, *shape, generator=gen)
