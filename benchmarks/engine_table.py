"""The engine's benchmark table: naive loop vs torch / vmap / kernel backends vs the limit.

    python -m benchmarks.engine_table            # full table (several minutes on 2 cores)
    python -m benchmarks.engine_table --quick    # m = 10, one repeat: a smoke run

For the MNIST CNN (1×28×28) and CIFAR ResNet18 (3×32×32), B ∈ {1, 8}, m = 50, all five
aggregates, ``samples_per_pass=None``. Every variant of one row runs interleaved in the same
repeats. Speedup = loop time / time; efficiency = limit time / time, where the limit is plain
batched forward/backward passes over the same m·B inputs at the best samples per pass.
"""

from __future__ import annotations

import argparse
import functools
import math
import time
from collections.abc import Sequence

import torch

import smoothkern as sk
from smoothkern import backends as registry
from smoothkern.stats import AGGREGATES

from .common import interleaved_medians, limit_candidates, machine, make_model, plain_passes

# Cheap rows are noisy on a shared 2-core machine: repeat them until each variant has run for
# about this long (medians of 3 repeats of the MNIST rows moved efficiency by ±0.15 between runs).
ROW_SECONDS = 3.0
# Interpreted Triton on the CPU is a correctness tool, not a contender.
NOT_TIMED_ON_CPU = ("loop", "triton")


def engine_variants(device: str) -> list[str]:
    """Backends worth timing on ``device``: torch, vmap, the kernel ones, and auto."""
    names = [n for n in registry.available(device)
             if not (device == "cpu" and n in NOT_TIMED_ON_CPU) and n != "loop"]
    return names + ["auto"]


def run_row(model_name: str, batch: int, n_samples: int, repeats: int,
            device: str = "cpu") -> dict[str, float]:
    """Median times of loop, every engine variant and every limit candidate for one row."""
    model, shape = make_model(model_name)
    model = model.to(device)
    x = torch.rand(batch, *shape, device=device)
    target = model(x).argmax(1).detach()
    run = functools.partial(sk.smooth_grad, model, x, target, n_samples=n_samples,
                            aggregate=AGGREGATES)
    variants = {"loop": functools.partial(run, backend="loop")}
    for name in engine_variants(device):
        variants[name] = functools.partial(run, backend=name)
    for k in limit_candidates(n_samples, batch):
        variants[f"limit@{k}"] = functools.partial(plain_passes, model, x, target, n_samples, k)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    if repeats <= 0:  # auto: about ROW_SECONDS of loop time per variant, at least 3 repeats
        start = time.perf_counter()
        variants["loop"]()
        repeats = max(3, min(25, math.ceil(ROW_SECONDS / (time.perf_counter() - start))))
    return interleaved_medians(variants, repeats, sync)


def format_table(rows: list[tuple[str, int, dict[str, float]]]) -> str:
    """Markdown table: one line per (model, B, variant) with time, speedup and efficiency."""
    lines = ["| model | B | variant | time (s) | speedup vs loop | efficiency |",
             "|---|---|---|---|---|---|"]
    for model_name, batch, times in rows:
        limits = {k: v for k, v in times.items() if k.startswith("limit@")}
        best_k, limit = min(limits.items(), key=lambda kv: kv[1])
        loop = times["loop"]
        for name, t in times.items():
            if name.startswith("limit@"):
                continue
            lines.append(f"| {model_name} | {batch} | {name} | {t:.3f} | {loop / t:.2f}x | "
                         f"{limit / t:.2f} |")
        lines.append(f"| {model_name} | {batch} | limit ({best_k.split('@')[1]} samples/pass) | "
                     f"{limit:.3f} | {loop / limit:.2f}x | 1.00 |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="m = 10, one repeat, smoke run")
    parser.add_argument("--samples", type=int, default=50, help="noise samples m (default 50)")
    parser.add_argument("--repeats", type=int, default=0,
                        help="interleaved repeats (median); 0: enough for ~3 s of loop time")
    parser.add_argument("--models", nargs="+", default=["mnist_cnn", "cifar_resnet18"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    n_samples, repeats = (10, 1) if args.quick else (args.samples, args.repeats)
    shown_repeats = repeats or "3-25 (auto)"
    rows = []
    for model_name in args.models:
        for batch in args.batches:
            rows.append((model_name, batch, run_row(model_name, batch, n_samples, repeats,
                                                    args.device)))
            print(f"done {model_name} B={batch}", flush=True)
    table = format_table(rows)
    print(f"\nmachine: {machine()}\nm = {n_samples}, all five aggregates, "
          f"median of {shown_repeats} interleaved repeats\n")
    print(table)
    return table


if __name__ == "__main__":
    main()
