"""Error against m for each sampling design (iid, antithetic, stratified), every aggregate.

``python -m benchmarks.sampling_error [--seeds 6] [--reference 4096]``: saliency maps (the input
gradient of the true class) of the bundled digits CNN (10 held-out digits) and of a tabular MLP
trained here on scikit-learn's breast-cancer data (10 held-out rows). Noise σ_b = level ×
(max x_b − min x_b), Gaussian. Error: the relative L2 distance of an aggregate over the first m
samples to the same aggregate over ``--reference`` i.i.d. samples of another seed, averaged over
the examples and ``--seeds`` seeds. Also checks the design-aware standard error
(:class:`smoothkern.noise.sampling_error.DesignError`) of the mean map against the observed
seed-to-seed error. Prints markdown tables and writes docs/figures/sampling_error.png.
"""

from __future__ import annotations

import argparse
import platform

import torch
from torch import nn

from smoothkern.data import digit_examples
from smoothkern.models import digits_cnn
from smoothkern.noise.kinds import NoiseKind
from smoothkern.noise.sampling import Sampling, _from_word, sampled_noise, stratified_prefix_bits
from smoothkern.noise.sampling_error import DesignError

MS = (4, 8, 16, 32, 50, 64)
AGGREGATES = ("mean", "abs", "sq", "var", "geomean")
EPS = 1e-10


def tabular_mlp() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A 30-64-64-2 MLP trained on standardised breast-cancer rows; 10 held-out rows."""
    from sklearn.datasets import load_breast_cancer
    data = load_breast_cancer()
    x = torch.tensor(data.data, dtype=torch.float32)
    y = torch.tensor(data.target)
    gen = torch.Generator().manual_seed(0)
    order = torch.randperm(len(y), generator=gen)
    train, test = order[:450], order[450:]
    mu, sd = x[train].mean(0), x[train].std(0)
    x = (x - mu) / sd
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(30, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(),
                          nn.Linear(64, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(300):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[train]), y[train]).backward()
        opt.step()
    model.eval()
    acc = float((model(x[test]).argmax(1) == y[test]).float().mean())
    print(f"tabular MLP held-out accuracy {acc:.3f}")
    return model, x[test[:10]], y[test[:10]]


def trained_models() -> list[tuple[str, nn.Module, torch.Tensor, torch.Tensor]]:
    """(name, model, inputs, labels) of the two trained models the sampling studies measure."""
    digits_x, digits_y = digit_examples()
    mlp, tab_x, tab_y = tabular_mlp()
    return [("digits CNN", digits_cnn().eval(), digits_x, digits_y),
            ("tabular MLP", mlp, tab_x, tab_y)]


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (errors, not times: one thread a process "
                             "oversubscribes a shared machine least)")


def draws(seed: int, batch: int, n: int, m: int, sampling: Sampling) -> torch.Tensor:
    example = torch.arange(batch).view(batch, 1)
    element = torch.arange(n).view(1, n)
    if sampling is Sampling.STRATIFIED:    # the same words as the chain, level by level
        return _from_word(stratified_prefix_bits(seed, example, element, m), NoiseKind.GAUSSIAN)
    return sampled_noise(seed, example.unsqueeze(0), torch.arange(m).view(m, 1, 1),
                         element.unsqueeze(0), "gaussian", sampling)


def saliency(model, x, y, z, sigma) -> torch.Tensor:
    """Per-sample gradients [m, B, N] for noise z [m, B, N]."""
    m, batch, n = z.shape
    out = []
    for i in range(0, m, 32):
        zz = z[i:i + 32]
        rows = (x.reshape(1, batch, n) + sigma.view(1, batch, 1) * zz).reshape(-1, *x.shape[1:])
        rows.requires_grad_(True)
        logits = model(rows)
        pick = logits.gather(1, y.repeat(zz.shape[0]).view(-1, 1)).sum()
        (grad,) = torch.autograd.grad(pick, rows)
        out.append(grad.reshape(zz.shape[0], batch, n).double())
    return torch.cat(out)


def aggregate(a: torch.Tensor, name: str) -> torch.Tensor:
    if name == "mean":
        return a.mean(0)
    if name == "abs":
        return a.abs().mean(0)
    if name == "sq":
        return (a * a).mean(0)
    if name == "var":
        return a.var(0, unbiased=False)
    return (a.abs() + EPS).log().mean(0).exp()


def rel_err(est: torch.Tensor, ref: torch.Tensor) -> float:
    return float(((est - ref).norm(dim=1) / ref.norm(dim=1)).mean())


def run(name, model, x, y, levels, seeds, reference, sem_only=False):
    batch = x.shape[0]
    n = x[0].numel()
    span = (x.reshape(batch, -1).max(1).values - x.reshape(batch, -1).min(1).values)
    table = {}
    sem_rows = []
    for level in levels:
        sigma = level * span
        ref_a = saliency(model, x, y, draws(10**6, batch, n, reference, Sampling.IID), sigma)
        refs = {agg: aggregate(ref_a, agg) for agg in AGGREGATES}
        for sampling in Sampling:
            errs = {(agg, m): [] for agg in AGGREGATES for m in ((), MS)[not sem_only]}
            means, predicted = [], []
            for seed in range(seeds):
                a = saliency(model, x, y, draws(seed, batch, n, 64 if sem_only else max(MS),
                                                sampling), sigma)
                for agg, m in errs:
                    errs[agg, m].append(rel_err(aggregate(a[:m], agg), refs[agg]))
                tracker = DesignError(sampling, (batch, n))
                tracker.update(a[:64], 0)
                predicted.append(tracker.standard_error().pow(2).sum(1))
                means.append(a[:64].mean(0))
            sem_rows.append((name, level, sampling.value,
                             *predicted_and_observed(predicted, means, refs["mean"])))
            for key, values in errs.items():
                table[(name, level, sampling.value) + key] = sum(values) / len(values)
    return table, sem_rows


def predicted_and_observed(predicted: list[torch.Tensor], means: list[torch.Tensor],
                           reference: torch.Tensor) -> tuple[float, float]:
    """Predicted and observed error of the mean map, like with like: both RMS over seeds of the
    L2 norm over the map, then averaged over the examples.

    Args:
        predicted: per seed, Tensor[B]: the squared norm of the design's standard error.
        means: per seed, Tensor[B, N]: the mean map.
        reference (Tensor[B, N]): the reference mean map.

    (A mean over seeds of the predicted norm against an RMS of the observed one, as this script
    first compared them, reads low by Jensen's inequality wherever few elements carry the error
    and the estimate has few degrees of freedom per element: the stratified one has one.)
    """
    rms_predicted = torch.stack(predicted).mean(0).sqrt()
    rms_observed = torch.stack([(mu - reference).pow(2).sum(1) for mu in means]).mean(0).sqrt()
    return float(rms_predicted.mean()), float(rms_observed.mean())


def print_sems(sems: list[tuple]) -> None:
    print("\n### standard error of the mean map at m = 64 (L2 over the map, mean over examples)\n")
    print("| model | level | sampling | predicted RMS error | observed RMS error | ratio |")
    print("|---|---|---|---|---|---|")
    for name, level, sampling, predicted, observed in sems:
        print(f"| {name} | {level} | {sampling} | {predicted:.4g} | {observed:.4g} | "
              f"{predicted / observed:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--reference", type=int, default=4096)
    parser.add_argument("--levels", type=float, nargs="+", default=[0.05, 0.15, 0.5])
    parser.add_argument("--figure", default="docs/figures/sampling_error.png")
    parser.add_argument("--sem-only", action="store_true",
                        help="only the standard-error check at m = 64 (no error tables)")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}")
    table, sems = {}, []
    for name, model, x, y in trained_models():
        t, s = run(name, model, x, y, args.levels, args.seeds, args.reference, args.sem_only)
        table.update(t)
        sems.extend(s)
    if args.sem_only:
        print_sems(sems)
        return
    models = ("digits CNN", "tabular MLP")
    for agg in AGGREGATES:
        print(f"\n### {agg}\n")
        print("| model | level | m | iid | antithetic | stratified | strat/iid |")
        print("|---|---|---|---|---|---|---|")
        for name in models:
            for level in args.levels:
                for m in MS:
                    e = [table[name, level, s.value, agg, m] for s in Sampling]
                    print(f"| {name} | {level} | {m} | {e[0]:.4f} | {e[1]:.4f} | {e[2]:.4f} | "
                          f"{e[2] / e[0]:.2f} |")
    print_sems(sems)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(len(models), len(AGGREGATES), figsize=(18, 7), sharex=True)
    mid = args.levels[len(args.levels) // 2]
    for r, name in enumerate(models):
        for c, agg in enumerate(AGGREGATES):
            ax = axes[r][c]
            for s in Sampling:
                ax.loglog(MS, [table[name, mid, s.value, agg, m] for m in MS], "o-", label=s.value)
            ax.set_title(f"{name}: {agg} (noise {mid})", fontsize=9)
            ax.set_xlabel("m")
            if c == 0:
                ax.set_ylabel("relative L2 error")
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(args.figure, dpi=110)
    print(f"\nwrote {args.figure}")


if __name__ == "__main__":
    main()
