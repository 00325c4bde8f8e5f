"""Shared benchmark pieces: the models and the limit. The machine line, interleaved timing and
peak memory are the installed package's harness (``smoothkern.bench``), re-exported here."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from smoothkern.bench import interleaved_medians, machine_info, machine_line
from smoothkern.models.cifar import CifarResNet
from smoothkern.models.mnist import MnistCNN


class SmallResNet(nn.Module):
    """A small residual CNN (16-channel stem, two BatchNorm residual blocks, pool, linear) on
    3×32×32: a model cheap enough that the engine's own work (noise, statistics, Python per
    pass) shows next to the model's passes."""

    def __init__(self, width: int = 16, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU())
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False),
                          nn.BatchNorm2d(width), nn.ReLU(),
                          nn.Conv2d(width, width, 3, padding=1, bias=False),
                          nn.BatchNorm2d(width))
            for _ in range(2))
        self.fc = nn.Linear(width, classes)

    def forward(self, x: Tensor) -> Tensor:
        h = self.stem(x)
        for block in self.blocks:
            h = torch.relu(h + block(h))
        return self.fc(torch.nn.functional.adaptive_avg_pool2d(h, 1).flatten(1))


MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "mnist_cnn": (MnistCNN, (1, 28, 28)),
    "cifar_resnet18": (CifarResNet, (3, 32, 32)),
    "small_resnet": (SmallResNet, (3, 32, 32)),
}


__all__ = ["MODELS", "interleaved_medians", "limit_candidates", "machine", "make_model",
           "plain_passes"]


def make_model(name: str, seed: int = 0) -> tuple[nn.Module, tuple[int, ...]]:
    """A benchmark model in eval mode (random weights: speed does not depend on them)."""
    factory, shape = MODELS[name]
    torch.manual_seed(seed)
    return factory().eval(), shape


def machine() -> str:
    """One line naming the CPU (and GPU if any), cores, threads and versions (the package's)."""
    return machine_line(machine_info())


def plain_passes(model: nn.Module, x: Tensor, target: Tensor, n_samples: int,
                 samples_per_pass: int) -> None:
    """The model-bound limit: batched forward/backward over the same m·B inputs, input
    gradients only, no noise and no statistics.

    Args:
        x (Tensor[B, ...]), target (LongTensor[B]).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:  # the engine freezes parameters too; compare like with like
        p.requires_grad_(False)
    try:
        done = 0
        while done < n_samples:
            k = min(samples_per_pass, n_samples - done)
            rows = x.repeat(k, *([1] * (x.dim() - 1))).requires_grad_(True)
            logits = model(rows)
            torch.autograd.grad(logits.gather(1, target.repeat(k).view(-1, 1)).sum(), rows)
            done += k
    finally:
        for p in params:
            p.requires_grad_(True)


def limit_candidates(n_samples: int, batch: int) -> list[int]:
    """Samples per pass to try for the limit: from one sample per pass to all m at once."""
    cands = {1, 2, 5, 10, 25, n_samples}
    cands |= {max(1, 48 // batch), max(1, 96 // batch), max(1, 16 // batch)}
    return sorted(k for k in cands if k <= n_samples)
