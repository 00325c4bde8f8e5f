"""noise_grad(weight_sampling=): the sampling designs over the model draws. "iid" is the draws of
before, bit for bit; the designs' draws are the reference's (sampled_noise with the draw as the
sample index), nest by powers of two, never depend on the passes, and the maps equal a loop over
drawn model copies."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_resnet
from torch import Tensor, nn

import smoothkern as sk
from smoothkern.core.stats import direct_statistics
from smoothkern.noise.sampling import sampled_noise
from smoothkern.noise.sampling_error import DesignError
from smoothkern.noise.weights import WeightDraws, drawn_model, weight_key
from smoothkern.ops import backends as registry
from smoothkern.ops import extension

DESIGNS = ("antithetic", "stratified")
NO_CPP = pytest.mark.skipif(not extension.has_ops(), reason="the C++ op is not built")
KERNEL_SETS = [pytest.param("cpp", marks=NO_CPP), "torch"]
ALL = ("mean", "abs", "sq", "var", "geomean")


@pytest.fixture(scope="module")
def resnet():
    return tiny_resnet(classes=5)


@pytest.fixture(scope="module")
def images():
    return torch.rand(2, 3, 9, 7, generator=torch.Generator().manual_seed(1))


def gradient(model: nn.Module, x: Tensor, target: Tensor) -> Tensor:
    leaf = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(leaf).gather(1, target.view(-1, 1)).sum(), leaf)
    return grad


def loop_reference(model, x, target, *, n_models, weight_sampling, n_samples=1, stdev=0.0,
                   sampling="iid", weight_noise=0.2, seed=0, aggregates=ALL):
    """One deep copy per model draw (drawn_model: the pure-torch reference of the draws), one
    attribution per pass; sample t = d·n_samples + i takes input sample t."""
    samples = []
    for d in range(n_models):
        copied = drawn_model(model, d, weight_noise=weight_noise, seed=seed,
                             sampling=weight_sampling)
        for i in range(n_samples):
            sigma = torch.full((1, x.shape[0]), stdev)
            noisy = sk.perturb_reference(x, sigma, seed, d * n_samples + i, 1,
                                         sampling=sampling)
            samples.append(gradient(copied, noisy, target))
    stacked = torch.stack(samples)
    out = direct_statistics(stacked, aggregates, 1e-10)
    error = DesignError(weight_sampling, stacked.shape[1:])
    error.update(stacked.double(), 0)
    out["sem"] = error.standard_error()
    return out


def close(got, want, names):
    for name in names:
        torch.testing.assert_close(got[name].double(), want[name].double(), rtol=1e-4,
                                   atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")


# ----------------------------------------------------------------------------------------------
# the draws


@pytest.mark.parametrize("kernels", KERNEL_SETS)
def test_iid_is_the_default_and_the_draws_of_before(resnet, images, kernels):
    perturb = registry.resolve(kernels, "cpu").perturb
    plain = WeightDraws(resnet, 0.2, "multiplicative", seed=3, perturb=perturb).stacked(0, 4)
    iid = WeightDraws(resnet, 0.2, "multiplicative", seed=3, perturb=perturb,
                      sampling="iid").stacked(0, 4)
    for name, value in plain.items():
        assert torch.equal(iid[name], value)
    kw = dict(n_models=4, aggregate=("mean", "var"), seed=5, backend=kernels)
    default = sk.noise_grad(resnet, images, 1, **kw)
    named = sk.noise_grad(resnet, images, 1, weight_sampling="iid", **kw)
    for name in default:
        assert torch.equal(named[name], default[name])


@pytest.mark.parametrize("sampling", DESIGNS)
@pytest.mark.parametrize("kernels", KERNEL_SETS)
def test_design_draws_are_the_reference_whatever_the_ranges(resnet, kernels, sampling):
    perturb = registry.resolve(kernels, "cpu").perturb
    draws = WeightDraws(resnet, 0.3, "multiplicative", seed=4, perturb=perturb,
                        sampling=sampling)
    together = draws.stacked(0, 9)
    draws.release()
    first = draws.stacked(0, 4)
    draws.release()                          # a fresh range: drawn again, not a view
    rest = draws.stacked(4, 5)
    for p, (name, w) in enumerate(resnet.named_parameters()):
        assert torch.equal(torch.cat([first[name], rest[name]]), together[name])
        z = sampled_noise(weight_key(4), torch.tensor(p), torch.arange(9).view(9, 1),
                          torch.arange(w.numel()).view(1, -1), "gaussian", sampling)
        want = w.detach().reshape(1, -1) + (0.3 * w.detach().reshape(1, -1)) * z
        if kernels == "torch":
            assert torch.equal(together[name].reshape(9, -1), want)
        else:   # the C++ op's inverse normal CDF: within one float32 rounding of the reference
            torch.testing.assert_close(together[name].reshape(9, -1), want, rtol=1e-5,
                                       atol=1e-7)
    for d in (0, 5):
        model = dict(drawn_model(resnet, d, weight_noise=0.3, seed=4,
                                 sampling=sampling).named_parameters())
        for name, value in together.items():
            torch.testing.assert_close(value[d], model[name].detach(), rtol=1e-5, atol=1e-7)


def test_stratified_draws_are_made_ahead_within_the_call_and_the_byte_cap(resnet, monkeypatch):
    # One at a time, each draw walks its elements' parent chains; made together they share them.
    from smoothkern.noise.weights import draws as draws_module

    calls, draw = [], WeightDraws._draw

    def counting(self, param, start, count):
        calls.append((start, count))
        return draw(self, param, start, count)

    monkeypatch.setattr(WeightDraws, "_draw", counting)
    params = len(list(resnet.parameters()))
    ahead = WeightDraws(resnet, 0.2, "multiplicative", seed=3, sampling="stratified", total=10)
    one_by_one = [ahead.stacked(d, 1) for d in range(10)]
    assert calls == [(0, 10)] * params                     # one call, bounded by the total
    alone = WeightDraws(resnet, 0.2, "multiplicative", seed=3, sampling="stratified")
    for d, got in enumerate(one_by_one):
        for p in alone.parameters:                         # draw d made by itself
            want = draw(alone, p, d, 1)
            assert got[p.name].shape == want.shape and torch.equal(got[p.name], want)
    calls.clear()
    monkeypatch.setattr(draws_module, "DRAW_AHEAD_BYTES", ahead.bytes_per_draw * 3)
    WeightDraws(resnet, 0.2, "multiplicative", seed=3, sampling="stratified").stacked(0, 1)
    assert calls == [(0, 3)] * params                      # three draws' bytes held at most
    calls.clear()
    WeightDraws(resnet, 0.2, "multiplicative", seed=3, sampling="antithetic").stacked(0, 1)
    assert calls == [(0, 1)] * params                      # other designs draw what is asked


def test_a_kernel_set_without_sampling_draws_the_design_with_the_reference(resnet):
    def users_perturb(x, sigma, seed, start, count, noise, example_index=None):
        return sk.perturb_reference(x, sigma, seed, start, count, noise,
                                    example_index=example_index)

    got = WeightDraws(resnet, 0.2, "multiplicative", seed=1, perturb=users_perturb,
                      sampling="stratified").stacked(0, 4)
    want = WeightDraws(resnet, 0.2, "multiplicative", seed=1,
                       sampling="stratified").stacked(0, 4)
    for name, value in want.items():
        assert torch.equal(got[name], value)


@pytest.mark.parametrize("kernels", KERNEL_SETS)
def test_every_power_of_two_prefix_of_a_weights_draws_holds_each_stratum_once(kernels):
    perturb = registry.resolve(kernels, "cpu").perturb
    model = nn.Linear(6, 3)
    with torch.no_grad():                   # zero weights, additive σ = 1: a draw is ε itself
        model.weight.zero_()
        model.bias.zero_()
    draws = WeightDraws(model, 1.0, "additive", seed=9, perturb=perturb, sampling="stratified")
    head = draws.stacked(0, 5)
    draws.release()
    tail = draws.stacked(5, 59)                  # two ranges: the prefix is the same design
    for name, value in head.items():
        z = torch.cat([value, tail[name]]).reshape(64, -1).double()
        u = torch.special.ndtr(z)
        for k in range(7):
            strata = (u[:2**k] * 2**k).floor().long().sort(dim=0).values
            expected = torch.arange(2**k).view(-1, 1).expand_as(strata)
            assert torch.equal(strata, expected), (name, k)
    anti = WeightDraws(model, 1.0, "additive", seed=9, perturb=perturb,
                       sampling="antithetic").stacked(0, 6)
    for value in anti.values():
        assert torch.equal(value[1::2], -value[0::2])


# ----------------------------------------------------------------------------------------------
# noise_grad against the loop over drawn copies


@pytest.mark.parametrize("sampling", DESIGNS)
@pytest.mark.parametrize("backend, per_pass", [pytest.param("cpp", 3, marks=NO_CPP),
                                               ("torch", 8), ("torch", 1), ("loop", None)])
def test_noisegrad_equals_the_loop_over_drawn_copies(resnet, images, sampling, backend,
                                                     per_pass):
    target = torch.tensor([1, 3])
    got = sk.noise_grad(resnet, images, target, n_models=8, weight_sampling=sampling,
                        aggregate=ALL + ("sem",), seed=5, backend=backend,
                        samples_per_pass=per_pass)
    want = loop_reference(resnet, images, target, n_models=8, weight_sampling=sampling, seed=5)
    close(got, want, ALL + ("sem",))


@pytest.mark.parametrize("per_pass", [1, 2, 3, 8])
def test_fusiongrad_takes_both_designs_whatever_the_passes(resnet, images, per_pass):
    """4 draws × 2 samples: stratified weights, antithetic inputs; passes within one draw (1),
    of one draw (2), straddling draws (3), of all draws (8)."""
    target = torch.tensor([0, 2])
    got = sk.noise_grad(resnet, images, target, n_models=4, n_samples=2, stdevs=0.1,
                        sampling="antithetic", weight_sampling="stratified", seed=2,
                        aggregate=ALL, samples_per_pass=per_pass)
    want = loop_reference(resnet, images, target, n_models=4, n_samples=2, stdev=0.1,
                          sampling="antithetic", weight_sampling="stratified", seed=2)
    close(got, want, ALL)


def test_antithetic_pairs_cancel_a_linear_models_weight_noise():
    # the gradient of logit c is the drawn row W[c] (1 + s·ε): a pair's mean is W[c] exactly
    model = nn.Linear(5, 3).eval()
    x, target = torch.randn(2, 5), torch.tensor([0, 2])
    got = sk.noise_grad(model, x, target, n_models=2, weight_sampling="antithetic")
    torch.testing.assert_close(got, model.weight.detach()[target], rtol=1e-6, atol=1e-7)


def test_stratified_draws_lower_the_error_of_a_linear_models_mean():
    model = nn.Linear(5, 3).eval()
    x, target = torch.randn(2, 5), torch.tensor([0, 2])
    exact = model.weight.detach()[target]

    def rms(design: str) -> float:
        errors = [sk.noise_grad(model, x, target, n_models=16, weight_sampling=design,
                                seed=s) - exact for s in range(8)]
        return float(torch.stack(errors).square().mean().sqrt())

    assert rms("stratified") < 0.3 * rms("iid")


# ----------------------------------------------------------------------------------------------
# refusals


@pytest.mark.parametrize("kwargs, match", [
    (dict(weight_sampling="sobol"), "unknown weight_sampling 'sobol'"),
    (dict(weight_sampling=1), "unknown weight_sampling"),
    (dict(weight_sampling="stratified", n_samples=2, noise_level=0.1, aggregate="sem"),
     "needs n_samples=1"),
])
def test_bad_weight_sampling_is_refused_before_any_work(resnet, images, kwargs, match):
    with pytest.raises(ValueError, match=match):
        sk.noise_grad(resnet, images, **kwargs)
