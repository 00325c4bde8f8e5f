"""Sampling designs on the bundled ResNet18 photos (random weights: a report, no target).

    python -m benchmarks.sampling_photos [--size 64] [--m 64] [--seeds 3]

scikit-image's photos through a torchvision ResNet18 with random weights (no download), the
class it predicts explained. For each noise level and aggregate: the relative L2 error of each
design at m to an i.i.d. reference of 8·m samples of another seed (its own error removed in
quadrature, as in ``smoothkern bench --samples-saved``), averaged over seeds; printed as a
markdown table of the stratified and antithetic error over the i.i.d. error.
"""

from __future__ import annotations

import argparse

import torch

import smoothkern as sk
from smoothkern.bench.samples_saved import REFERENCE_FACTOR
from smoothkern.data import load_photos
from smoothkern.models import imagenet_model

from .common import machine

AGGREGATES = ("mean", "abs", "sq", "var", "geomean")
DESIGNS = ("iid", "antithetic", "stratified")


def errors(model, x, target, level: float, m: int, seeds: int) -> dict[str, dict[str, float]]:
    """{design: {aggregate: mean relative error at m}}."""
    kw = dict(noise_level=level, aggregate=AGGREGATES)
    ref = sk.smooth_grad(model, x, target, n_samples=REFERENCE_FACTOR * m, seed=2**63, **kw)
    out = {}
    for design in DESIGNS:
        total = dict.fromkeys(AGGREGATES, 0.0)
        for seed in range(seeds):
            got = sk.smooth_grad(model, x, target, n_samples=m, sampling=design, seed=seed,
                                 **kw)
            for name in AGGREGATES:
                diff = (got[name] - ref[name]).flatten(1).norm(dim=1)
                total[name] += float((diff / ref[name].flatten(1).norm(dim=1)).mean()) / seeds
        out[design] = total
    # the reference's own error, removed as samples_saved does
    floor = {a: out["iid"][a] ** 2 / (REFERENCE_FACTOR + 1) for a in AGGREGATES}
    return {d: {a: max(0.0, e[a] ** 2 - floor[a]) ** 0.5 for a in AGGREGATES}
            for d, e in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--m", type=int, default=64)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--levels", type=float, nargs="+", default=[0.05, 0.15, 0.5])
    args = parser.parse_args()
    torch.manual_seed(0)
    model = imagenet_model("resnet18").eval()
    x = load_photos(size=args.size)
    with torch.no_grad():
        target = model(x).argmax(1)
    print(machine())
    print(f"ResNet18 (random weights), {len(x)} photos at {args.size}², m = {args.m}, "
          f"{args.seeds} seeds, reference 8·m i.i.d.")
    print("| noise | design | " + " | ".join(AGGREGATES) + " |")
    print("|---|---|" + "---|" * len(AGGREGATES))
    for level in args.levels:
        e = errors(model, x, target, level, args.m, args.seeds)
        print(f"| {level} | iid (error) | " + " | ".join(f"{e['iid'][a]:.3f}"
                                                       for a in AGGREGATES) + " |")
        for design in DESIGNS[1:]:
            print(f"| {level} | {design} / iid | " + " | ".join(
                f"{e[design][a] / max(e['iid'][a], 1e-12):.2f}" for a in AGGREGATES) + " |")


if __name__ == "__main__":
    main()
