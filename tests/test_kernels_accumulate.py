"""The fused accumulate ops (C++, Triton; CUDA on a GPU) against the reference accumulator and
the float64 statistics of all samples held at once."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import gpu_backend
from hypothesis import given, settings
from hypothesis import strategies as st

from smoothkern.core.stats import AGGREGATES, StreamingStats, direct_statistics
from smoothkern.ops import backends as registry
from smoothkern.ops import extension
from smoothkern.ops.accumulate import accumulate_reference

needs_ext = pytest.mark.skipif(not extension.has_ops(),
                               reason=f"C++ op: {extension.why_no_ops()}")
TRITON_REASON = registry.status("cpu").get("triton")
needs_triton = pytest.mark.skipif(TRITON_REASON != "available",
                                  reason=f"triton on cpu: {TRITON_REASON}")
KERNELS = [pytest.param("cpp", marks=needs_ext), pytest.param("triton", marks=needs_triton)]
FIELDS = ("mean", "m2", "abs_sum", "log_sum")


def accumulate_of(name: str):
    if name == "cpp":
        from smoothkern.ops import accumulate

        return accumulate.accumulate
    from smoothkern.ops.triton import accumulate

    return accumulate.accumulate


def stream(samples: torch.Tensor, splits, accumulate, acc_dtype=torch.float32) -> StreamingStats:
    """Feeds samples[m, N] in chunks of the given sizes; returns the state."""
    state = StreamingStats.empty(samples.shape[1], dtype=acc_dtype)
    start = 0
    for size in splits:
        accumulate(state, samples[start:start + size])
        start += size
    assert start == samples.shape[0]
    return state


def attributions(m: int, n: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    """Gradient-like values: a per-element offset plus noise, some near zero (for the log)."""
    gen = torch.Generator().manual_seed(seed)
    offset = torch.randn(n, generator=gen) * 3
    values = offset + torch.randn(m, n, generator=gen) * torch.rand(n, generator=gen)
    values[:, :5] = 0.0  # exact zeros: log(eps)
    return values.to(dtype)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_matches_reference_and_float64(kernel, dtype):
    samples = attributions(60, 1031, dtype)          # N = 1031: odd, not a block multiple
    splits = (7, 1, 29, 23)                          # uneven chunks, one of a single row
    got = stream(samples, splits, accumulate_of(kernel))
    ref = stream(samples, splits, accumulate_reference)
    assert got.count == ref.count == 60
    for field in FIELDS:
        torch.testing.assert_close(getattr(got, field), getattr(ref, field), rtol=2e-5,
                                   atol=2e-5 * math.sqrt(60), msg=lambda m, f=field: f"{f}: {m}")
    # Against the float64 statistics of all samples at once: no worse than 2x the reference's
    # own float32 error (plus a few ulp).
    exact = direct_statistics(samples, AGGREGATES, got.eps)
    got_out, ref_out = got.finalize(), ref.finalize()
    for name in AGGREGATES:
        err = (got_out[name].double() - exact[name]).abs().max().item()
        ref_err = (ref_out[name].double() - exact[name]).abs().max().item()
        scale = exact[name].abs().max().item()
        assert err <= 2 * ref_err + 4e-7 * scale, (name, err, ref_err)


@pytest.mark.parametrize("kernel", KERNELS)
def test_float64_state(kernel):
    samples = attributions(40, 300, torch.float32, seed=1)
    got = stream(samples, (13, 27), accumulate_of(kernel), torch.float64)
    assert got.dtype == torch.float64
    exact = direct_statistics(samples, AGGREGATES, got.eps)
    for name, value in got.finalize().items():
        torch.testing.assert_close(value, exact[name], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kernel", KERNELS)
def test_large_chunk_and_chunk_size_invariance(kernel):
    # k = 500 rows in one chunk vs 100 chunks of 5: same statistics to float32 rounding.
    samples = attributions(500, 77, torch.float32, seed=2)
    one = stream(samples, (500,), accumulate_of(kernel)).finalize()
    many = stream(samples, (5,) * 100, accumulate_of(kernel)).finalize()
    exact = direct_statistics(samples, AGGREGATES, 1e-10)
    for name in AGGREGATES:
        torch.testing.assert_close(one[name], many[name], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(one[name].double(), exact[name], rtol=1e-4, atol=1e-5)
    assert (one["var"] >= 0).all()


@pytest.mark.parametrize("kernel", KERNELS)
@settings(max_examples=8, deadline=None)
@given(n=st.integers(1, 700), splits=st.lists(st.integers(1, 9), min_size=1, max_size=4),
       dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16]))
def test_property_matches_reference(kernel, n, splits, dtype):
    samples = attributions(sum(splits), n, dtype, seed=n)
    got = stream(samples, splits, accumulate_of(kernel))
    ref = stream(samples, splits, accumulate_reference)
    for field in FIELDS:
        torch.testing.assert_close(getattr(got, field), getattr(ref, field), rtol=2e-5,
                                   atol=1e-4, msg=lambda m, f=field: f"{f}: {m}")


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy, interpreted: 3e38² and inf - inf
def test_log_is_accurate_across_magnitudes(kernel):
    # One row into an empty state: log_sum = log(|a| + eps), the vectorised log's whole range.
    a = torch.tensor([0.0, 1e-45, 1e-39, 1e-30, 1e-10, 1e-3, 0.5, 0.70710677, 0.70710683, 1.0,
                      1.0000001, 1.4142135, 1.4142137, 2.0, 3.14159, 1e10, 3e38, -7.5],
                     dtype=torch.float32)
    a = torch.cat([a, torch.logspace(-30, 30, 997, dtype=torch.float32)])
    state = StreamingStats.empty(a.numel(), eps=1e-10)
    accumulate_of(kernel)(state, a.view(1, -1))
    arg = a.abs() + 1e-10                       # float32, as in the kernels and the reference
    exact = torch.log(arg.double())
    ulp = (torch.nextafter(arg.log(), torch.tensor(math.inf)) - arg.log()).double()
    assert ((state.log_sum.double() - exact).abs() <= 2 * ulp).all()
    bad = torch.tensor([[math.inf, math.nan, -math.inf]])
    state = StreamingStats.empty(3)
    accumulate_of(kernel)(state, bad)
    assert state.log_sum[0] == math.inf and state.log_sum[2] == math.inf
    assert state.log_sum[1].isnan()


def non_finite_samples() -> torch.Tensor:
    """samples[9, 10]: a column per NaN/Inf pattern (first, middle, last, chunk-edge rows)."""
    a = attributions(9, 10, torch.float32, seed=5)
    inf, nan = math.inf, math.nan
    a[0, 0] = inf                     # +Inf in the first row
    a[8, 1] = -inf                    # -Inf in the last row
    a[4, 2] = nan                     # NaN mid-chunk
    a[1, 3], a[6, 3] = inf, -inf      # both signs
    a[2, 4], a[7, 4] = inf, nan       # Inf and NaN
    a[3, 5], a[4, 5], a[5, 5] = inf, inf, inf   # several +Inf, across a chunk edge
    a[4, 6] = -inf                    # -Inf on a chunk edge
    a[:, 7] = inf                     # every sample infinite
    return a                          # columns 8, 9 finite


@pytest.mark.parametrize("kernel", [pytest.param("torch"), *KERNELS])
@pytest.mark.parametrize("splits", [(9,), (4, 1, 4), (1,) * 9])
@pytest.mark.parametrize("acc_dtype", [torch.float32, torch.float64])
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy, interpreted: inf - inf
def test_nan_and_inf_follow_one_rule(kernel, splits, acc_dtype):
    # The documented rule (stats module docstring): NaN seen -> every statistic NaN; ±Inf seen ->
    # mean NaN, abs +Inf, sq +Inf, var NaN, geomean +Inf, sem NaN; identical on every accumulator
    # and in direct_statistics (the loop reference).
    samples = non_finite_samples()
    acc = accumulate_reference if kernel == "torch" else accumulate_of(kernel)
    got = stream(samples, splits, acc, acc_dtype).finalize()
    exact = direct_statistics(samples, AGGREGATES, 1e-10)
    nan, inf = math.nan, math.inf
    want_non_finite = {
        "mean": [nan] * 8, "abs": [inf, inf, nan, inf, nan, inf, inf, inf],
        "sq": [inf, inf, nan, inf, nan, inf, inf, inf], "var": [nan] * 8,
        "geomean": [inf, inf, nan, inf, nan, inf, inf, inf], "sem": [nan] * 8}
    for name in AGGREGATES:
        want = torch.tensor(want_non_finite[name], dtype=torch.float64)
        torch.testing.assert_close(exact[name][:8], want, equal_nan=True, rtol=0, atol=0)
        torch.testing.assert_close(got[name][:8].double(), want, equal_nan=True, rtol=0, atol=0,
                                   msg=lambda m, n=name: f"{n}: {m}")
        # Finite columns are untouched by their neighbours.
        torch.testing.assert_close(got[name][8:].double(), exact[name][8:], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel", KERNELS)
def test_non_finite_survives_merge(kernel):
    samples = non_finite_samples()
    left = stream(samples[:5], (5,), accumulate_of(kernel))
    right = stream(samples[5:], (2, 2), accumulate_of(kernel))
    merged = left.merge(right).finalize()
    whole = stream(samples, (9,), accumulate_reference).finalize()
    for name in AGGREGATES:
        torch.testing.assert_close(merged[name], whole[name], equal_nan=True, rtol=1e-5,
                                   atol=1e-5)


@needs_ext
def test_opcheck_accumulate():
    chunk = torch.randn(5, 37)
    for dtype in (torch.float32, torch.float64):
        state = [torch.randn(37, dtype=dtype), torch.rand(37, dtype=dtype),
                 torch.rand(37, dtype=dtype), torch.randn(37, dtype=dtype)]
        torch.library.opcheck(torch.ops.smoothkern.accumulate_.default,
                              (*state, chunk.to(torch.bfloat16), 3, 1e-10))
        torch.library.opcheck(torch.ops.smoothkern.accumulate_.default, (*state, chunk, 0, 1e-6))


@needs_ext
def test_cpp_rejects_bad_state():
    from smoothkern.ops import accumulate

    state = StreamingStats.empty(4)
    with pytest.raises(RuntimeError, match="N = chunk.size"):
        accumulate.accumulate(state, torch.randn(2, 5))
    assert state.count == 0


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["cuda", "triton"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("n", [3072, 1031])   # vector path and scalar path
def test_gpu_matches_reference(name, dtype, n):
    backend = gpu_backend(name)
    samples = attributions(300, n, dtype, seed=4).cuda()   # k = 300: several row slices
    got = stream(samples, (100, 1, 199), backend.accumulate)
    ref = stream(samples, (100, 1, 199), accumulate_reference)
    for field in FIELDS:
        torch.testing.assert_close(getattr(got, field), getattr(ref, field), rtol=1e-4,
                                   atol=1e-3, msg=lambda m, f=field: f"{f}: {m}")


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["cuda", "triton"])
def test_gpu_float64_state_is_float64_accurate(name):
    # Triton once passed Chan's weights and eps as Python floats, typed fp32 on the GPU.
    backend = gpu_backend(name)
    samples = attributions(40, 300, torch.float64, seed=1).cuda()
    got = stream(samples, (13, 27), backend.accumulate, torch.float64)
    exact = direct_statistics(samples, AGGREGATES, got.eps)
    for key, value in got.finalize().items():
        torch.testing.assert_close(value, exact[key], rtol=1e-12, atol=1e-13)


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["cuda", "triton"])
def test_gpu_tiny_state_many_rows(name):
    # N = 1, k = 600000: the CUDA row split would ask for more than 65535 slices on grid.y.
    backend = gpu_backend(name)
    samples = (torch.randn(600_000, 1, generator=torch.Generator().manual_seed(6)) + 2).cuda()
    got = stream(samples, (600_000,), backend.accumulate, torch.float64)
    exact = direct_statistics(samples, AGGREGATES, got.eps)
    for key, value in got.finalize().items():
        torch.testing.assert_close(value, exact[key], rtol=1e-9, atol=1e-9)


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["cuda", "triton"])
def test_gpu_nan_and_inf_follow_one_rule(name):
    backend = gpu_backend(name)
    samples = non_finite_samples()
    got = stream(samples.cuda(), (4, 1, 4), backend.accumulate).finalize()
    exact = direct_statistics(samples, AGGREGATES, 1e-10)
    for key in AGGREGATES:
        torch.testing.assert_close(got[key].cpu().double(), exact[key], equal_nan=True,
                                   rtol=1e-5, atol=1e-5)
