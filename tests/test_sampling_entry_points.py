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
