"""What deriving the prepared copy's weights afresh on every call costs.

    python -m benchmarks.prepare_refresh

The prepared copy (BatchNorm folded, channels_last) derives its folded and channels_last
weights from the caller's current tensors at the start of each call, so that writes through
``.data`` are seen. For CIFAR ResNet18 and the bundled digits CNN this prints, medians of
interleaved repeats: the refresh alone, a one-sample call after a ``.data`` write (the answer
follows it), and default ``smooth_grad`` calls (m = 1 and m = 50, B = 1, named target) for
scale.
"""

from __future__ import annotations

import statistics
import time

import torch

import smoothkern as sk
from smoothkern.model_cache import cache
from smoothkern.models import cifar10_resnet18, digits_cnn

from .common import machine

REPEATS = 30


def _time(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def measure(name: str, model: torch.nn.Module, shape: tuple[int, ...]) -> str:
    x = torch.rand((1,) + shape, generator=torch.Generator().manual_seed(0))
    sk.smooth_grad(model, x, 0, n_samples=50)                 # builds and caches the copy
    (record,) = [r for r in cache.entry(model).prepared.values() if r.module is not None]
    first_param = next(model.parameters())

    def after_write():
        first_param.data.mul_(1.0 + 1e-3)             # a write no fingerprint can see
        sk.smooth_grad(model, x, 0, n_samples=1)

    rows = {"refresh": [], "call m=1 after a .data write": [],
            "call m=1": [], "call m=50": []}
    for _ in range(REPEATS):
        rows["refresh"].append(_time(record.refresh))
        rows["call m=1 after a .data write"].append(_time(after_write))
        rows["call m=1"].append(_time(lambda: sk.smooth_grad(model, x, 0, n_samples=1)))
        rows["call m=50"].append(_time(lambda: sk.smooth_grad(model, x, 0, n_samples=50)))
    derived = sum(t.numel() for owner, _ in record.derived for t in owner._parameters.values()
                  if t is not None)
    lines = [f"{name}: {len(record.derived)} derived layers, {derived / 1e6:.2f} M values"]
    lines += [f"  {label}: {statistics.median(v) * 1e3:.2f} ms" for label, v in rows.items()]
    return "\n".join(lines)


def main() -> None:
    torch.manual_seed(0)
    print(machine())
    print(measure("CIFAR ResNet18 (3x32x32)", cifar10_resnet18().eval(), (3, 32, 32)))
    print(measure("digits CNN (1x28x28)", digits_cnn().eval(), (1, 28, 28)))


if __name__ == "__main__":
    main()
