"""sampling= on every entry point that draws input or layer noise: each design reaches the
noise source the same way (one builder), equals the loop reference, and "iid" is the draws of
before, bit for bit."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_resnet
from torch import nn

import smoothkern as sk
import smoothkern.captum as skc

X = torch.rand(3, 3, 6, 6, generator=torch.Generator().manual_seed(4))
DESIGNS = ("iid", "antithetic", "stratified")


@pytest.fixture(scope="module")
def model():
    return tiny_resnet()


def close(got, want):
    for name in want:
        torch.testing.assert_close(got[name], want[name].to(got[name].dtype), rtol=1e-4,
                                   atol=1e-6)


@pytest.mark.parametrize("sampling", DESIGNS)
def test_smooth_grad_equals_the_loop_for_every_design(model, sampling):
    kw = dict(n_samples=6, sampling=sampling, aggregate=("mean", "var"), seed=2)
    close(sk.smooth_grad(model, X, 1, samples_per_pass=4, **kw),
          sk.smooth_grad(model, X, 1, backend="loop", **kw))


def test_iid_is_the_default_and_the_draws_of_before(model):
    default = sk.smooth_grad(model, X, 1, n_samples=5, seed=3)
    torch.testing.assert_close(sk.smooth_grad(model, X, 1, n_samples=5, seed=3, sampling="iid"),
                               default, rtol=0, atol=0)


def test_designs_differ_and_antithetic_pairs_cancel_a_linear_models_noise():
    lin = nn.Sequential(nn.Flatten(), nn.Linear(108, 3)).eval()
    # the input × gradient of a linear model is linear in the noise: an antithetic pair's mean
    # is the clean attribution exactly
    clean = sk.smooth_grad(lin, X, 1, n_samples=1, noise_level=0.0, method="input_x_gradient")
    pair = sk.smooth_grad(lin, X, 1, n_samples=2, sampling="antithetic",
                          method="input_x_gradient")
    torch.testing.assert_close(pair, clean, rtol=1e-5, atol=1e-6)
    iid = sk.smooth_grad(lin, X, 1, n_samples=2, method="input_x_gradient")
    assert not torch.allclose(iid, clean, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("sampling", ("antithetic", "stratified"))
def test_noise_at_a_layer_takes_the_design(model, sampling):
    kw = dict(n_samples=4, sampling=sampling, noise_at="stem", aggregate=("mean", "var"))
    close(sk.smooth_grad(model, X, 1, **kw), sk.smooth_grad(model, X, 1, backend="loop", **kw))


@pytest.mark.parametrize("sampling", ("antithetic", "stratified"))
def test_noise_grad_takes_the_design_for_its_input_noise(model, sampling):
    kw = dict(n_models=2, n_samples=4, noise_level=0.1, sampling=sampling, seed=1,
              aggregate=("mean", "var"))
    close(sk.noise_grad(model, X, 1, **kw), sk.noise_grad(model, X, 1, backend="loop", **kw))
    plain = sk.noise_grad(model, X, 1, **{**kw, "sampling": "iid"})
    assert not torch.allclose(plain["mean"], sk.noise_grad(model, X, 1, **kw)["mean"])


@pytest.mark.parametrize("sampling", ("antithetic", "stratified"))
def test_the_drop_in_takes_the_design_and_keeps_captums_draws_apart(model, sampling):
    nt = skc.NoiseTunnel(skc.Saliency(model))
    got = nt.attribute(X, target=1, nt_samples=4, stdevs=0.1, sampling=sampling, abs=False)
    want = sk.smooth_grad(model, X, 1, n_samples=4, stdevs=0.1, sampling=sampling,
                          prepare=False)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="rng='captum'"):
        nt.attribute(X, target=1, nt_samples=4, sampling=sampling, rng="captum")


@pytest.mark.parametrize("bad, error", [("sobol", ValueError), (1, ValueError)])
def test_an_unknown_design_is_refused(model, bad, error):
    with pytest.raises(error, match="sampling"):
        sk.smooth_grad(model, X, 1, n_samples=2, sampling=bad)


@pytest.mark.parametrize("sampling", ("antithetic", "stratified"))
def test_sem_is_the_designs_and_the_streaming_path_equals_the_loop(model, sampling):
    kw = dict(n_samples=8, sampling=sampling, aggregate=("mean", "sem"), seed=5)
    got = sk.smooth_grad(model, X, 1, samples_per_pass=3, **kw)
    close(got, sk.smooth_grad(model, X, 1, backend="loop", **kw))
    naive = sk.smooth_grad(model, X, 1, samples_per_pass=3, **{**kw, "aggregate": "var"})
    assert not torch.allclose(got["sem"], (naive * 8 / 7 / 8).sqrt())   # not the iid formula


def test_the_reported_error_matches_the_seed_to_seed_spread_better_than_the_iid_formula(model):
    # Stratified draws: the plain sample variance overstates the error of the mean; the
    # design's error follows the spread of the means over seeds (RMS over the map).
    m, seeds = 16, range(12)
    runs = [sk.smooth_grad(model, X[:1], 1, n_samples=m, sampling="stratified", seed=s,
                           aggregate=("mean", "sem", "var")) for s in seeds]
    means = torch.stack([r["mean"] for r in runs])
    observed = means.std(0).square().mean().sqrt()
    design = torch.stack([r["sem"] for r in runs]).square().mean().sqrt()
    naive = (torch.stack([r["var"] for r in runs]) / (m - 1)).mean().sqrt()
    assert abs(design / observed - 1) < abs(naive / observed - 1)
    assert 0.5 < design / observed < 2.0


def test_tolerance_stops_on_the_designs_error_and_each_map_equals_a_fixed_run(model):
    got = sk.smooth_grad(model, X, 1, n_samples=48, tolerance=0.1, samples_per_pass=4,
                         sampling="antithetic", aggregate=("mean", "count"))
    assert len(set(got["count"].tolist())) > 1            # the examples stopped apart
    for b, count in enumerate(got["count"].tolist()):
        fixed = sk.smooth_grad(model, X, 1, n_samples=count, samples_per_pass=4,
                               sampling="antithetic")
        torch.testing.assert_close(got["mean"][b], fixed[b], rtol=1e-5, atol=1e-7)
