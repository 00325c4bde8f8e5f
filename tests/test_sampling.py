"""Sampling designs (iid, antithetic, stratified): the pure-torch reference of each draw.

A design can have exact marginals and still be wrong (a scrambled van der Corput sequence per
element couples all elements to one pattern over the samples), so the cross-element dependence
is checked beside the marginals.
"""

import math

import pytest
import torch
from scipy import stats

from smoothkern.noise import sampling as smp
from smoothkern.noise import standard_noise

KINDS = ("gaussian", "uniform")


def _t(v):
    return torch.as_tensor(v, dtype=torch.int64)


def test_parse_sampling():
    assert smp.parse_sampling("stratified") is smp.Sampling.STRATIFIED
    assert smp.parse_sampling(smp.Sampling.IID) is smp.Sampling.IID
    assert smp.Sampling.ANTITHETIC == "antithetic"
    assert [s.code for s in smp.Sampling] == [0, 1, 2]
    for bad in ("sobol", None, 1):
        with pytest.raises(ValueError, match="unknown sampling"):
            smp.parse_sampling(bad)


@pytest.mark.parametrize("kind", KINDS)
def test_iid_is_todays_draws_bit_for_bit(kind):
    i, j = _t(range(9)).view(-1, 1), _t(range(33)).view(1, -1)
    z = smp.sampled_noise(2**63 + 5, _t(4), i, j, kind, "iid")
    assert torch.equal(z, standard_noise(2**63 + 5, _t(4), i, j, kind))


@pytest.mark.parametrize("kind", KINDS)
def test_antithetic_pairs(kind):
    i, j = _t(range(12)).view(-1, 1), _t(range(40)).view(1, -1)
    z = smp.sampled_noise(11, _t(2), i, j, kind, "antithetic")
    iid = standard_noise(11, _t(2), i, j, kind)
    assert torch.equal(z[0::2], iid[0::2])
    assert torch.equal(z[1::2], -z[0::2])


@pytest.mark.parametrize("n", range(0, 11))
def test_swap_or_not_is_a_bijection(n):
    key = tuple(_t(w) for w in (0x12345678, 0x9ABCDEF0, 7, 2**32 - 1))
    x = torch.arange(1 << n, dtype=torch.int64)
    out = smp.swap_or_not(x, _t(n), key)
    assert torch.equal(out.sort().values, x)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_swap_or_not_positions_and_pairs_are_uniform_over_keys(n):
    gen = torch.Generator().manual_seed(n)
    keys = 20000
    key = tuple(torch.randint(0, 2**32, (keys, 1), generator=gen) for _ in range(4))
    size = 1 << n
    perm = smp.swap_or_not(torch.arange(size).view(1, -1), _t(n), key)   # [keys, size]
    first = torch.bincount(perm[:, 0], minlength=size).double()
    assert stats.chisquare(first.numpy()).pvalue > 1e-4
    pairs = torch.bincount(perm[:, 0] * size + perm[:, 1], minlength=size * size).double()
    off = pairs.view(size, size)[~torch.eye(size, dtype=torch.bool)]
    assert stats.chisquare(off.numpy()).pvalue > 1e-4


@pytest.mark.parametrize("seed, example", [(0, 0), (5, 3), (2**64 - 1, 2**32 - 1)])
def test_every_power_of_two_prefix_is_a_latin_hypercube(seed, example):
    i, j = _t(range(128)).view(-1, 1), _t(range(0, 3000, 7)).view(1, -1)
    word = smp.stratified_bits(seed, _t(example), i, j)
    for k in range(8):
        strata = word[:1 << k] >> (32 - k)
        assert torch.equal(strata.sort(dim=0).values,
                           torch.arange(1 << k).view(-1, 1).expand_as(strata))
    # in the draws: sample i of a 2**k prefix lies in its stratum of the normal quantiles
    z = smp.sampled_noise(seed, _t(example), i[:16], j, "gaussian", "stratified").double()
    u = torch.special.ndtr(z)
    assert torch.equal(torch.floor(u * 16).long(), word[:16] >> 28)


def test_chain_and_level_by_level_routes_agree():
    for seed, example in [(1, 0), (2**40 + 3, 7)]:
        j = _t(range(61))
        chain = smp.stratified_bits(seed, _t(example), _t(range(45)).view(-1, 1), j.view(1, -1))
        prefix = smp.stratified_prefix_bits(seed, _t(example), j, 45)
        assert torch.equal(chain, prefix)


@pytest.mark.parametrize("sampling", ["antithetic", "stratified"])
@pytest.mark.parametrize("kind", KINDS)
def test_draws_are_pure_in_the_counters(sampling, kind):
    """Chunks, start offsets and batch layout give the same values (no state across samples)."""
    j = _t(range(23)).view(1, 1, -1)
    b = _t([0, 9, 2**32 - 2]).view(1, -1, 1)
    whole = smp.sampled_noise(77, b, _t(range(50)).view(-1, 1, 1), j, kind, sampling)
    parts = [smp.sampled_noise(77, b, _t(range(s, e)).view(-1, 1, 1), j, kind, sampling)
             for s, e in [(0, 3), (3, 17), (17, 50)]]
    assert torch.equal(torch.cat(parts), whole)
    single = smp.sampled_noise(77, _t(9), _t(33), _t(range(23)), kind, sampling)
    assert torch.equal(single, whole[33, 1])


@pytest.mark.parametrize("sampling", ["iid", "antithetic", "stratified"])
@pytest.mark.parametrize("kind", KINDS)
def test_marginal_is_exactly_the_requested_distribution(sampling, kind):
    """Across independent elements, the draw at a fixed sample index has the exact law."""
    j = _t(range(6000))
    half = math.sqrt(3)
    cdf = stats.norm.cdf if kind == "gaussian" else stats.uniform(-half, 2 * half).cdf
    for i in (0, 1, 6, 37):
        z = smp.sampled_noise(3, _t(1), _t(i), j, kind, sampling).double()
        assert abs(float(z.mean())) < 4 / math.sqrt(6000)
        assert abs(float(z.var()) - 1) < 0.08
        assert stats.kstest(z.numpy(), cdf).pvalue > 1e-3
        if kind == "uniform":
            assert float(z.abs().max()) <= math.sqrt(3)


def _mean_abs_correlation(z):
    """Mean |correlation| between elements (columns) over the samples (rows)."""
    z = z.double() - z.double().mean(0)
    z = z / z.norm(dim=0)
    c = z.T @ z
    return float(c[~torch.eye(c.shape[0], dtype=torch.bool)].abs().mean())


def test_cross_element_dependence_like_iid_unlike_van_der_corput():
    m, n = 64, 400
    i, j = _t(range(m)).view(-1, 1), _t(range(n)).view(1, -1)
    iid = _mean_abs_correlation(smp.sampled_noise(8, _t(0), i, j, "gaussian", "iid"))
    strat = _mean_abs_correlation(smp.sampled_noise(8, _t(0), i, j, "gaussian", "stratified"))
    # a scrambled van der Corput design: exact marginals, every element the same pattern in i
    bits = torch.zeros(m, dtype=torch.int64)
    for k in range(6):
        bits |= ((torch.arange(m) >> k) & 1) << (5 - k)
    flips = torch.randint(0, 64, (1, n), generator=torch.Generator().manual_seed(0))
    jitter = torch.rand(m, n, dtype=torch.float64)
    vdc = torch.special.ndtri(((bits.view(-1, 1) ^ flips) + jitter) / m)
    assert strat < 1.15 * iid
    assert _mean_abs_correlation(vdc) > 3 * iid


@pytest.mark.parametrize("kind", KINDS)
def test_stratified_mean_of_a_smooth_function_has_less_variance(kind):
    """The point of the designs: the m-sample mean of g(z) varies less than under i.i.d."""
    m, n = 32, 3000
    i, j = _t(range(m)).view(-1, 1), _t(range(n)).view(1, -1)
    spread = {}
    for sampling in ("iid", "antithetic", "stratified"):
        z = smp.sampled_noise(21, _t(0), i, j, kind, sampling)
        spread[sampling] = float((torch.tanh(z) + 0.3 * z * z).mean(0).var())
    assert spread["stratified"] < 0.3 * spread["iid"]
    assert spread["antithetic"] < spread["iid"]


@pytest.mark.parametrize("sampling", ["iid", "antithetic", "stratified"])
def test_perturb_reference_draws_the_design(sampling):
    from smoothkern.ops.perturb import perturb_reference

    x = torch.randn(3, 2, 5)
    sigma = torch.tensor([[0.5, 1.0, 2.0], [0.1, 0.1, 0.1]])
    index = _t([4, 0, 2**32 - 1])
    rows = perturb_reference(x, sigma, 9, 5, 7, "uniform", example_index=index,
                             sampling=sampling).view(7, 2, 3, 10)
    z = smp.sampled_noise(9, index.view(1, -1, 1), _t(range(5, 12)).view(-1, 1, 1),
                          _t(range(10)).view(1, 1, -1), "uniform", sampling)
    want = x.view(1, 1, 3, 10) + sigma.view(1, 2, 3, 1) * z.unsqueeze(1)
    assert torch.equal(rows, want)
    if sampling == "iid":
        assert torch.equal(rows, perturb_reference(x, sigma, 9, 5, 7, "uniform",
                                                   example_index=index).view(7, 2, 3, 10))
    with pytest.raises(ValueError, match="unknown sampling"):
        perturb_reference(x, sigma, 9, 5, 7, sampling="sobol")


def test_counter_noise_keeps_the_design_across_chunks_and_subsets():
    from smoothkern.noise.sources.counter import CounterNoise
    from smoothkern.ops.perturb import perturb_reference

    x = torch.randn(4, 6)
    sigma = torch.rand(1, 4)
    source = CounterNoise(x, sigma, 3, "gaussian", perturb_reference, sampling="stratified")
    whole = source.draw(0, 9).rows.view(9, 4, 6)
    parts = torch.cat([source.draw(s, c).rows.view(c, 4, 6) for s, c in [(0, 4), (4, 5)]])
    assert torch.equal(whole, parts)
    sub = source.subset(torch.tensor([2, 0]))
    assert sub.sampling is smp.Sampling.STRATIFIED
    assert torch.equal(sub.draw(0, 9).rows.view(9, 2, 6), whole[:, [2, 0]])
