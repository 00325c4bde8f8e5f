"""example_index: the map of example k does not depend on the batch that computes it."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_resnet

import smoothkern as sk

X = torch.rand(5, 3, 6, 6, generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope="module")
def model():
    return tiny_resnet()


@pytest.mark.parametrize("backend", ["auto", "torch", "vmap", "loop"])
def test_a_batch_of_some_examples_equals_their_rows_of_the_whole_batch(model, backend):
    kw = dict(n_samples=6, aggregate=("mean", "var"), noise="uniform", backend=backend)
    full = sk.smooth_grad(model, X, **kw)
    for index in (2, [3, 1], torch.tensor([4, 0, 2])):       # an offset, a list, a tensor
        rows = list(range(index, 5)) if isinstance(index, int) else list(
            torch.as_tensor(index).tolist())
        part = sk.smooth_grad(model, X[rows], example_index=index, **kw)
        for name in full:
            torch.testing.assert_close(part[name], full[name][rows], rtol=1e-5, atol=1e-7)
    # without indices, a sub-batch draws other noise (positions 0..B'-1)
    moved = sk.smooth_grad(model, X[[3, 1]], **kw)
    assert not torch.allclose(moved["mean"], full["mean"][[3, 1]])


def test_adaptive_counts_keep_the_callers_indices(model):
    got = sk.smooth_grad(model, X[2:], n_samples=40, tolerance=0.15, samples_per_pass=4,
                         example_index=2, aggregate=("mean", "count"))
    assert len(set(got["count"].tolist())) > 1            # the examples stopped apart
    for b, count in enumerate(got["count"].tolist()):
        fixed = sk.smooth_grad(model, X, n_samples=count, samples_per_pass=4)
        torch.testing.assert_close(got["mean"][b], fixed[2 + b], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("bad, error", [
    ([1, 2], ValueError), (torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0]), TypeError),
    (-1, ValueError), (2**32 - 2, ValueError), ("0", TypeError), (True, TypeError),
    (torch.zeros(5, 1, dtype=torch.int64), ValueError)])
def test_bad_example_indices_are_refused(model, bad, error):
    with pytest.raises(error, match="example_index"):
        sk.smooth_grad(model, X, n_samples=2, example_index=bad)


def test_the_drop_in_noise_tunnel_takes_example_index(model):
    captum_attr = pytest.importorskip("captum.attr")
    import smoothkern.captum as skc

    tunnel = skc.NoiseTunnel(captum_attr.Saliency(model))
    kw = dict(nt_type="smoothgrad_sq", nt_samples=6, stdevs=0.2, target=1)
    full = tunnel.attribute(X, **kw)
    part = tunnel.attribute(X[[3, 1]], example_index=[3, 1], **kw)
    torch.testing.assert_close(part, full[[3, 1]], rtol=1e-5, atol=1e-7)
    assert not torch.allclose(tunnel.attribute(X[[3, 1]], **kw), part)
    with pytest.raises(ValueError, match="example_index"):
        tunnel.attribute(X, example_index=[0, 1], **kw)                # B = 5 rows, 2 indices
    with pytest.raises(ValueError, match="rng='captum'"):
        tunnel.attribute(X, example_index=0, rng="captum", **kw)


@pytest.mark.parametrize("bad", [2**63, [2**63, 0, 1, 2, 3], 2**64])
def test_example_indices_past_int64_get_the_range_error(model, bad):
    with pytest.raises(ValueError, match="example_index values must be within"):
        sk.smooth_grad(model, X, example_index=bad, n_samples=2)
