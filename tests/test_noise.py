"""The torch Philox reference and the noise contract; σ planning."""

import math

import pytest
import torch
from helpers import spy_on_value_reads
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from smoothkern.noise import (
    NOISE_KIND_NAMES,
    NoiseKind,
    check_seed,
    parse_noise_kind,
    philox4x32,
    plan_sigma,
    standard_noise,
)
from smoothkern.ops.perturb import check_example_index, check_perturb_args, perturb_reference


def _words(*values):
    return [torch.tensor(v, dtype=torch.int64) for v in values]


@pytest.mark.parametrize("counter, key, expected", [
    # Known-answer vectors of Random123's Philox4x32-10 (kat_vectors).
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF, 0xFFFFFFFF), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
])
def test_philox_known_answers(counter, key, expected):
    seed = key[0] | (key[1] << 32)
    out = philox4x32(*_words(*counter), seed)
    assert tuple(int(w) for w in out) == expected


@pytest.mark.parametrize("kind", NOISE_KIND_NAMES)
def test_standard_noise_has_unit_variance(kind):
    z = standard_noise(3, torch.tensor(1), torch.arange(40).view(-1, 1),
                             torch.arange(5000).view(1, -1), kind)
    assert z.dtype == torch.float32
    assert abs(float(z.mean())) < 0.01
    assert abs(float(z.std()) - 1) < 0.01
    if kind == "uniform":
        assert float(z.abs().max()) <= math.sqrt(3)
    else:
        assert float(z.abs().max()) > 3.5  # tails exist


def test_noise_depends_on_every_counter_word():
    base = standard_noise(5, torch.tensor(2), torch.tensor(3), torch.arange(64))
    for seed, b, i in [(6, 2, 3), (5, 1, 3), (5, 2, 4), (5 + 2**32, 2, 3)]:
        other = standard_noise(seed, torch.tensor(b), torch.tensor(i), torch.arange(64))
        assert not torch.equal(base, other)


@settings(max_examples=15, deadline=None)
@given(batch=st.integers(1, 3), rest=st.tuples(st.integers(1, 5), st.integers(1, 6)),
       levels=st.integers(1, 3), start=st.integers(0, 100), count=st.integers(1, 6),
       split=st.integers(1, 5), seed=st.integers(0, 2**64 - 1),
       kind=st.sampled_from(NOISE_KIND_NAMES))
def test_perturb_is_chunk_invariant_and_follows_the_contract(batch, rest, levels, start, count,
                                                             split, seed, kind):
    x = torch.randn(batch, *rest)
    sigma = torch.rand(levels, batch)
    whole = perturb_reference(x, sigma, seed, start, count, kind)
    assert whole.shape == (count * levels * batch, *rest)
    split = min(split, count)
    parts = torch.cat([perturb_reference(x, sigma, seed, start, split, kind),
                       perturb_reference(x, sigma, seed, start + split, count - split, kind)])
    torch.testing.assert_close(parts, whole, rtol=0, atol=0)
    # Row (i*S + s)*B + b is x[b] + sigma[s, b] * z(seed, b, start + i, j).
    i, s, b = count - 1, levels - 1, batch - 1
    z = standard_noise(seed, torch.tensor(b), torch.tensor(start + i),
                             torch.arange(x[b].numel()), kind)
    row = whole[(i * levels + s) * batch + b]
    torch.testing.assert_close(row, x[b] + sigma[s, b] * z.view(rest))


def test_sweep_levels_share_the_draw():
    x = torch.rand(2, 3, 4)
    sweep = perturb_reference(x, torch.tensor([[0.1, 0.2], [0.3, 0.4]]), 7, 0, 2)
    alone = perturb_reference(x, torch.tensor([[0.3, 0.4]]), 7, 0, 2)
    torch.testing.assert_close(sweep.view(2, 2, 2, 3, 4)[:, 1], alone.view(2, 2, 3, 4))


def test_perturb_keeps_dtype():
    x = torch.rand(2, 5, dtype=torch.float64)
    assert perturb_reference(x, torch.ones(1, 2), 0, 0, 3).dtype == torch.float64


def test_plan_sigma_relative_to_each_examples_range():
    x = torch.stack([torch.linspace(0, 1, 10), torch.linspace(-2, 2, 10)])
    sigma, sweep = plan_sigma(x, 0.1, None)
    assert not sweep
    torch.testing.assert_close(sigma, torch.tensor([[0.1, 0.4]]))
    sigma, sweep = plan_sigma(x, (0.0, 0.5), None)
    assert sweep and sigma.shape == (2, 2)
    torch.testing.assert_close(sigma[1], torch.tensor([0.5, 2.0]))


def test_plan_sigma_absolute():
    x = torch.zeros(3, 4)
    assert plan_sigma(x, None, 0.2)[0].tolist() == [[pytest.approx(0.2)] * 3]
    per_example, sweep = plan_sigma(x, None, torch.tensor([0.1, 0.2, 0.3]))
    assert per_example.shape == (1, 3) and not sweep
    grid, sweep = plan_sigma(x, None, torch.rand(2, 3))
    assert grid.shape == (2, 3) and sweep
    seq, sweep = plan_sigma(x, None, [0.1, 0.2])
    assert seq.shape == (2, 3) and sweep


@pytest.mark.parametrize("level, stdevs, error", [
    (-0.1, None, ValueError), (float("nan"), None, ValueError), (float("inf"), None, ValueError),
    ((0.1, -1.0), None, ValueError), (0.1, 0.1, ValueError), (None, -1.0, ValueError),
    (None, torch.ones(5), ValueError), ("0.1", None, TypeError), ((), None, ValueError),
    (True, None, TypeError),
])
def test_plan_sigma_rejects(level, stdevs, error):
    with pytest.raises(error):
        plan_sigma(torch.zeros(3, 4), level, stdevs)


def test_checks():
    assert parse_noise_kind("uniform") == "uniform"
    assert parse_noise_kind("uniform") is parse_noise_kind(NoiseKind.UNIFORM) is NoiseKind.UNIFORM
    assert [kind.code for kind in NoiseKind] == [0, 1]     # the compiled ops' int argument
    for bad in ("laplace", "Gaussian", 0, None):
        with pytest.raises(ValueError, match="unknown noise"):
            parse_noise_kind(bad)
    with pytest.raises(ValueError):
        check_seed(-1)
    with pytest.raises(TypeError):
        check_seed(1.5)


def test_per_element_sigma_scales_the_same_draw():
    # sigma[S, B, N]: row (i*S + s)*B + b is x[b] + sigma[s, b, j] * z(seed, b, start + i, j).
    x = torch.randn(2, 3, 4)
    sigma = torch.rand(2, 2, 12)
    out = perturb_reference(x, sigma, 11, 5, 3, "gaussian").view(3, 2, 2, 12)
    for i, s, b in [(0, 0, 0), (2, 1, 1), (1, 0, 1)]:
        z = standard_noise(11, torch.tensor(b), torch.tensor(5 + i), torch.arange(12))
        torch.testing.assert_close(out[i, s, b], x[b].flatten() + sigma[s, b] * z, rtol=0,
                                   atol=0)
    per_example = torch.rand(2, 2)
    assert torch.equal(perturb_reference(x, per_example.view(2, 2, 1).expand(2, 2, 12),
                                               11, 5, 3),
                       perturb_reference(x, per_example, 11, 5, 3))


def test_perturb_reference_refuses_what_the_kernels_refuse():
    x, sigma = torch.randn(2, 3), torch.rand(1, 2)
    assert perturb_reference(x, sigma, 0, 2**32 - 1, 1).shape == (2, 3)
    with pytest.raises(ValueError, match=r"2\*\*32"):
        perturb_reference(x, sigma, 0, 2**32 - 1, 2)
    with pytest.raises(ValueError, match="sigma must be"):
        perturb_reference(x, torch.rand(1, 2, 4), 0, 0, 1)
    with pytest.raises(ValueError, match="sigma is on"):
        perturb_reference(x, torch.rand(1, 2, device="meta"), 0, 0, 1)
    with pytest.raises(ValueError, match="non-negative"):
        perturb_reference(x, sigma, 0, -1, 1)
    with pytest.raises(TypeError, match="count"):
        perturb_reference(x, sigma, 0, 0, 1.0)
    with pytest.raises(ValueError, match="floating"):
        perturb_reference(x.long(), sigma, 0, 0, 1)


# ----------------------------------------------------------------------------------------------
# example_index: the noise of a row is keyed by the example's index in the caller's data


def _rows_of(out: Tensor, count: int, levels: int, batch: int, b: int) -> Tensor:
    """The rows of batch position b, [count, S, ...], from a [count * S * batch, ...] result."""
    return out.view(count, levels, batch, *out.shape[1:])[:, :, b]


@settings(max_examples=15, deadline=None)
@given(full=st.integers(1, 7), rest=st.sampled_from([(1,), (5,), (3, 7), (2, 3, 5)]),
       levels=st.integers(1, 3), start=st.integers(0, 2**32 - 8), count=st.integers(1, 4),
       seed=st.integers(0, 2**64 - 1), kind=st.sampled_from(NOISE_KIND_NAMES),
       per_element=st.booleans(), data=st.data())
def test_example_index_row_is_that_row_of_a_larger_batch(full, rest, levels, start, count, seed,
                                                         kind, per_element, data):
    # The contract: perturb(x[idx], sigma[:, idx], ..., example_index=idx) gives, for every
    # position p, exactly the rows of example idx[p] of the run without indices over the whole
    # data (any subset, order, repeats).
    x = torch.randn(full, *rest)
    n = x[0].numel()
    sigma = torch.rand(levels, full, n) if per_element else torch.rand(levels, full)
    whole = perturb_reference(x, sigma, seed, start, count, kind)
    picked = data.draw(st.lists(st.integers(0, full - 1), min_size=1, max_size=5))
    idx = torch.tensor(picked)
    part = perturb_reference(x[idx], sigma[:, idx], seed, start, count, kind,
                                   example_index=idx)
    assert part.shape == (count * levels * len(picked), *rest)
    for p, k in enumerate(picked):
        assert torch.equal(_rows_of(part, count, levels, len(picked), p),
                           _rows_of(whole, count, levels, full, k))


def test_example_index_none_and_arange_are_the_default():
    x, sigma = torch.randn(3, 2, 5), torch.rand(2, 3)
    plain = perturb_reference(x, sigma, 9, 4, 3, "gaussian")
    assert torch.equal(perturb_reference(x, sigma, 9, 4, 3, "gaussian",
                                               example_index=None), plain)
    assert torch.equal(perturb_reference(x, sigma, 9, 4, 3, "gaussian",
                                               example_index=torch.arange(3)), plain)


@pytest.mark.parametrize("kind", NOISE_KIND_NAMES)
def test_example_index_up_to_2_32_follows_the_contract(kind):
    # Row b draws z(seed, example_index[b], i, j): checked at the top of the counter word.
    x = torch.randn(3, 11)
    idx = torch.tensor([2**32 - 1, 0, 2**31 + 7])
    sigma = torch.rand(1, 3)
    out = perturb_reference(x, sigma, 2**63 + 3, 6, 2, kind, example_index=idx)
    for i in range(2):
        for b in range(3):
            z = standard_noise(2**63 + 3, idx[b], torch.tensor(6 + i), torch.arange(11),
                                     kind)
            assert torch.equal(out[i * 3 + b], x[b] + sigma[0, b] * z)


@pytest.mark.parametrize("index, match", [
    (torch.tensor([0, 1], dtype=torch.int32), "int64"),
    (torch.tensor([0.0, 1.0]), "int64"),
    (torch.tensor([0, 1, 2]), r"\[B\] = \[2\]"),
    (torch.tensor([[0, 1]]), r"\[B\] = \[2\]"),
    (torch.tensor(0), r"\[B\] = \[2\]"),
    (torch.tensor([0, 1], device="meta"), "example_index is on"),
    ([0, 1], "Tensor"),
])
def test_example_index_refused(index, match):
    # Every pass checks the indices' dtype, shape and device (no value read).
    x, sigma = torch.randn(2, 3), torch.rand(1, 2)
    with pytest.raises(ValueError, match=match):
        perturb_reference(x, sigma, 0, 0, 1, example_index=index)
    with pytest.raises(ValueError, match=match):
        check_perturb_args(x, sigma, 0, 1, "gaussian", index)


@pytest.mark.parametrize("index, error, match", [
    (torch.tensor([0, -1]), ValueError, r"within 0\.\.2\*\*32-1 .*, got -1"),
    (torch.tensor([2**32, 1]), ValueError, r"within 0\.\.2\*\*32-1 .*, got 4294967296"),
    ([0, 2**32], ValueError, r"within 0\.\.2\*\*32-1"),
    (2**32 - 1, ValueError, r"within 0\.\.2\*\*32-1"),        # an offset: 2**32 - 1, 2**32
    (torch.tensor([0, 1, 2]), ValueError, "one entry per example"),
    (torch.tensor([0.0, 1.0]), TypeError, "must hold integers"),
    ("01", TypeError, "sequence of ints"),
    (True, TypeError, "sequence of ints"),
])
def test_check_example_index_refuses_values_once_per_call(index, error, match):
    with pytest.raises(error, match=match):
        check_example_index(index, 2, torch.device("cpu"))


def test_check_example_index_normalises():
    cpu = torch.device("cpu")
    assert check_example_index(None, 2, cpu) is None
    assert torch.equal(check_example_index(5, 3, cpu), torch.tensor([5, 6, 7]))
    assert torch.equal(check_example_index([2**32 - 1, 0], 2, cpu), torch.tensor([2**32 - 1, 0]))
    got = check_example_index(torch.tensor([3, 4], dtype=torch.int32), 2, cpu)
    assert got.dtype == torch.int64 and torch.equal(got, torch.tensor([3, 4]))


def test_a_pass_never_reads_the_example_indices(monkeypatch):
    # Reading the values (bool(), .item(), int(), .tolist()) would synchronise with a GPU on
    # every pass: only check_example_index, once per call, reads them.
    x, sigma, idx = torch.randn(3, 5), torch.rand(2, 3), torch.tensor([7, 2**32 - 1, 0])
    want = perturb_reference(x, sigma, 3, 1, 2, "uniform", example_index=idx)
    reads = spy_on_value_reads(monkeypatch)
    got = perturb_reference(x, sigma, 3, 1, 2, "uniform", example_index=idx)
    check_perturb_args(x, sigma, 1, 2, "uniform", idx)
    assert reads == []
    check_example_index(idx, 3, x.device)
    assert reads                                 # the spy sees a value read
    monkeypatch.undo()
    assert torch.equal(got, want)


def test_indices_past_the_counter_word_wrap_like_the_kernels():
    # Values are the caller's part past check_example_index: every implementation takes the
    # uint32 counter word, so 2**32 + 5 draws as 5 and -1 as 2**32 - 1 (never a crash).
    x, sigma = torch.randn(2, 4), torch.rand(1, 2)
    wrapped = perturb_reference(x, sigma, 9, 0, 2, example_index=torch.tensor([2**32 + 5, -1]))
    plain = perturb_reference(x, sigma, 9, 0, 2, example_index=torch.tensor([5, 2**32 - 1]))
    assert torch.equal(wrapped, plain)
