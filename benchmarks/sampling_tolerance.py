"""Does ``tolerance=`` stop where it says, under each sampling design?

    python -m benchmarks.sampling_tolerance [--seeds 8] [--tolerance 0.05]

The tabular MLP of :mod:`benchmarks.sampling_error` (10 held-out rows), saliency maps with
``tolerance=`` and a cap of 4 096 samples, against a 16 384-sample i.i.d. mean of another seed.
Reports the RMS over examples and seeds of the achieved relative L2 error (the tolerance asks
‖sem_b‖ ≤ tolerance · ‖mean_b‖, so about ``tolerance`` is right), the share of maps above the
tolerance and above twice it, and the mean samples used.
"""

from __future__ import annotations

import argparse

import torch

import smoothkern as sk

from .common import machine
from .sampling_error import tabular_mlp

DESIGNS = ("iid", "antithetic", "stratified")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--tolerance", type=float, default=0.05)
    parser.add_argument("--levels", type=float, nargs="+", default=[0.15, 0.5])
    args = parser.parse_args()
    print(machine())
    torch.manual_seed(0)
    model, x, y = tabular_mlp()
    tol = args.tolerance
    print(f"| noise | sampling | RMS error (tolerance {tol}) | share > {tol} | share > {2 * tol} "
          "| mean samples |")
    print("|---|---|---|---|---|---|")
    for level in args.levels:
        reference = sk.smooth_grad(model, x, y, n_samples=16384, noise_level=level, seed=999)
        for design in DESIGNS:
            errors, counts = [], []
            for seed in range(args.seeds):
                out = sk.smooth_grad(model, x, y, n_samples=4096, noise_level=level, seed=seed,
                                     sampling=design, tolerance=tol,
                                     aggregate=("mean", "count"))
                errors.append((out["mean"] - reference).norm(dim=-1).view(-1)
                              / reference.norm(dim=-1).view(-1))
                counts.append(out["count"].float().view(-1))
            e, c = torch.cat(errors), torch.cat(counts)
            print(f"| {level} | {design} | {float(e.square().mean().sqrt()):.3f} | "
                  f"{float((e > tol).float().mean()):.2f} | "
                  f"{float((e > 2 * tol).float().mean()):.2f} | {float(c.mean()):.0f} |",
                  flush=True)


if __name__ == "__main__":
    main()
