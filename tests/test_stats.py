"""Streaming accumulators against direct statistics; merge; invariants."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from smoothkern.core.stats import AGGREGATES, StreamingStats, check_aggregates, direct_statistics

finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, width=32)


def _samples(draw_values, m, n):
    return torch.tensor(draw_values, dtype=torch.float32).view(m, n)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 12), st.integers(1, 5), st.data())
def test_merge_of_two_halves_equals_one_pass(m, n, data):
    values = data.draw(st.lists(finite, min_size=m * n, max_size=m * n))
    a = _samples(values, m, n).double()
    cut = data.draw(st.integers(0, m))
    whole = StreamingStats.empty(n, dtype=torch.float64).update(a)
    left = StreamingStats.empty(n, dtype=torch.float64).update(a[:cut])
    right = StreamingStats.empty(n, dtype=torch.float64).update(a[cut:])
    merged = left.merge(right)
    assert merged.count == whole.count == m
    got, want = merged.finalize(), whole.finalize()
    for name in AGGREGATES:              # (sem of one sample is NaN on both sides)
        torch.testing.assert_close(got[name], want[name], rtol=1e-9, atol=1e-9, equal_nan=True)
    direct = direct_statistics(a, AGGREGATES, whole.eps)
    for name in AGGREGATES:
        torch.testing.assert_close(want[name], direct[name], rtol=1e-9, atol=1e-7,
                                   equal_nan=m == 1)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 10), st.integers(1, 4), st.integers(1, 4), st.data())
def test_var_nonnegative_and_am_gm(m, n, chunk, data):
    values = data.draw(st.lists(finite, min_size=m * n, max_size=m * n))
    a = _samples(values, m, n)
    stats = StreamingStats.empty(n)
    for start in range(0, m, chunk):
        stats.update(a[start:start + chunk])
    out = stats.finalize()
    assert (out["var"] >= 0).all()
    assert (out["sq"] >= 0).all()
    assert (out["geomean"] <= out["abs"] * (1 + 1e-5) + 1e-6).all()


def test_constant_stream_has_zero_variance():
    a = torch.full((7, 3), 0.1)
    out = StreamingStats.empty(3).update(a[:4]).update(a[4:]).finalize(("var", "mean"))
    assert float(out["var"].max()) < 1e-12
    torch.testing.assert_close(out["mean"], torch.full((3,), 0.1))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_low_precision_chunks_accumulate_in_float32(dtype):
    a = torch.randn(9, 2, 5).to(dtype)
    stats = StreamingStats.empty((2, 5)).update(a[:4]).update(a[4:])
    assert stats.dtype == torch.float32
    direct = direct_statistics(a.float(), AGGREGATES, stats.eps)
    for name, value in stats.finalize().items():
        torch.testing.assert_close(value.double(), direct[name], rtol=1e-5, atol=1e-6)


def test_element_shape_and_errors():
    stats = StreamingStats.empty((2, 3))
    with pytest.raises(ValueError, match="chunk must be"):
        stats.update(torch.zeros(4, 3, 2))
    with pytest.raises(TypeError):
        stats.update(torch.zeros(4, 2, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="no samples"):
        stats.finalize()
    with pytest.raises(ValueError, match="shapes"):
        stats.merge(StreamingStats.empty(6))
    with pytest.raises(TypeError):
        StreamingStats.empty(3, dtype=torch.float16)
    with pytest.raises(ValueError):
        StreamingStats.empty(3, eps=0.0)
    stats.update(torch.zeros(0, 2, 3))
    assert stats.count == 0


def test_check_aggregates():
    assert check_aggregates("var") == (("var",), True)
    assert check_aggregates(["mean", "sq"]) == (("mean", "sq"), False)
    for bad, error in [("median", ValueError), ((), ValueError), (("mean", "mean"), ValueError),
                       (3, TypeError)]:
        with pytest.raises(error):
            check_aggregates(bad)
