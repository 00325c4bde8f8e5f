"""The compiled perturb (C++ on the CPU, CUDA on a GPU) draws each sampling design as the
pure-torch reference: the same words, floats within rounding (the Gaussian's inverse CDF is
Acklam's approximation in the kernels, torch.special.ndtri in the reference)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from smoothkern.ops import extension
from smoothkern.ops.perturb import perturb_reference

needs_ext = pytest.mark.skipif(not extension.has_ops(), reason="C++ ops not built")
DESIGNS = ("iid", "antithetic", "stratified")


def _op():
    from smoothkern.ops import perturb
    return perturb.perturb


def _close(got, want, dtype):
    if dtype == torch.float32:
        torch.testing.assert_close(got, want, rtol=2e-6, atol=2e-6)
    else:   # one rounding of the low-precision cast apart at most
        torch.testing.assert_close(got.float(), want.float(), rtol=1e-2, atol=1e-2)


@needs_ext
@settings(max_examples=12, deadline=None)
@given(shape=st.sampled_from([(1, 7), (3, 5, 3), (2, 1, 33)]), levels=st.integers(1, 2),
       start=st.integers(0, 70), count=st.integers(1, 9), seed=st.integers(0, 2**64 - 1),
       kind=st.sampled_from(["gaussian", "uniform"]), design=st.sampled_from(DESIGNS),
       dtype=st.sampled_from([torch.float32, torch.bfloat16]), indexed=st.booleans())
def test_cpp_perturb_draws_the_design(shape, levels, start, count, seed, kind, design, dtype,
                                      indexed):
    x = torch.randn(*shape).to(dtype)
    sigma = torch.rand(levels, shape[0])
    index = torch.tensor([2**32 - 1, 5, 2**31][:shape[0]]) if indexed else None
    got = _op()(x, sigma, seed, start, count, kind, example_index=index, sampling=design)
    want = perturb_reference(x, sigma, seed, start, count, kind, example_index=index,
                             sampling=design)
    _close(got, want, dtype)
    if design == "antithetic":   # exactly the negated i.i.d. draws of the same op
        even = 2 * (count // 2 + 1)
        iid = _op()(x.float(), sigma, seed, start - start % 2, even, kind,
                    example_index=index).view(even, levels, *shape)
        pair = _op()(x.float(), sigma, seed, start - start % 2, even, kind,
                     example_index=index, sampling=design).view(even, levels, *shape)
        xf = x.float().unsqueeze(0)
        torch.testing.assert_close(pair[0::2] - xf, iid[0::2] - xf, rtol=0, atol=0)
        torch.testing.assert_close(pair[1::2] - xf, -(iid[0::2] - xf), rtol=0, atol=1e-6)


@needs_ext
@pytest.mark.parametrize("design", DESIGNS)
def test_cpp_perturb_chunks_equal_one_call(design):
    x = torch.randn(2, 3, 11)
    sigma = torch.rand(1, 2)
    whole = _op()(x, sigma, 5, 0, 37, "gaussian", sampling=design)
    parts = torch.cat([_op()(x, sigma, 5, s, c, "gaussian", sampling=design)
                       for s, c in [(0, 1), (1, 15), (16, 21)]])
    assert torch.equal(whole, parts)


@needs_ext
def test_cpp_perturb_refuses_an_unknown_design():
    x, sigma = torch.randn(1, 4), torch.rand(1, 1)
    with pytest.raises(ValueError, match="unknown sampling"):
        _op()(x, sigma, 0, 0, 1, sampling="sobol")
    with pytest.raises((RuntimeError, ValueError), match="unknown sampling"):
        torch.ops.smoothkern.perturb(x, sigma, 0, 0, 1, 0, None, 7)


# The CPU op draws a call's stratified samples together per block of 64 elements: the words of
# a prefix of samples built level by level, the samples past it walked down their parent chains
# (csrc/cpu/strata.h), the prefix's size chosen per call. Calls that start anywhere (at 0, inside
# a level, on and across powers of two, past the largest prefix kept, near 2**32), one sample or
# many, partial element blocks. Uniform draws of x = 0, sigma = 1 are the exact image of the
# words, so those compare bit for bit.
STRATA_CALLS = [(0, 1), (1, 1), (3, 1), (0, 2), (2, 2), (7, 2), (8, 1), (15, 3), (31, 2),
                (32, 1), (40, 10), (63, 3), (100, 40), (1000, 50), (1023, 3), (2**20 - 3, 7),
                (2**31 - 1, 2), (2**32 - 3, 3), (0, 1100), (900, 300)]
STRATA_SHAPES = [(1, 1), (2, 65), (1, 130)]


@needs_ext
@pytest.mark.parametrize("start,count", STRATA_CALLS)
def test_cpp_stratified_words_equal_the_reference(start, count):
    for batch, n in STRATA_SHAPES:
        index = torch.tensor([2**32 - 1, 5]) if batch == 2 else None
        x, sigma = torch.zeros(batch, n), torch.ones(1, batch)
        got = _op()(x, sigma, 2**63 + 7, start, count, "uniform", example_index=index,
                    sampling="stratified")
        want = perturb_reference(x, sigma, 2**63 + 7, start, count, "uniform",
                                 example_index=index, sampling="stratified")
        assert torch.equal(got, want), (batch, n)


@needs_ext
@pytest.mark.parametrize("start,count", [(0, 1), (5, 11), (30, 20), (1000, 9)])
@pytest.mark.parametrize("per_element", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cpp_stratified_levels_and_dtypes_match_the_reference(start, count, per_element, dtype):
    x = torch.randn(3, 2, 37).to(dtype)
    sigma = torch.rand(3, 3, 74) if per_element else torch.rand(3, 3)
    index = torch.tensor([9, 2**31, 0])
    got = _op()(x, sigma, 11, start, count, "gaussian", example_index=index,
                sampling="stratified")
    want = perturb_reference(x, sigma, 11, start, count, "gaussian", example_index=index,
                             sampling="stratified")
    _close(got, want, dtype)


@needs_ext
def test_cpp_stratified_chunks_across_levels_equal_one_call():
    x, sigma = torch.randn(2, 65), torch.rand(2, 2)
    whole = _op()(x, sigma, 3, 0, 1100, "gaussian", sampling="stratified")
    splits = [(0, 1), (1, 2), (3, 5), (8, 9), (17, 47), (64, 1), (65, 200), (265, 835)]
    parts = torch.cat([_op()(x, sigma, 3, s, c, "gaussian", sampling="stratified")
                       for s, c in splits])
    assert torch.equal(whole, parts)


@needs_ext
def test_cpp_stratified_draws_do_not_depend_on_threads():
    x, sigma = torch.randn(3, 200), torch.rand(1, 3)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _op()(x, sigma, 8, 20, 30, "gaussian", sampling="stratified")
        torch.set_num_threads(max(2, threads))
        many = _op()(x, sigma, 8, 20, 30, "gaussian", sampling="stratified")
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, many)


@pytest.mark.cuda
@needs_ext
@pytest.mark.parametrize("design", DESIGNS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_cuda_perturb_draws_the_design(design, dtype):
    if not extension.has_cuda_ops():
        pytest.skip("CUDA ops not built")
    for shape in [(3, 5, 7), (2, 64), (1, 3, 33)]:
        x = torch.randn(*shape, device="cuda").to(dtype)
        sigma = torch.rand(2, shape[0], device="cuda")
        index = torch.tensor([2**32 - 1, 5, 2**31][:shape[0]], device="cuda")
        for kind in ("gaussian", "uniform"):
            got = _op()(x, sigma, 2**63 + 9, 3, 40, kind, example_index=index, sampling=design)
            want = perturb_reference(x.cpu(), sigma.cpu(), 2**63 + 9, 3, 40, kind,
                                     example_index=index.cpu(), sampling=design)
            _close(got.cpu(), want, dtype if dtype == torch.float32 else torch.bfloat16)


@needs_ext
def test_counter_noise_draws_the_design_with_the_compiled_op(monkeypatch):
    from smoothkern.noise.sources import counter
    from smoothkern.ops import perturb as perturb_mod

    x, sigma = torch.randn(2, 9), torch.rand(1, 2)
    source = counter.CounterNoise(x, sigma, 4, "uniform", perturb_mod.perturb,
                                  sampling="stratified")
    got = source.draw(3, 6).rows
    want = perturb_reference(x, sigma, 4, 3, 6, "uniform", sampling="stratified")
    _close(got, want, torch.float32)
    monkeypatch.setattr(counter, "perturb_reference", None)   # the op, not the reference
    assert torch.equal(source.draw(3, 6).rows, got)
