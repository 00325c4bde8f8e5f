"""The engine's benchmark table: naive loop vs torch / vmap / kernel backends vs the limit.

    python -m benchmarks.engine_table            # full table (several minutes on 2 cores)
    python -m benchmarks.engine_table --quick    # m = 10, one repeat: a smoke run

For the MNIST CNN (1×28×28) and CIFAR ResNet18 (3×32×32), B ∈ {1, 8}, m = 50, all six
aggregates, ``samples_per_pass=None``. Every variant of one row runs interleaved in the same
repeats. Speedup = loop time / time; efficiency = limit time / time, where the limit is plain
batched forward/backward passes over the same m·B inputs at the best samples per pass.
Timing (warm-up, interleaved repeats, medians) is the installed package's harness,
``smoothkern.bench`` (``smoothkern bench`` runs it on one model of your choice).
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Sequence

import torch

from smoothkern.bench import benchmark
from smoothkern.core.stats import AGGREGATES
from smoothkern.ops import backends as registry

from .common import limit_candidates, machine, make_model, plain_passes

# Cheap rows are noisy on a shared 2-core machine: repeat until the slowest variant has run for
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
    """Median times of loop, every engine variant and every limit candidate for one row,
    timed by the package's harness (``smoothkern.bench.benchmark``) in one set of repeats."""
    model, shape = make_model(model_name)
    model = model.to(device)
    x = torch.rand(batch, *shape, device=device)
    target = model(x).argmax(1).detach()
    backends = [name for name in engine_variants(device) if name != "auto"]
    limits = {f"limit@{k}": functools.partial(plain_passes, model, x, target, n_samples, k)
              for k in limit_candidates(n_samples, batch)}
    # repeats <= 0: the harness picks about ROW_SECONDS of the slowest variant (3 to 25).
    result = benchmark(model, x, target, n_samples=n_samples, aggregate=AGGREGATES,
                       variants=("loop", "smoothkern"), backends=backends, extra=limits,
                       repeats=repeats if repeats > 0 else None, seconds=ROW_SECONDS,
                       memory=False, errors=False)
    names = {"loop": "loop", **{f"backend={n}": n for n in backends}, "smoothkern": "auto",
             **{k: k for k in limits}}
    times = {}
    for variant, name in names.items():
        row = result.row(variant)
        if row.time_s is None:
            print(f"{model_name} B={batch}: {name} not timed ({row.skipped})", flush=True)
        else:
            times[name] = row.time_s
    return times


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
                        help="interleaved repeats (median); 0: enough for ~3 s of the slowest "
                        "variant (the loop), 3 to 25")
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
    print(f"\nmachine: {machine()}\nm = {n_samples}, all six aggregates, "
          f"median of {shown_repeats} interleaved repeats\n")
    print(table)
    return table


if __name__ == "__main__":
    main()
