"""Standard errors right for the sampling design (noise.sampling_error.DesignError)."""

import pytest
import torch

from smoothkern.noise import sampling as smp
from smoothkern.noise.sampling_error import POOLED_DOUBLINGS, DesignError


def _feed(sampling, a, sizes):
    tracker = DesignError(sampling, a.shape[1:])
    start = 0
    for size in sizes:
        tracker.update(a[start:start + size], start)
        start += size
    return tracker.standard_error()


def test_the_three_formulas():
    a = torch.randn(10, 5, dtype=torch.float64)
    iid = _feed("iid", a, [3, 7])
    assert torch.allclose(iid, a.std(0) / 10 ** 0.5)
    pairs = (a[0::2] + a[1::2]) / 2
    assert torch.allclose(_feed("antithetic", a, [1, 4, 5]), pairs.std(0) / 5 ** 0.5)
    # the half-against-half errors of the doublings to 2, 4 and 8 samples, each scaled to the
    # last complete prefix (8) as 1/n, pooled
    halves = [(a[:h].mean(0) - a[h:2 * h].mean(0)) / 2 for h in (1, 2, 4)]
    want = (sum(d * d * 2 * h for d, h in zip(halves, (1, 2, 4))) / 3 / 8).sqrt()
    assert torch.allclose(_feed("stratified", a, [2, 8]), want)
    assert torch.isnan(_feed("stratified", a[:1], [1])).all()


def test_the_stratified_error_pools_the_last_doublings():
    a = torch.randn(64, 5, dtype=torch.float64)
    halves = {h: (a[:h].mean(0) - a[h:2 * h].mean(0)) / 2 for h in (1, 2, 4, 8, 16, 32)}
    kept = list(halves)[-POOLED_DOUBLINGS:]
    want = (sum(halves[h] ** 2 * 2 * h for h in kept) / len(kept) / 64).sqrt()
    torch.testing.assert_close(_feed("stratified", a, [5, 30, 29]), want)


def test_samples_must_arrive_in_order():
    tracker = DesignError("iid", (3,))
    with pytest.raises(ValueError, match="in order"):
        tracker.update(torch.zeros(2, 3), 1)


@pytest.mark.parametrize("sampling, low, high", [("iid", 0.8, 1.25), ("antithetic", 0.8, 1.25),
                                                 ("stratified", 0.8, 40.0)])
def test_error_bars_match_the_observed_error(sampling, low, high):
    """Elements are independent replicates: the predicted variance of each element's mean
    against its actual squared error (E g(z) = 0.5 for g(z) = sin(z) + z/2 + z^2 / 2).

    Stratified errs high on a smooth one-dimensional function (its error falls as n^-3/2 and the
    pooled doublings are scaled as n^-1/2); it must never err low."""
    m, n = 32, 4000
    i, j = torch.arange(m).view(-1, 1), torch.arange(n).view(1, -1)
    z = smp.sampled_noise(4, torch.tensor(0), i, j, "gaussian", sampling).double()
    g = torch.sin(z) + z / 2 + z * z / 2
    predicted = _feed(sampling, g, [m]).pow(2).mean()
    observed = (g.mean(0) - 0.5).pow(2).mean()
    assert low * observed < predicted < high * observed
