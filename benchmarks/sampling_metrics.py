"""Do sampling designs of the METRICS' perturbations lower their seed-to-seed spread?

``python -m benchmarks.sampling_metrics [--seeds 20]``: ``avg_sensitivity``, ``infidelity`` and
``sensitivity_max`` (Captum's formulas, as :mod:`smoothkern.metrics` computes them) of saliency
maps (input gradient of the true class) of the bundled digits CNN and of the tabular MLP of
:mod:`benchmarks.sampling_error` (10 held-out examples each), at equal ``n_perturb_samples``,
with the perturbations drawn i.i.d., as antithetic pairs or as the nested Latin hypercube over
the perturbation index (the noise contract's draws of example b, sample j, element e, from the
perturb op's ``sampling=``). Sensitivity: uniform in the L∞ ball of radius ``level × range``
(Captum's default law); infidelity: Gaussian perturbations I of σ = ``level × range`` and
``x − I`` (Yeh et al.). ``range`` is the median over the examples of max x_b − min x_b.

Every design nests (a prefix of n perturbations is the design at n), so each seed draws 64
perturbations once and the metrics at n = 10, 16, 32, 64 are read from its prefixes; the
per-perturbation terms are checked against :func:`smoothkern.metrics.avg_sensitivity`,
``sensitivity_max`` and ``infidelity`` called with the same perturbations.

Spread: per example the standard deviation over ``--seeds`` seeds, divided by the i.i.d. mean
(a relative spread), averaged over examples. Shift: the design's mean over seeds minus
i.i.d.'s, relative to i.i.d.'s. Prints markdown tables.
"""

from __future__ import annotations

import argparse
import math

import torch
from torch import Tensor, nn

from smoothkern.metrics import avg_sensitivity, infidelity, sensitivity_max
from smoothkern.noise.sampling import Sampling
from smoothkern.ops.perturb import perturb

from .common import machine
from .sampling_error import add_threads_option, trained_models

NS = (10, 16, 32, 64)
METRICS = ("avg_sensitivity", "infidelity", "sensitivity_max")


def design_noise(seed: int, batch: int, n: int, shape: torch.Size, noise: str,
                 sampling: Sampling) -> Tensor:
    """Unit-variance draws z(seed, b, j, e) for rows ``b·n + j`` (the metrics' row order in one
    chunk): Tensor[batch·n, *shape], by the library's perturb op on x = 0, σ = 1."""
    zero = torch.zeros(batch, *shape)
    rows = perturb(zero, torch.ones(1, batch), seed, 0, n, noise, sampling=sampling)
    return rows.view(n, batch, *shape).transpose(0, 1).reshape(batch * n, *shape)


def saliency(model: nn.Module, inputs: Tensor | tuple[Tensor, ...], target: Tensor) -> Tensor:
    """Input gradients of ``target`` (an explanation function as the metrics call it)."""
    x = (inputs[0] if isinstance(inputs, tuple) else inputs).detach().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(model(x).gather(1, target.view(-1, 1)).sum(), x)
    return grad


class Perturbations:
    """One seed's and design's perturbations of B examples: the ball (sensitivity) and the
    Gaussian (infidelity), n per example, rows ``b·n + j``, as perturb_funcs."""

    def __init__(self, x: Tensor, scale: float, seed: int, n: int, sampling: Sampling) -> None:
        batch, shape = x.shape[0], x.shape[1:]
        self.ball_noise = (scale / math.sqrt(3.0)) * design_noise(seed, batch, n, shape,
                                                                   "uniform", sampling)
        self.gauss_noise = scale * design_noise(seed, batch, n, shape, "gaussian", sampling)

    def ball(self, inputs: Tensor) -> Tensor:
        return inputs + self.ball_noise

    def gaussian(self, inputs: Tensor) -> tuple[Tensor, Tensor]:
        return self.gauss_noise, inputs - self.gauss_noise


def terms(model: nn.Module, x: Tensor, y: Tensor, p: Perturbations, n: int
          ) -> tuple[Tensor, Tensor]:
    """Per perturbation (Tensor[B, n] each): the normalised explanation change (sensitivity)
    and the squared infidelity term (Iᵀ Φ(x) − (f(x) − f(x − I)))²."""
    batch = x.shape[0]
    rows, target = x.repeat_interleave(n, dim=0), y.repeat_interleave(n)
    clean = saliency(model, x, y).flatten(1)
    moved = saliency(model, p.ball(rows), target).flatten(1)
    change = (clean.repeat_interleave(n, dim=0) - moved).norm(dim=1).view(batch, n)
    change = change / clean.norm(dim=1, keepdim=True).clamp_min(1e-30)
    with torch.no_grad():
        f_x = model(x).gather(1, y.view(-1, 1)).view(batch, 1)
        perturbation, perturbed = p.gaussian(rows)
        f_moved = model(perturbed).gather(1, target.view(-1, 1)).view(batch, n)
    predicted = (clean.repeat_interleave(n, dim=0) * perturbation.flatten(1)).sum(1)
    return change, (predicted.view(batch, n) - (f_x - f_moved)) ** 2


def check_against_the_library(model: nn.Module, x: Tensor, y: Tensor, scale: float) -> None:
    """The per-perturbation terms reproduce the library's metrics (n = 10, one design)."""
    n = 10
    p = Perturbations(x, scale, 0, n, Sampling.STRATIFIED)
    change, infid = terms(model, x, y, p, n)
    explain = lambda inputs, target: saliency(model, inputs, target)  # noqa: E731
    kw = dict(n_perturb_samples=n, target=y)
    clean = saliency(model, x, y)
    for got, want in ((avg_sensitivity(explain, x, p.ball, **kw), change.mean(1)),
                      (sensitivity_max(explain, x, p.ball, **kw), change.max(1).values),
                      (infidelity(model, p.gaussian, x, clean, **kw), infid.mean(1))):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def run(name: str, model: nn.Module, x: Tensor, y: Tensor, levels: list[float], seeds: int
        ) -> dict[tuple, tuple[float, float]]:
    """{(model, level, metric, n, design): (relative spread, relative shift of the mean)}."""
    span = float((x.flatten(1).max(1).values - x.flatten(1).min(1).values).median())
    table = {}
    for level in levels:
        check_against_the_library(model, x, y, level * span)
        values: dict[tuple, list[Tensor]] = {}
        for sampling in Sampling:
            for seed in range(seeds):
                p = Perturbations(x, level * span, seed, max(NS), sampling)
                change, infid = terms(model, x, y, p, max(NS))
                for n in NS:
                    for metric, value in (("avg_sensitivity", change[:, :n].mean(1)),
                                          ("sensitivity_max", change[:, :n].max(1).values),
                                          ("infidelity", infid[:, :n].mean(1))):
                        values.setdefault((metric, n, sampling), []).append(value.double())
        for metric in METRICS:
            for n in NS:
                iid = torch.stack(values[metric, n, Sampling.IID])
                for sampling in Sampling:
                    v = torch.stack(values[metric, n, sampling])
                    spread = float((v.std(0) / iid.mean(0).abs()).mean())
                    shift = float(((v.mean(0) - iid.mean(0)) / iid.mean(0).abs()).mean())
                    table[name, level, metric, n, sampling.value] = (spread, shift)
    return table


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--levels", type=float, nargs="+", default=[0.02, 0.1])
    add_threads_option(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(machine())
    models = trained_models()
    table = {}
    for name, model, x, y in models:
        table.update(run(name, model, x, y, args.levels, args.seeds))
    for metric in METRICS:
        print(f"\n### {metric}\n")
        print("| model | level | n | iid spread | antithetic / iid | stratified / iid | "
              "antithetic shift | stratified shift |")
        print("|---|---|---|---|---|---|---|---|")
        for name, *_ in models:
            for level in args.levels:
                for n in NS:
                    (iid, _), (anti, anti_shift), (strat, strat_shift) = (
                        table[name, level, metric, n, s.value] for s in Sampling)
                    print(f"| {name} | {level} | {n} | {iid:.4f} | {anti / iid:.2f} | "
                          f"{strat / iid:.2f} | {anti_shift:+.3f} | {strat_shift:+.3f} |")


if __name__ == "__main__":
    main()
