"""The MNIST CNN of the course assignment: 4 convolutions + 2 linear layers, 1×28×28 → 10."""

from __future__ import annotations

from torch import Tensor, nn

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)


class MnistCNN(nn.Module):
    """conv(1→32)-conv(32→32)-pool-conv(32→64)-conv(64→64)-pool-fc(3136→128)-fc(128→10).

    Args:
        num_classes: output logits.
        width: channels of the first two convolutions (the last two have twice as many).
    """

    def __init__(self, num_classes: int = 10, width: int = 32, hidden: int = 128) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1), nn.ReLU(),
            nn.Conv2d(w, w, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(2 * w * 7 * 7, hidden), nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        """x (Tensor[B, 1, 28, 28]) → logits (Tensor[B, num_classes])."""
        return self.classifier(self.features(x))
