"""The fused perturb ops (C++, Triton; CUDA on a GPU) against the pure-torch Philox reference.

Raw Philox words must be identical everywhere; floats agree to float32 rounding of log/cos.
"""

from __future__ import annotations

import pytest
import torch
from helpers import gpu_backend, spy_on_value_reads
from hypothesis import given, settings
from hypothesis import strategies as st

from smoothkern.noise import NoiseKind, philox4x32
from smoothkern.ops import backends as registry
from smoothkern.ops import extension
from smoothkern.ops.perturb import perturb_reference

needs_ext = pytest.mark.skipif(not extension.has_ops(),
                               reason=f"C++ op: {extension.why_no_ops()}")
# The compiled op takes the noise kind as its int code.
GAUSSIAN, UNIFORM = NoiseKind.GAUSSIAN.code, NoiseKind.UNIFORM.code
TRITON_REASON = registry.status("cpu").get("triton")
needs_triton = pytest.mark.skipif(TRITON_REASON != "available",
                                  reason=f"triton on cpu: {TRITON_REASON}")

SEEDS = [0, 7, 2**32 + 5, 2**63, 2**64 - 1]


def perturb_of(name: str):
    if name == "cpp":
        from smoothkern.ops import perturb

        return perturb.perturb
    from smoothkern.ops.triton import perturb

    return perturb.perturb


def bits_of(name: str):
    if name == "cpp":
        from smoothkern.ops import perturb

        return perturb.philox_bits
    from smoothkern.ops.triton import perturb

    return perturb.philox_bits


KERNELS = [pytest.param("cpp", marks=needs_ext), pytest.param("triton", marks=needs_triton)]


# Noise is computed in float32 and then cast: at most one ulp of the output dtype apart.
OUTPUT_ULP = {torch.float16: 2e-3, torch.bfloat16: 1.6e-2, torch.float64: 1e-6}


def assert_noisy_rows_close(got, want, atol=1e-5):
    """A kernel's noisy rows against the reference's: float32 within Box-Muller rounding,
    other dtypes within one ulp of the output dtype."""
    if got.dtype == torch.float32:
        torch.testing.assert_close(got, want, rtol=0, atol=4e-6)
    else:
        torch.testing.assert_close(got.double(), want.double(), rtol=OUTPUT_ULP[got.dtype],
                                   atol=atol)


def reference_bits(seed, example, sample, element):
    zero = torch.zeros((), dtype=torch.int64)
    return torch.stack(philox4x32(element, sample, example, zero, seed), dim=-1)


@pytest.mark.parametrize("kernel", KERNELS)
def test_philox_known_answer(kernel):
    # Random123's kat_vectors: philox4x32_10, counter 0 and key 0.
    zero = torch.zeros(1, dtype=torch.int64)
    got = bits_of(kernel)(0, zero, zero, zero)
    assert got.tolist() == [[0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]]


@pytest.mark.parametrize("kernel", KERNELS)
@settings(max_examples=8, deadline=None)
@given(seed=st.one_of(st.sampled_from(SEEDS), st.integers(0, 2**64 - 1)),
       size=st.integers(1, 300))
def test_raw_bits_identical_to_reference(kernel, seed, size):
    gen = torch.Generator().manual_seed(size)
    example = torch.randint(0, 2**16, (size,), generator=gen)
    sample = torch.randint(0, 2**32, (size,), generator=gen)
    element = torch.randint(0, 2**32, (size,), generator=gen)
    got = bits_of(kernel)(seed, example, sample, element)
    assert torch.equal(got, reference_bits(seed, example, sample, element))


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("kind", ["gaussian", "uniform"])
@pytest.mark.parametrize("seed", [3, 2**63 + 17])
def test_float32_matches_reference(kernel, kind, seed):
    x = torch.randn(3, 3, 7, 11)           # 231 elements: not a multiple of any block
    sigma = torch.rand(2, 3) + 0.1          # a sweep of two levels
    got = perturb_of(kernel)(x, sigma, seed, 5, 4, kind)
    want = perturb_reference(x, sigma, seed, 5, 4, kind)
    assert got.shape == want.shape == (4 * 2 * 3, 3, 7, 11)
    # |noisy| < ~10 and z is within a few ulp: float32 rounding of log/cos, scaled by sigma.
    torch.testing.assert_close(got, want, rtol=0, atol=4e-6)
    if kind == "uniform":  # no transcendental: bit-identical
        assert torch.equal(got, want)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_dtypes_match_reference(kernel, dtype):
    x = torch.randn(2, 5, 13).to(dtype)
    sigma = torch.tensor([[0.3, 0.7]])
    got = perturb_of(kernel)(x, sigma, 11, 0, 3, "gaussian")
    want = perturb_reference(x, sigma, 11, 0, 3, "gaussian")
    assert got.dtype == dtype
    assert_noisy_rows_close(got, want, atol=1e-6)


@pytest.mark.parametrize("kernel", KERNELS)
@settings(max_examples=10, deadline=None)
@given(batch=st.integers(1, 4), n=st.integers(1, 1500), levels=st.integers(1, 3),
       start=st.integers(0, 2**20), count=st.integers(1, 5),
       seed=st.one_of(st.sampled_from(SEEDS), st.integers(0, 2**64 - 1)),
       kind=st.sampled_from(["gaussian", "uniform"]))
def test_property_matches_reference(kernel, batch, n, levels, start, count, seed, kind):
    x = torch.rand(batch, n) * 4 - 2
    sigma = torch.rand(levels, batch)
    got = perturb_of(kernel)(x, sigma, seed, start, count, kind)
    want = perturb_reference(x, sigma, seed, start, count, kind)
    torch.testing.assert_close(got, want, rtol=0, atol=4e-6)


@pytest.mark.parametrize("kernel", KERNELS)
def test_chunks_concatenate_to_one_call(kernel):
    # Noise is a function of the sample index: 0..9 in one call equals 0..3 then 4..9.
    x = torch.randn(1, 3, 5, 5)             # B = 1
    sigma = torch.full((1, 1), 0.5)
    fn = perturb_of(kernel)
    whole = fn(x, sigma, 2**64 - 2, 0, 10, "gaussian")
    parts = torch.cat([fn(x, sigma, 2**64 - 2, 0, 4, "gaussian"),
                       fn(x, sigma, 2**64 - 2, 4, 6, "gaussian")])
    assert torch.equal(whole, parts)


@pytest.mark.parametrize("kernel", KERNELS)
def test_many_samples_have_unit_variance(kernel):
    # Large k: 60 samples of one example. The draw, not only the reference, is checked.
    x = torch.zeros(1, 2003)
    sigma = torch.ones(1, 1)
    for kind in ("gaussian", "uniform"):
        z = perturb_of(kernel)(x, sigma, 99, 0, 60, kind).flatten()
        assert abs(z.mean().item()) < 0.01 and abs(z.var().item() - 1.0) < 0.02
        want = perturb_reference(x, sigma, 99, 0, 60, kind).flatten()
        torch.testing.assert_close(z, want, rtol=0, atol=4e-6)
    assert z.abs().max() <= 3**0.5


@needs_ext
def test_opcheck_perturb_and_philox_bits():
    x = torch.randn(2, 3, 5)
    sigma = torch.rand(3, 2)
    torch.library.opcheck(torch.ops.smoothkern.perturb.default, (x, sigma, -5, 2, 3, GAUSSIAN))
    torch.library.opcheck(torch.ops.smoothkern.perturb.default,
                          (x.half(), sigma, 1, 0, 2, UNIFORM))
    torch.library.opcheck(torch.ops.smoothkern.perturb.default,
                          (x, torch.rand(3, 2, 15), 1, 0, 2, GAUSSIAN))
    idx = torch.arange(6)
    torch.library.opcheck(torch.ops.smoothkern.philox_bits.default, (-1, idx, idx, idx))


@pytest.mark.parametrize("kernel", KERNELS)
@settings(max_examples=10, deadline=None)
@given(batch=st.integers(1, 3), shape=st.sampled_from([(1,), (7,), (3, 5, 7), (2, 33), (1031,)]),
       levels=st.integers(1, 3), start=st.integers(0, 2**32 - 6), count=st.integers(1, 5),
       seed=st.one_of(st.sampled_from(SEEDS), st.integers(0, 2**64 - 1)),
       kind=st.sampled_from(["gaussian", "uniform"]),
       dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16, torch.float64]))
def test_per_element_sigma_matches_reference(kernel, batch, shape, levels, start, count, seed,
                                             kind, dtype):
    gen = torch.Generator().manual_seed(start)
    x = (torch.rand(batch, *shape, generator=gen) * 4 - 2).to(dtype)
    n = x[0].numel()
    sigma = torch.rand(levels, batch, n, generator=gen)
    got = perturb_of(kernel)(x, sigma, seed, start, count, kind)
    want = perturb_reference(x, sigma, seed, start, count, kind)
    assert got.shape == want.shape == (count * levels * batch, *shape) and got.dtype == dtype
    assert_noisy_rows_close(got, want)
    # No transcendental: bit-identical (the interpreter's float32 -> bf16 cast truncates, where
    # torch and GPUs round to nearest).
    if kind == "uniform" and not (kernel == "triton" and dtype == torch.bfloat16):
        assert torch.equal(got, want)


@pytest.mark.parametrize("kernel", KERNELS)
def test_per_element_sigma_draws_the_same_noise(kernel):
    # [S, B, N] with the same value along N is the [S, B] form, bit for bit: z is unchanged.
    x = torch.randn(3, 4, 5, 3)
    sigma = torch.rand(2, 3)
    fn = perturb_of(kernel)
    wide = sigma.view(2, 3, 1).expand(2, 3, 60)       # an expanded (strided) tensor, too
    assert torch.equal(fn(x, wide, 9, 2, 3, "gaussian"), fn(x, sigma, 9, 2, 3, "gaussian"))
    # Zero σ on half the elements: those stay clean.
    mask = (torch.arange(60) % 2).float()
    out = fn(x, sigma.view(2, 3, 1) * mask, 9, 0, 2, "gaussian").view(2, 2, 3, 60)
    assert torch.equal(out[..., ::2], x.view(1, 1, 3, 60)[..., ::2].expand(2, 2, 3, 30))
    assert not torch.equal(out[..., 1::2], x.view(1, 1, 3, 60)[..., 1::2].expand(2, 2, 3, 30))


@pytest.mark.parametrize("kernel", ["torch", *KERNELS])
def test_sample_indices_past_2_32_are_refused(kernel):
    # The sample index is a 32-bit Philox counter word: past 2**32 the noise would repeat.
    fn = perturb_reference if kernel == "torch" else perturb_of(kernel)
    x, sigma = torch.randn(2, 5), torch.rand(1, 2)
    last = fn(x, sigma, 4, 2**32 - 3, 3, "uniform")   # samples up to 2**32 - 1: fine
    assert last.shape == (6, 5)
    for start, count in ((2**32 - 2, 3), (2**32, 1), (0, 2**32 + 1), (2**40, 0)):
        with pytest.raises(ValueError, match="2\\*\\*32"):
            fn(x, sigma, 4, start, count, "uniform")


@pytest.mark.parametrize("kernel", ["torch", *KERNELS])
@pytest.mark.parametrize("sigma_shape", [(1, 3), (1, 2, 4), (1, 2, 5, 1), (2,)])
def test_bad_sigma_shapes_are_refused(kernel, sigma_shape):
    fn = perturb_reference if kernel == "torch" else perturb_of(kernel)
    with pytest.raises(ValueError, match="sigma must be"):
        fn(torch.randn(2, 5), torch.rand(sigma_shape), 0, 0, 1, "gaussian")


@needs_ext
def test_cpp_op_checks_its_arguments_itself():
    # Direct torch.ops calls skip the Python checks; the op makes the same ones.
    op = torch.ops.smoothkern.perturb
    x = torch.randn(2, 5)
    with pytest.raises(RuntimeError, match="2\\*\\*32"):
        op(x, torch.rand(1, 2), 0, 2**32 - 1, 2, GAUSSIAN)
    with pytest.raises(RuntimeError, match="sigma must be"):
        op(x, torch.rand(1, 2, 4), 0, 0, 1, GAUSSIAN)
    assert op(x, torch.rand(1, 2, 5), 0, 2**32 - 2, 2, GAUSSIAN).shape == (4, 5)
    for kind in (2, -1):                  # the schema takes NoiseKind.code
        with pytest.raises(RuntimeError, match="unknown noise kind"):
            op(x, torch.rand(1, 2), 0, 0, 1, kind)
    with pytest.raises(RuntimeError):     # the kind's name is not an int
        op(x, torch.rand(1, 2), 0, 0, 1, "gaussian")
    idx = torch.arange(3)
    with pytest.raises(RuntimeError, match="int64"):
        torch.ops.smoothkern.philox_bits(0, idx, idx.int(), idx)


@needs_ext
def test_cpp_rejects_bad_arguments():
    from smoothkern.ops import perturb

    with pytest.raises(ValueError, match="sigma"):
        perturb.perturb(torch.randn(2, 3), torch.rand(1, 3), 0, 0, 1)
    with pytest.raises(ValueError, match="seed"):
        perturb.perturb(torch.randn(2, 3), torch.rand(1, 2), 2**64, 0, 1)
    with pytest.raises(ValueError, match="noise"):
        perturb.perturb(torch.randn(2, 3), torch.rand(1, 2), 0, 0, 1, "laplace")


# ----------------------------------------------------------------------------------------------
# example_index: row b draws with counter word example_index[b] instead of b


def index_perturb_of(name: str):
    if name == "torch":
        return perturb_reference
    if name == "registry-triton":      # the registered backend's callable, keyword and all
        return registry.resolve("triton", "cpu").perturb
    return perturb_of(name)


INDEX_KERNELS = [*KERNELS, pytest.param("registry-triton", marks=needs_triton)]
BACKEND_PERTURBS = ["torch", *INDEX_KERNELS]


@pytest.mark.parametrize("kernel", INDEX_KERNELS)
@settings(max_examples=10, deadline=None)
@given(batch=st.integers(1, 4), shape=st.sampled_from([(1,), (7,), (3, 5, 7), (2, 33), (1031,)]),
       levels=st.integers(1, 3), start=st.integers(0, 2**32 - 6), count=st.integers(1, 5),
       seed=st.one_of(st.sampled_from(SEEDS), st.integers(0, 2**64 - 1)),
       kind=st.sampled_from(["gaussian", "uniform"]), per_element=st.booleans(),
       dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16, torch.float64]),
       index=st.lists(st.one_of(st.integers(0, 9), st.integers(0, 2**32 - 1)), min_size=4,
                      max_size=4))
def test_example_index_matches_reference(kernel, batch, shape, levels, start, count, seed,
                                         kind, per_element, dtype, index):
    gen = torch.Generator().manual_seed(start)
    x = (torch.rand(batch, *shape, generator=gen) * 4 - 2).to(dtype)
    n = x[0].numel()
    sigma = (torch.rand(levels, batch, n, generator=gen) if per_element
             else torch.rand(levels, batch, generator=gen))
    idx = torch.tensor(index[:batch])
    got = index_perturb_of(kernel)(x, sigma, seed, start, count, kind, example_index=idx)
    want = perturb_reference(x, sigma, seed, start, count, kind, example_index=idx)
    assert got.shape == want.shape == (count * levels * batch, *shape) and got.dtype == dtype
    assert_noisy_rows_close(got, want)
    # Uniform noise is bit-identical (not the interpreter's truncating bf16 cast, see above).
    if kind == "uniform" and not (kernel.endswith("triton") and dtype == torch.bfloat16):
        assert torch.equal(got, want)


@pytest.mark.parametrize("kernel", BACKEND_PERTURBS)
@pytest.mark.parametrize("per_element", [False, True])
def test_example_index_k_is_row_k_of_the_larger_batch(kernel, per_element):
    # The contract: perturb(x[[k]], sigma[:, [k]], ..., example_index=tensor([k])) equals the
    # rows of position k in the run without indices over the whole batch; so does any subset
    # in any order (finished examples leaving the batch, data-set batches).
    fn = index_perturb_of(kernel)
    full, count, levels = 6, 3, 2
    x = torch.randn(full, 3, 5, 7)                    # 105 elements: odd
    sigma = torch.rand(levels, full, 105) if per_element else torch.rand(levels, full)
    for kind in ("gaussian", "uniform"):
        whole = fn(x, sigma, 2**63 + 11, 17, count, kind).view(count, levels, full, 3, 5, 7)
        for k in (0, 4, 5):
            one = fn(x[[k]], sigma[:, [k]], 2**63 + 11, 17, count, kind,
                     example_index=torch.tensor([k]))
            assert torch.equal(one.view(count, levels, 3, 5, 7), whole[:, :, k])
        idx = torch.tensor([5, 1, 1, 3])              # a subset, out of order, a repeat
        part = fn(x[idx], sigma[:, idx], 2**63 + 11, 17, count, kind, example_index=idx)
        assert torch.equal(part.view(count, levels, 4, 3, 5, 7), whole[:, :, idx])


@pytest.mark.parametrize("kernel", BACKEND_PERTURBS)
def test_example_index_none_is_unchanged(kernel):
    # None (and the positions 0..B-1) draw exactly what a call without the argument draws.
    fn = index_perturb_of(kernel)
    x, sigma = torch.randn(3, 4, 9), torch.rand(2, 3)
    plain = fn(x, sigma, 5, 7, 2, "gaussian")
    assert torch.equal(fn(x, sigma, 5, 7, 2, "gaussian", example_index=None), plain)
    assert torch.equal(fn(x, sigma, 5, 7, 2, "gaussian", example_index=torch.arange(3)), plain)
    # A strided index tensor reads the same values.
    strided = torch.arange(6)[::2] // 2               # [0, 1, 2], stride 2
    assert torch.equal(fn(x, sigma, 5, 7, 2, "gaussian", example_index=strided), plain)


@pytest.mark.parametrize("kernel", BACKEND_PERTURBS)
def test_example_index_chunks_concatenate_to_one_call(kernel):
    fn = index_perturb_of(kernel)
    x, sigma = torch.randn(2, 3, 5, 5), torch.rand(1, 2)
    idx = torch.tensor([2**32 - 1, 12345])
    whole = fn(x, sigma, 2**64 - 2, 0, 10, "gaussian", example_index=idx)
    parts = torch.cat([fn(x, sigma, 2**64 - 2, 0, 4, "gaussian", example_index=idx),
                       fn(x, sigma, 2**64 - 2, 4, 6, "gaussian", example_index=idx)])
    assert torch.equal(whole, parts)


@pytest.mark.parametrize("kernel", BACKEND_PERTURBS)
@pytest.mark.parametrize("index, match", [
    (torch.tensor([0, 1], dtype=torch.int32), "int64"),
    (torch.tensor([0.0, 1.0]), "int64"),
    (torch.tensor([0, 1, 2]), r"\[B\] = \[2\]"),
    (torch.tensor([[0, 1]]), r"\[B\] = \[2\]"),
    (torch.tensor([0, 1], device="meta"), "example_index is on"),
])
def test_example_index_refused(kernel, index, match):
    # Every pass checks dtype, shape and device; the values are checked once per call
    # (ops.perturb.check_example_index, tested in test_noise.py).
    fn = index_perturb_of(kernel)
    x, sigma = torch.randn(2, 5), torch.rand(1, 2)
    assert fn(x, sigma, 0, 0, 1, "uniform",
              example_index=torch.tensor([2**32 - 1, 0])).shape == (2, 5)
    with pytest.raises(ValueError, match=match):
        fn(x, sigma, 0, 0, 1, "uniform", example_index=index)


@pytest.mark.parametrize("kernel", BACKEND_PERTURBS)
@pytest.mark.parametrize("kind", [NoiseKind.GAUSSIAN, "uniform"])
def test_indices_past_the_counter_word_wrap_on_every_backend(kernel, kind):
    # A direct call's values are the caller's part: each is taken modulo 2**32 (the uint32
    # counter word), the same on every backend, with no value read (no host synchronisation).
    fn = index_perturb_of(kernel)
    x, sigma = torch.randn(3, 7), torch.rand(2, 3)
    wrapped = fn(x, sigma, 5, 1, 2, kind, example_index=torch.tensor([2**32 + 5, -1, 2**40]))
    plain = fn(x, sigma, 5, 1, 2, kind, example_index=torch.tensor([5, 2**32 - 1, 0]))
    assert torch.equal(wrapped, plain)
    want = perturb_reference(x, sigma, 5, 1, 2, kind, example_index=torch.tensor([5, 2**32 - 1, 0]))
    assert_noisy_rows_close(plain, want)


@pytest.mark.parametrize("kernel", BACKEND_PERTURBS)
def test_a_perturb_reads_no_example_index_value(kernel, monkeypatch):
    # bool(), .item(), int(), .tolist() of a tensor would synchronise with a GPU on every pass.
    fn = index_perturb_of(kernel)
    x, sigma, idx = torch.randn(3, 5), torch.rand(2, 3), torch.tensor([7, 2**32 - 1, 0])
    want = fn(x, sigma, 3, 1, 2, "uniform", example_index=idx)
    reads = spy_on_value_reads(monkeypatch)
    got = fn(x, sigma, 3, 1, 2, "uniform", example_index=idx)
    monkeypatch.undo()
    assert reads == []
    assert torch.equal(got, want)


@needs_ext
def test_cpp_op_checks_example_index_itself():
    # Direct torch.ops calls skip the Python checks; the op makes the same ones.
    op = torch.ops.smoothkern.perturb
    x, sigma = torch.randn(2, 5), torch.rand(1, 2)
    idx = torch.tensor([7, 2**32 - 1])
    want = perturb_reference(x, sigma, 3, 0, 2, "uniform", example_index=idx)
    assert torch.equal(op(x, sigma, 3, 0, 2, UNIFORM, idx), want)
    assert torch.equal(op(x, sigma, 3, 0, 2, UNIFORM, example_index=idx), want)
    assert torch.equal(op(x, sigma, 3, 0, 2, UNIFORM, None), op(x, sigma, 3, 0, 2, UNIFORM))
    for bad, match in ((idx.int(), "int64"), (idx[:1], "\\[B\\]"),
                       (idx.view(2, 1), "\\[B\\]")):
        with pytest.raises(RuntimeError, match=match):
            op(x, sigma, 3, 0, 2, UNIFORM, bad)
    # Values are not read (no synchronisation on a GPU): taken modulo 2**32, as the reference.
    assert torch.equal(op(x, sigma, 3, 0, 2, UNIFORM, idx + 2**32), want)


@needs_ext
def test_opcheck_perturb_with_example_index():
    x = torch.randn(3, 2, 5)
    idx = torch.tensor([9, 0, 2**32 - 1])
    torch.library.opcheck(torch.ops.smoothkern.perturb.default,
                          (x, torch.rand(2, 3), 4, 1, 2, GAUSSIAN, idx))
    torch.library.opcheck(torch.ops.smoothkern.perturb.default,
                          (x.bfloat16(), torch.rand(1, 3, 10), -4, 0, 3, UNIFORM, idx))
    torch.library.opcheck(torch.ops.smoothkern.perturb.default,
                          (x, torch.rand(1, 3), 4, 1, 2, GAUSSIAN, None))


def test_registered_perturbs_take_example_index_as_a_keyword():
    import inspect

    for name in registry.names():
        if name in ("vmap", "loop"):
            continue
        params = inspect.signature(registry._REGISTRY[name].perturb).parameters
        assert params["example_index"].default is None, name
        assert params["example_index"].kind is inspect.Parameter.KEYWORD_ONLY, name


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["cuda", "triton"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_gpu_example_index_matches_reference(name, dtype):
    backend = gpu_backend(name)
    for shape in ((3, 3, 17, 19), (2, 3, 32, 32)):     # scalar path, vector path
        x = torch.randn(*shape, device="cuda").to(dtype)
        idx = torch.tensor([2**32 - 1, 5, 2**31][:shape[0]], device="cuda")
        for sigma in (torch.rand(2, shape[0], device="cuda"),
                      torch.rand(2, shape[0], x[0].numel(), device="cuda")):
            for kind in ("gaussian", "uniform"):
                got = backend.perturb(x, sigma, 2**63 + 1, 3, 5, kind, example_index=idx)
                want = perturb_reference(x, sigma, 2**63 + 1, 3, 5, kind,
                                               example_index=idx)
                torch.testing.assert_close(got.double(), want.double(), rtol=1e-2, atol=1e-5)


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["cuda", "triton"])
def test_gpu_example_index_k_is_row_k_and_refusals(name):
    backend = gpu_backend(name)
    x = torch.randn(70000, 3, device="cuda")           # > 65535 rows: strided grid
    sigma = torch.rand(1, 70000, device="cuda")
    whole = backend.perturb(x, sigma, 1, 0, 1, "uniform")
    idx = torch.tensor([69999, 0, 65536], device="cuda")
    part = backend.perturb(x[idx], sigma[:, idx], 1, 0, 1, "uniform", example_index=idx)
    assert torch.equal(part, whole[idx])
    with pytest.raises(ValueError, match="example_index is on"):
        backend.perturb(x[idx], sigma[:, idx], 1, 0, 1, "uniform", example_index=idx.cpu())
    # Values are not read on the GPU (no synchronisation per pass): taken modulo 2**32.
    wrapped = backend.perturb(x[idx], sigma[:, idx], 1, 0, 1, "uniform", example_index=idx + 2**32)
    assert torch.equal(wrapped, part)
    if name == "cuda":  # the op's own checks, for direct torch.ops calls
        with pytest.raises(RuntimeError, match="example_index must be on"):
            torch.ops.smoothkern.perturb(x[idx], sigma[:, idx], 1, 0, 1, UNIFORM, idx.cpu())
        assert torch.equal(
            torch.ops.smoothkern.perturb(x[idx], sigma[:, idx], 1, 0, 1, UNIFORM, idx + 2**32),
            part)


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["cuda", "triton"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("per_element", [False, True])
def test_gpu_matches_reference(name, dtype, per_element):
    backend = gpu_backend(name)
    for shape in ((3, 3, 17, 19), (2, 3, 32, 32)):     # odd: scalar path; aligned: vector path
        x = torch.randn(*shape, device="cuda").to(dtype)
        sigma_shape = (2, shape[0], x[0].numel()) if per_element else (2, shape[0])
        sigma = torch.rand(*sigma_shape, device="cuda")
        for kind in ("gaussian", "uniform"):
            got = backend.perturb(x, sigma, 2**63 + 1, 3, 5, kind)
            want = perturb_reference(x, sigma, 2**63 + 1, 3, 5, kind)
            torch.testing.assert_close(got.double(), want.double(), rtol=1e-2, atol=1e-5)


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["cuda", "triton"])
def test_gpu_refuses_sample_indices_past_2_32(name):
    backend = gpu_backend(name)
    x, sigma = torch.randn(2, 5, device="cuda"), torch.rand(1, 2, device="cuda")
    with pytest.raises(ValueError, match="2\\*\\*32"):
        backend.perturb(x, sigma, 0, 2**32 - 1, 2, "gaussian")


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["cuda", "triton"])
def test_gpu_launches_on_the_tensors_device(name):
    # Tensors on cuda:1 while cuda:0 is current: the kernels must run on cuda:1.
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs")
    backend = gpu_backend(name)
    x = torch.randn(3, 1031, device="cuda:1")
    sigma = torch.rand(2, 3, device="cuda:1")
    with torch.cuda.device(0):
        got = backend.perturb(x, sigma, 5, 0, 4, "uniform")
        torch.cuda.synchronize(1)
    assert got.device == x.device
    assert torch.equal(got.cpu(), perturb_reference(x.cpu(), sigma.cpu(), 5, 0, 4,
                                                          "uniform"))


@pytest.mark.cuda
def test_gpu_many_rows_and_large_grid():
    # More than 65535 (sample, example) rows: the grid's y axis is strided, not overflowed.
    for name in ("cuda", "triton"):
        backend = gpu_backend(name)
        x = torch.randn(70000, 3, device="cuda")
        sigma = torch.rand(1, 70000, device="cuda")
        got = backend.perturb(x, sigma, 1, 0, 1, "uniform")
        assert torch.equal(got, perturb_reference(x, sigma, 1, 0, 1, "uniform"))


@pytest.mark.cuda
def test_cuda_philox_bits_refuses_mixed_devices():
    from smoothkern.ops import perturb as ops

    if not extension.has_cuda_ops():
        pytest.skip(f"CUDA op: {extension.why_no_cuda_ops()}")
    idx = torch.arange(4, device="cuda")
    with pytest.raises(RuntimeError, match="same CUDA device"):
        ops.philox_bits(0, idx, idx.cpu(), idx)


@pytest.mark.cuda
def test_cuda_raw_bits_identical():
    from smoothkern.ops import perturb as ops

    if not extension.has_cuda_ops():
        pytest.skip(f"CUDA op: {extension.why_no_cuda_ops()}")
    idx = torch.randint(0, 2**32, (3, 1000))
    got = ops.philox_bits(2**64 - 9, *(t.cuda() for t in idx)).cpu()
    assert torch.equal(got, reference_bits(2**64 - 9, *idx))
