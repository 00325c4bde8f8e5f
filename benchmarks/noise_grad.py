"""NoiseGrad and FusionGrad: the loop over perturbed model copies vs ``sk.noise_grad``.

    python -m benchmarks.noise_grad            # CIFAR ResNet18, B = 1: NoiseGrad, FusionGrad
    python -m benchmarks.noise_grad --quick    # one repeat: a smoke run

Rows, all on the same model, input and target:

- ``loop``: what NoiseGrad's reference code does, one model draw after another: a deep copy of
  the model, its weights perturbed in place with the same counter-based noise noise_grad draws
  (the same kernel), then one forward/backward per input sample; the attributions stacked and
  reduced at the end. Its results equal noise_grad's (the relative L2 distance is printed).
- ``loop-randn``: the same loop with ``torch.randn`` weight noise (torch's generator, as the
  authors' package draws it): other draws, so only its time is comparable.
- ``noise_grad``: the defaults (on a CPU one draw a pass, its rows batched).
- ``noise_grad-vmap``: all draws in one pass, vmapped over the draws
  (``samples_per_pass = n_models · n_samples``).
- ``weight draws``: drawing the n_models weight sets alone (part of every counter-noise row).

Timing: the package's harness (interleaved repeats, medians of wall time) after a one-draw
warm-up, and the medians of the process's CPU time (both threads) in the same calls: on a shared
machine the CPU time is the steadier of the two. The caller's parameters are checked
bit-identical after the noise_grad calls.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

import smoothkern as sk
from smoothkern.core.stats import direct_statistics
from smoothkern.models import cifar10_resnet18
from smoothkern.noise.weights import WeightDraws
from smoothkern.noise.weights.draws import weight_key
from smoothkern.ops import backends as registry

from .common import interleaved_medians, machine

WEIGHT_NOISE = 0.2
NOISE_LEVEL = 0.1          # FusionGrad's input noise (fraction of the input's range)


def loop_over_copies(model: nn.Module, x: Tensor, target: Tensor, n_models: int, n_samples: int,
                     noise_level: float, seed: int = 0, randn: bool = False) -> dict[str, Tensor]:
    """Mean and variance over n_models copies × n_samples inputs, one pass per attribution."""
    perturb = registry.choose("auto", x.device).kernels.perturb
    sigma = torch.full((1, x.shape[0]), noise_level * float(x.max() - x.min()))
    attributions = []
    for d in range(n_models):
        copied = copy.deepcopy(model)
        with torch.no_grad():
            for p, param in enumerate(copied.parameters()):
                if randn:
                    param.mul_(1 + WEIGHT_NOISE * torch.randn_like(param))
                    continue
                flat = param.reshape(1, -1)
                drawn = perturb(flat, (WEIGHT_NOISE * flat).view(1, 1, -1), weight_key(seed), d,
                                1, "gaussian", example_index=torch.tensor([p]))
                param.copy_(drawn.view(param.shape))
        for i in range(n_samples):
            noisy = perturb(x, sigma, seed, d * n_samples + i, 1, "gaussian")
            leaf = noisy.requires_grad_(True)
            out = copied(leaf).gather(1, target.view(-1, 1)).sum()
            attributions.append(torch.autograd.grad(out, leaf)[0])
    return direct_statistics(torch.stack(attributions), ("mean", "var"), 1e-10)


def rel_l2(a: Tensor, b: Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def run_row(model: nn.Module, x: Tensor, n_models: int, n_samples: int, repeats: int
            ) -> tuple[dict[str, tuple[float, float]], dict[str, float]]:
    """Median wall and CPU (process) times of every row of one setting, and noise_grad's
    distance to the loop (from the timed calls' own results)."""
    target = model(x).argmax(1)
    level = NOISE_LEVEL if n_samples > 1 else 0.0
    params = [p.detach().clone() for p in model.parameters()]
    results: dict[str, dict[str, Tensor]] = {}
    cpu_times: dict[str, list[float]] = {}

    def keep(name: str, call: Callable[[], dict[str, Tensor]]) -> Callable[[], None]:
        def run() -> None:
            start = time.process_time()
            results[name] = call()
            cpu_times.setdefault(name, []).append(time.process_time() - start)
        return run

    def ng(**kw) -> Callable[[], dict[str, Tensor]]:
        return lambda: sk.noise_grad(model, x, target, n_models=n_models, n_samples=n_samples,
                                     noise_level=level, weight_noise=WEIGHT_NOISE,
                                     aggregate=("mean", "var"), **kw)

    draws = WeightDraws(model, WEIGHT_NOISE, "multiplicative", 0,
                        registry.choose("auto", x.device).kernels.perturb)

    def draw_only() -> dict[str, Tensor]:
        draws.stacked(0, n_models)
        draws.release()
        return {}

    variants = {
        "loop": keep("loop", lambda: loop_over_copies(model, x, target, n_models, n_samples,
                                                      level)),
        "loop-randn": keep("loop-randn", lambda: loop_over_copies(
            model, x, target, n_models, n_samples, level, randn=True)),
        "noise_grad": keep("noise_grad", ng()),
        "noise_grad-vmap": keep("noise_grad-vmap", ng(samples_per_pass=n_models * n_samples)),
        "weight draws": keep("weight draws", draw_only),
    }
    # Warm-up on one draw (allocator, thread pools, the op's first call), not a full call each.
    sk.noise_grad(model, x, target, n_models=1, n_samples=n_samples, noise_level=level)
    loop_over_copies(model, x, target, 1, 1, level)
    times = interleaved_medians(variants, repeats, warm_up=False)
    errors = {name: max(rel_l2(results[name][k], results["loop"][k]) for k in ("mean", "var"))
              for name in ("noise_grad", "noise_grad-vmap")}
    if not all(torch.equal(p, q) for p, q in zip(params, model.parameters())):
        raise AssertionError("noise_grad changed the caller's parameters")
    cpu = {name: statistics.median(values) for name, values in cpu_times.items()}
    return {name: (times[name], cpu[name]) for name in times}, errors


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=("noisegrad", "fusiongrad"), help="one setting")
    args = parser.parse_args(argv)
    repeats = 1 if args.quick else args.repeats
    torch.manual_seed(0)
    model = cifar10_resnet18().eval()       # random weights: the speed does not depend on them
    x = torch.rand(1, 3, 32, 32)
    print(machine(), flush=True)
    print(f"CIFAR ResNet18, B = 1, weight_noise = {WEIGHT_NOISE} (multiplicative), "
          f"{repeats} interleaved repeats, medians")
    settings = {"noisegrad": (10, 1, "NoiseGrad 10"), "fusiongrad": (10, 10, "FusionGrad 10×10")}
    for key, (n_models, n_samples, label) in settings.items():
        if args.only not in (None, key):
            continue
        times, errors = run_row(model, x, n_models, n_samples, repeats)
        print(f"\n{label}  (rel. L2 to the loop: noise_grad {errors['noise_grad']:.1e}, "
              f"vmapped {errors['noise_grad-vmap']:.1e}; caller's parameters bit-identical)")
        print(f"  {'row':<20} {'wall s':>8} {'loop / row':>11} {'CPU s':>8} {'loop / row':>11}")
        (loop_wall, loop_cpu) = times["loop"]
        for name, (wall, cpu) in times.items():
            print(f"  {name:<20} {wall:8.2f} {loop_wall / wall:10.2f}x {cpu:8.2f} "
                  f"{loop_cpu / cpu:10.2f}x", flush=True)


if __name__ == "__main__":
    main()
