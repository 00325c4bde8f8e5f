"""C++ CPU ops vs the pure-torch reference ops: perturb and accumulate, one table of ratios.

    python -m benchmarks.ops_cpu             # m = 50, B in {1, 8}, 3x32x32 and 3x224x224
    python -m benchmarks.ops_cpu --quick     # 32x32 only, 3 repeats
    python -m benchmarks.ops_cpu --sampling  # the C++ perturb's draws per sampling design

perturb: all m noisy copies of x[B, 3, H, W] in one call (gaussian, one noise level).
accumulate: one chunk of m attributions [m, B*3*H*W] into float32 state (all five statistics'
state: mean, m2, abs_sum, log_sum). Variants run interleaved; times are medians.
--sampling: ns per drawn element (sample x example x element) of the C++ perturb for each
sampling design, m = 50 Gaussian samples drawn in passes of 10, 25 or 50 (one call per pass, as
the engine does), x[B, 1, 28, 28] and x[B, 3, 224, 224].
"""

from __future__ import annotations

import argparse

import torch

from smoothkern.core.stats import StreamingStats
from smoothkern.ops import accumulate, extension, perturb
from smoothkern.ops.accumulate import accumulate_reference
from smoothkern.ops.perturb import perturb_reference

from .common import interleaved_medians, machine

SHAPES = [(3, 32, 32), (3, 224, 224)]
BATCHES = [1, 8]
M = 50
SAMPLING_SHAPES = [(1, 28, 28), (3, 224, 224)]
SAMPLING_PASSES = [10, 25, 50]
DESIGNS = ("iid", "antithetic", "stratified")


def perturb_variants(batch: int, shape: tuple[int, ...], m: int) -> dict:
    x = torch.rand(batch, *shape)
    sigma = torch.full((1, batch), 0.15)
    return {"torch": lambda: perturb_reference(x, sigma, 1, 0, m, "gaussian"),
            "cpp": lambda: perturb.perturb(x, sigma, 1, 0, m, "gaussian")}


def accumulate_variants(batch: int, shape: tuple[int, ...], m: int) -> dict:
    n = batch * torch.Size(shape).numel()
    chunk = torch.randn(m, n)
    states = {name: StreamingStats.empty(n) for name in ("torch", "cpp")}
    return {"torch": lambda: accumulate_reference(states["torch"], chunk),
            "cpp": lambda: accumulate.accumulate(states["cpp"], chunk)}


def sampling_variants(batch: int, shape: tuple[int, ...], m: int, per_pass: int) -> dict:
    x = torch.rand(batch, *shape)
    sigma = torch.full((1, batch), 0.15)

    def draw(design: str):
        def run() -> None:
            for start in range(0, m, per_pass):
                perturb.perturb(x, sigma, 1, start, min(per_pass, m - start), "gaussian",
                                sampling=design)
        return run
    return {design: draw(design) for design in DESIGNS}


def sampling_table(repeats: int, shapes: list[tuple[int, ...]], batches: list[int]) -> None:
    print(f"# C++ perturb per sampling design (CPU): {machine()}; m = {M}, "
          f"median of {repeats} interleaved runs, ns per drawn element")
    print("| input | B | per pass | iid | antithetic | stratified | stratified / iid |")
    print("|---|---|---|---|---|---|---|")
    for shape in shapes:
        for batch in batches:
            elements = M * batch * torch.Size(shape).numel()
            for per_pass in SAMPLING_PASSES:
                t = interleaved_medians(sampling_variants(batch, shape, M, per_pass), repeats)
                ns = {d: t[d] / elements * 1e9 for d in DESIGNS}
                print(f"| {'x'.join(map(str, shape))} | {batch} | {per_pass} | "
                      + " | ".join(f"{ns[d]:.1f}" for d in DESIGNS)
                      + f" | {ns['stratified'] / ns['iid']:.1f} |", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="32x32 only, 3 repeats")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--sampling", action="store_true",
                        help="ns per element of each sampling design instead")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's own choice)")
    parser.add_argument("--batches", type=int, nargs="+", default=BATCHES,
                        help="batch sizes B of --sampling (default: 1 8)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if not extension.has_ops():
        raise SystemExit(f"the C++ op is not available: {extension.why_no_ops()}")
    repeats = 3 if args.quick else args.repeats
    if args.sampling:
        sampling_table(repeats, SAMPLING_SHAPES[:1] if args.quick else SAMPLING_SHAPES,
                       args.batches)
        return
    shapes = SHAPES[:1] if args.quick else SHAPES
    print(f"# Kernel ops (CPU): {machine()}; m = {M}, median of {repeats} interleaved runs")
    print("| op | B | input | torch (ms) | cpp (ms) | speedup |")
    print("|---|---|---|---|---|---|")
    for op, make in (("perturb", perturb_variants), ("accumulate", accumulate_variants)):
        for shape in shapes:
            for batch in BATCHES:
                # The 224x224 reference perturb holds ~4 GB of int64 temporaries: fewer repeats.
                reps = max(3, repeats // 2) if shape[-1] > 64 and op == "perturb" else repeats
                t = interleaved_medians(make(batch, shape, M), reps)
                print(f"| {op} | {batch} | {'x'.join(map(str, shape))} | "
                      f"{t['torch'] * 1e3:.1f} | {t['cpp'] * 1e3:.2f} | "
                      f"{t['torch'] / t['cpp']:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
