"""Shared benchmark pieces: the models, the machine line, interleaved timing, the limit."""

from __future__ import annotations

import platform
import statistics
import subprocess
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from smoothkern.models.cifar import CifarResNet
from smoothkern.models.mnist import MnistCNN

MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "mnist_cnn": (MnistCNN, (1, 28, 28)),
    "cifar_resnet18": (CifarResNet, (3, 32, 32)),
}


def make_model(name: str, seed: int = 0) -> tuple[nn.Module, tuple[int, ...]]:
    """A benchmark model in eval mode (random weights: speed does not depend on them)."""
    factory, shape = MODELS[name]
    torch.manual_seed(seed)
    return factory().eval(), shape


def machine() -> str:
    """One line naming the CPU (and GPU if any), core count and torch version."""
    cpu = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                cpu = line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (f"{cpu}, {torch.get_num_threads()} threads{gpu}, torch {torch.__version__}, "
            f"Python {platform.python_version()}")


def interleaved_medians(variants: dict[str, Callable[[], object]], repeats: int,
                        sync: Callable[[], None] = lambda: None,
                        warm_up: bool = True) -> dict[str, float]:
    """Median wall time of each variant, running them in turn within each repeat.

    Interleaving makes a slow phase of a noisy machine hit every variant alike, so ratios
    inside one run are trustworthy even when absolute times drift.

    Args:
        warm_up: call every variant once, untimed, first (allocator, lazy init, kernel builds).
    """
    times: dict[str, list[float]] = {name: [] for name in variants}
    if warm_up:
        for fn in variants.values():
            fn()
        sync()
    names = list(variants)
    for r in range(repeats):
        # Rotate the order each repeat: a variant's cost can leak into the next one (allocator,
        # caches, thread pools), so no variant should always follow the same neighbour.
        for name in names[r % len(names):] + names[:r % len(names)]:
            fn = variants[name]
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


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
