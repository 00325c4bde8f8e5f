"""NoiseGrad's error against the number of model draws for each design of the WEIGHT draws.

``python -m benchmarks.sampling_weights [--seeds 6] [--reference 2048]``: saliency maps (input
gradient of the true class) averaged over model draws of the bundled digits CNN and of the
tabular MLP of :mod:`benchmarks.sampling_error` (10 held-out examples each). Every parameter
element of draw d is ``w · (1 + s · ε)`` (multiplicative, s = ``--levels``) with ε the standard
draw of (key = seed XOR WEIGHT_KEY_MIX, example = parameter p, sample = d, element = j) under a
design: i.i.d. (what ``noise_grad`` draws), antithetic pairs over d, or the nested Latin
hypercube over d per (p, j). Error: the relative L2 distance of an aggregate over the first m
draws to the same aggregate over ``--reference`` i.i.d. draws of another seed (16 times as many
for the MLP), with the reference's own error removed in quadrature, averaged over the examples
and ``--seeds`` seeds.
Also checks the design-aware standard error (:class:`smoothkern.noise.sampling_error.DesignError`,
what ``noise_grad``'s "sem" reports under a weight design) of the mean map at m = 64 against the
observed seed-to-seed error. Prints markdown tables (the error of i.i.d., each design's over
i.i.d.'s, and the standard error predicted over observed).
"""

from __future__ import annotations

import argparse

import torch
from torch import Tensor, nn

from smoothkern.noise.sampling import Sampling
from smoothkern.noise.sampling_error import DesignError
from smoothkern.noise.weights import weight_key
from smoothkern.ops.perturb import perturb

from .common import machine
from .sampling_error import AGGREGATES, add_threads_option, aggregate, trained_models

MS = (4, 8, 16, 32, 50, 64)
REFERENCE_SEED = 10**6


def weight_draws(seed: int, params: dict[str, Tensor], start: int, count: int,
                 sampling: Sampling) -> dict[str, Tensor]:
    """{name: Tensor[count, numel]}: standard draws ``start .. start+count-1`` of every parameter
    element (p = the parameter's position in ``named_parameters()``, as WeightDraws keys it),
    drawn by the library's perturb op on x = 0, σ = 1 (the C++ op where it is built)."""
    out = {}
    for p, (name, value) in enumerate(params.items()):
        zero = torch.zeros(1, value.numel())
        out[name] = perturb(zero, torch.ones(1, 1), weight_key(seed), start, count, "gaussian",
                            example_index=torch.tensor([p]), sampling=sampling)
    return out


def saliency_per_draw(model: nn.Module, params: dict[str, Tensor], z: dict[str, Tensor],
                      level: float, x: Tensor, y: Tensor) -> Tensor:
    """Input gradients [count, B, N] of the true class on each drawn weight set
    (float32 ``w + (level · w) · ε``, as WeightDraws draws them)."""
    count = next(iter(z.values())).shape[0]
    out = []
    for d in range(count):
        drawn = {name: w + (level * w) * z[name][d].view(w.shape) for name, w in params.items()}
        rows = x.clone().requires_grad_(True)
        logits = torch.func.functional_call(model, drawn, (rows,))
        (grad,) = torch.autograd.grad(logits.gather(1, y.view(-1, 1)).sum(), rows)
        out.append(grad.reshape(x.shape[0], -1).double())
    return torch.stack(out)


def run(name: str, model: nn.Module, x: Tensor, y: Tensor, levels: list[float], seeds: int,
        reference: int) -> tuple[dict[tuple, float], dict[tuple, float]]:
    """{(model, level, design, aggregate, m): error}, the reference's error removed, and
    {(model, level, design): predicted / observed standard error of the mean map at m = 64}."""
    params = {n: p.detach() for n, p in model.named_parameters()}
    m_max = max(MS)
    refs = {}
    for level in levels:
        parts = [saliency_per_draw(model, params,
                                   weight_draws(REFERENCE_SEED, params, s, m_max, Sampling.IID),
                                   level, x, y) for s in range(0, reference, m_max)]
        ref_a = torch.cat(parts)
        refs[level] = {agg: aggregate(ref_a, agg) for agg in AGGREGATES}
    raw: dict[tuple, list[float]] = {}
    sem_parts: dict[tuple, list[tuple[Tensor, Tensor]]] = {}
    for sampling in Sampling:
        for seed in range(seeds):
            z = weight_draws(seed, params, 0, m_max, sampling)   # shared by the levels
            for level in levels:
                a = saliency_per_draw(model, params, z, level, x, y)
                tracker = DesignError(sampling, a.shape[1:])
                tracker.update(a[:64], 0)
                sem_parts.setdefault((name, level, sampling.value), []).append(
                    (tracker.standard_error().pow(2).sum(1), a[:64].mean(0)))
                for m in MS:
                    for agg in AGGREGATES:
                        ref = refs[level][agg]
                        sq = ((aggregate(a[:m], agg) - ref).norm(dim=1) / ref.norm(dim=1)) ** 2
                        raw.setdefault((name, level, sampling.value, agg, m), []).append(
                            float(sq.mean()))
    # mean squared relative error; the reference's share (i.i.d.'s at m times m / reference)
    # removed in quadrature, as benchmarks.sampling_photos does
    table = {}
    for key, values in raw.items():
        mse = sum(values) / len(values)
        name_, level, _, agg, m = key
        iid = sum(raw[name_, level, "iid", agg, m]) / seeds
        table[key] = max(0.0, mse - iid * m / (reference + m)) ** 0.5
    # the observed error of the mean map: its spread over the seeds (the designs are unbiased)
    sem = {}
    for key, parts in sem_parts.items():
        predicted = torch.stack([p for p, _ in parts]).mean(0).sqrt()
        observed = torch.stack([mu for _, mu in parts]).var(0).sum(1).sqrt()
        sem[key] = float((predicted / observed).mean())
    return table, sem


def cost(repeats: int) -> None:
    """Seconds of ``noise_grad`` on the digits CNN, 64 models, under each weight design
    (interleaved medians)."""
    import functools

    import smoothkern as sk
    from smoothkern.data import digit_examples
    from smoothkern.models import digits_cnn

    from .common import interleaved_medians

    model = digits_cnn().eval()
    x, y = digit_examples()
    print("| B | iid s | antithetic s | stratified s |")
    print("|---|---|---|---|")
    for batch in (1, 10):
        calls = {s.value: functools.partial(sk.noise_grad, model, x[:batch], y[:batch],
                                            n_models=64, weight_sampling=s.value)
                 for s in Sampling}
        times = interleaved_medians(calls, repeats)
        print(f"| {batch} | " + " | ".join(f"{times[s.value]:.3f}" for s in Sampling) + " |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cost", type=int, default=0, metavar="REPEATS",
                        help="only time noise_grad under each design (REPEATS interleaved)")
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--reference", type=int, default=2048)
    parser.add_argument("--levels", type=float, nargs="+", default=[0.1, 0.2, 0.4])
    add_threads_option(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(machine())
    if args.cost:
        cost(args.cost)
        return
    table, sem = {}, {}
    # the MLP's passes are cheap: a larger reference keeps its error below the designs'
    models = [(name, model, x, y, args.reference * (16 if name == "tabular MLP" else 1))
              for name, model, x, y in trained_models()]
    for name, model, x, y, reference in models:
        errors, ratios = run(name, model, x, y, args.levels, args.seeds, reference)
        table.update(errors)
        sem.update(ratios)
    for agg in AGGREGATES:
        print(f"\n### {agg}\n")
        print("| model | weight noise | m | iid (error) | antithetic / iid | stratified / iid |")
        print("|---|---|---|---|---|---|")
        for name, *_ in models:
            for level in args.levels:
                for m in MS:
                    iid, anti, strat = (table[name, level, s.value, agg, m] for s in Sampling)
                    print(f"| {name} | {level} | {m} | {iid:.4f} | {anti / iid:.2f} | "
                          f"{strat / iid:.2f} |")
    print("\n### standard error of the mean map at m = 64: predicted (DesignError, RMS over "
          "seeds) over observed (the spread of the mean map over the seeds), mean over "
          "examples\n")
    print("| model | weight noise | iid | antithetic | stratified |")
    print("|---|---|---|---|---|")
    for name, *_ in models:
        for level in args.levels:
            iid, anti, strat = (sem[name, level, s.value] for s in Sampling)
            print(f"| {name} | {level} | {iid:.2f} | {anti:.2f} | {strat:.2f} |")


if __name__ == "__main__":
    main()
