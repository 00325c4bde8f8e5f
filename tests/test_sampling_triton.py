"""The Triton perturb draws each sampling design itself, as the pure-torch reference.

Stratified words are bit-identical to :func:`smoothkern.noise.sampling.stratified_bits`, the
uniform noise too; the Gaussian is Acklam's inverse CDF in float64 (as the C++ and CUDA
kernels), within one float32 rounding of the reference's ndtri. Without a GPU the kernels run
under the interpreter, where every operation costs tens of microseconds whatever the block
size: the stratified chain (about a thousand operations per level of the sample index) is
tested on few (sample, example) rows and many elements.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
import torch
from helpers import gpu_backend

from smoothkern.noise import NoiseKind
from smoothkern.noise import sampling as smp
from smoothkern.ops import backends as registry
from smoothkern.ops.perturb import perturb_reference

TRITON_REASON = registry.status("cpu").get("triton")
pytestmark = pytest.mark.skipif(TRITON_REASON != "available",
                                reason=f"triton on cpu: {TRITON_REASON}")
DESIGNS = ("iid", "antithetic", "stratified")
KINDS = ("gaussian", "uniform")
# Noise in float32, then one cast: at most one ulp of the output dtype apart.
OUTPUT_ULP = {torch.bfloat16: 1.6e-2, torch.float16: 2e-3, torch.float64: 1e-6}


def _triton():
    from smoothkern.ops.triton import perturb, sampling

    return perturb, sampling


def _words(*values):
    return torch.tensor(values, dtype=torch.int64)


def assert_within_one_rounding(got: torch.Tensor, want: torch.Tensor) -> None:
    """float32 z equal, or one float32 ulp apart (Acklam's 1.2e-9 against ndtri)."""
    up = torch.nextafter(want, torch.full_like(want, float("inf")))
    down = torch.nextafter(want, torch.full_like(want, float("-inf")))
    ok = (got == want) | (got == up) | (got == down)
    assert bool(ok.all()), (got[~ok][:5], want[~ok][:5])


def assert_rows_close(got, want, kind):
    """A kernel's noisy rows against the reference's (as the C++ op's design tests)."""
    if got.dtype == torch.float32:
        torch.testing.assert_close(got, want, rtol=2e-6, atol=2e-6)
    else:
        torch.testing.assert_close(got.double(), want.double(), rtol=OUTPUT_ULP[got.dtype],
                                   atol=1e-5)
    # Uniform noise has no transcendental: bit-identical (not bf16: the interpreter's cast
    # truncates where torch rounds to nearest).
    if kind == "uniform" and got.dtype != torch.bfloat16:
        assert torch.equal(got, want)


# ----------------------------------------------------------------------------------------------
# the stratified chain and its z, many (example, sample, element) triples per call


@pytest.mark.parametrize("seed, top", [(0, 2**12), (2**63 + 5, 2**12), (2**64 - 1, 2**32)])
def test_stratified_words_are_the_reference_bits(seed, top):
    _, sampling = _triton()
    gen = torch.Generator().manual_seed(seed % 1000)
    edges = _words(0, 1, 2, 3, 4, 5, 7, 8, 15, 16, 17, 62, 63, 64, 65, 127, 128, 1023, 1024,
                   2**31 - 1, 2**31, 2**32 - 2, 2**32 - 1)
    edges = edges[edges < top]
    sample = torch.cat([edges.repeat(20), torch.randint(0, top, (300,), generator=gen)])
    example = torch.randint(0, 2**32, sample.shape, generator=gen)
    example[:40] = torch.arange(40) % 3                  # small indices, as positions
    element = torch.randint(0, 2**32, sample.shape, generator=gen)
    element[::7] = torch.arange(0, sample.numel(), 7)
    got = sampling.stratified_words(seed, example, sample, element)
    assert torch.equal(got, smp.stratified_bits(seed, example, sample, element))


def test_every_power_of_two_prefix_of_the_kernels_words_is_a_latin_hypercube():
    _, sampling = _triton()
    count, elements = 64, 5
    sample = torch.arange(count).repeat_interleave(elements)
    element = torch.arange(elements).repeat(count) * 999_983
    words = sampling.stratified_words(11, torch.full_like(sample, 3), sample, element)
    words = words.view(count, elements)
    for k in range(7):
        strata = (words[: 2**k] >> (32 - k)).sort(dim=0).values
        assert torch.equal(strata, torch.arange(2**k).view(-1, 1).expand(-1, elements))


def test_word_noise_is_the_references_within_one_rounding():
    _, sampling = _triton()
    gen = torch.Generator().manual_seed(5)
    branch = int(0.02425 * 2**32)                        # Acklam's tail / middle switch
    low = torch.cat([torch.arange(0, 300), torch.arange(branch - 300, branch + 300),
                     torch.arange(2**31 - 300, 2**31), torch.randint(0, 2**31, (4000,),
                                                                     generator=gen)])
    words = torch.cat([low, low ^ 0xFFFFFFFF])           # U and ~U: z and -z
    for kind in KINDS:
        got = sampling.word_noise(words, kind)
        want = smp._from_word(words, NoiseKind(kind))
        if kind == "uniform":
            assert torch.equal(got, want)
        else:
            assert_within_one_rounding(got, want)
            assert got.abs().max() > 6.3                 # the tails: word 0 is z = -6.36
        half = low.numel()
        assert torch.equal(got[half:], -got[:half])


def test_acklams_coefficients_are_the_cpp_kernels():
    # The same numbers as csrc/sampling.h's lower_normal_quantile, in its order (a - c there
    # is a + (-c) here: the same IEEE result).
    _, sampling = _triton()
    header = (Path(__file__).resolve().parents[1] / "csrc" / "sampling.h").read_text()
    body = header[header.index("lower_normal_quantile"):header.index("word_to_noise")]
    cpp = [float(sign.replace(" ", "") + number) for sign, number in
           re.findall(r"([-+] ?)?(\d\.\d+e[-+]\d+)", body)]
    ours = [*sampling.TAIL_P.value, *sampling.TAIL_R.value[:-1], *sampling.MID_A.value,
            *sampling.MID_B.value[:-1]]
    assert cpp == ours
    assert sampling.TAIL_R.value[-1] == sampling.MID_B.value[-1] == 1.0
    assert f"t < {sampling.T_LOW.value}" in body


# ----------------------------------------------------------------------------------------------
# the perturb kernel against the reference


@pytest.mark.parametrize("design", DESIGNS)
def test_perturb_draws_the_design(design):
    perturb, _ = _triton()
    gen = torch.Generator().manual_seed(1)
    cases = [
        # N = 7, two levels, samples 5..17 cross 8 and 16
        dict(x=torch.randn(1, 7, generator=gen), sigma=torch.rand(2, 1, generator=gen),
             seed=2**63 + 5, start=5, count=13, index=None, kinds=("gaussian",)),
        # N = 1, per-element sigma, the examples' indices, samples 63..65 cross 64
        dict(x=torch.randn(2, 1, generator=gen), sigma=torch.rand(2, 2, 1, generator=gen),
             seed=7, start=63, count=3, index=torch.tensor([2**32 - 1, 5]),
             kinds=("uniform",)),
        # N = 1113 over three dims, x = 0 and sigma = 1: the rows are z itself
        dict(x=torch.zeros(1, 3, 7, 53), sigma=torch.ones(1, 1, 1113), seed=2**64 - 1,
             start=0, count=2, index=torch.tensor([2**31]), kinds=KINDS),
    ]
    for case in cases:
        for kind in case["kinds"]:
            args = (case["x"], case["sigma"], case["seed"], case["start"], case["count"], kind)
            got = perturb.perturb(*args, example_index=case["index"], sampling=design)
            want = perturb_reference(*args, example_index=case["index"], sampling=design)
            assert got.shape == want.shape
            assert_rows_close(got, want, kind)
            if design == "stratified" and not case["x"].any():   # (Box-Muller: a few ulp)
                assert_within_one_rounding(got, want)


@pytest.mark.parametrize("design", DESIGNS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_perturb_draws_the_design_in_every_dtype(design, dtype):
    perturb, _ = _triton()
    x = torch.randn(1, 3, 5).to(dtype)
    sigma = torch.tensor([[0.3], [0.7]])
    for kind in KINDS:
        got = perturb.perturb(x, sigma, 11, 6, 2, kind, sampling=design)
        want = perturb_reference(x, sigma, 11, 6, 2, kind, sampling=design)
        assert got.dtype == dtype
        assert_rows_close(got, want, kind)


def test_antithetic_negates_the_iid_draw_of_the_even_sample():
    perturb, _ = _triton()
    x, sigma = torch.zeros(2, 33), torch.ones(1, 2)
    for kind in KINDS:
        iid = perturb.perturb(x, sigma, 9, 4, 6, kind).view(6, 2, 33)
        pair = perturb.perturb(x, sigma, 9, 4, 6, kind, sampling="antithetic").view(6, 2, 33)
        assert torch.equal(pair[0::2], iid[0::2])
        assert torch.equal(pair[1::2], -iid[0::2])
        # A chunk that starts on an odd sample still negates its even partner.
        odd = perturb.perturb(x, sigma, 9, 5, 1, kind, sampling="antithetic").view(2, 33)
        assert torch.equal(odd, -iid[0])


@pytest.mark.parametrize("kind", KINDS)
def test_iid_is_the_kernels_draws_of_before(kind):
    perturb, _ = _triton()
    x, sigma = torch.randn(3, 4, 9), torch.rand(2, 3)
    plain = perturb.perturb(x, sigma, 5, 7, 2, kind)
    assert torch.equal(perturb.perturb(x, sigma, 5, 7, 2, kind, sampling="iid"), plain)
    assert torch.equal(perturb.perturb(x, sigma, 5, 7, 2, kind,
                                       sampling=smp.Sampling.IID), plain)


@pytest.mark.parametrize("design", DESIGNS)
def test_chunks_equal_one_call(design):
    # Samples 0..5 in one call, then as 0..2 and 3..5 (the second chunk crosses 4).
    perturb, _ = _triton()
    x, sigma = torch.randn(1, 2, 11), torch.rand(2, 1)
    whole = perturb.perturb(x, sigma, 2**64 - 2, 0, 6, "gaussian", sampling=design)
    parts = torch.cat([perturb.perturb(x, sigma, 2**64 - 2, s, c, "gaussian", sampling=design)
                       for s, c in [(0, 3), (3, 3)]])
    assert torch.equal(whole, parts)


def test_an_unknown_design_is_refused():
    perturb, _ = _triton()
    with pytest.raises(ValueError, match="unknown sampling"):
        perturb.perturb(torch.randn(1, 4), torch.rand(1, 1), 0, 0, 1, sampling="sobol")


# ----------------------------------------------------------------------------------------------
# the kernel set: the registered perturb takes the design, CounterNoise draws with it


def test_every_built_in_kernel_set_takes_the_design_as_a_keyword():
    for backend in registry.KERNEL_SETS:
        param = inspect.signature(backend.perturb).parameters["sampling"]
        assert param.kind is inspect.Parameter.KEYWORD_ONLY, backend.name
        assert param.default == "iid", backend.name


def test_counter_noise_draws_the_design_with_the_triton_kernel(monkeypatch):
    from smoothkern.noise.sources import counter

    triton_perturb = registry.resolve("triton", "cpu").perturb
    x, sigma = torch.randn(1, 9), torch.rand(1, 1)
    source = counter.CounterNoise(x, sigma, 4, "uniform", triton_perturb,
                                  sampling="stratified")
    monkeypatch.setattr(counter, "perturb_reference", None)   # no fallback to the reference
    got = source.draw(3, 2).rows
    monkeypatch.undo()
    assert torch.equal(got, perturb_reference(x, sigma, 4, 3, 2, "uniform",
                                              sampling="stratified"))


# ----------------------------------------------------------------------------------------------
# on a GPU: the compiled kernel (float64 log and square root of the GPU's libdevice)


@pytest.mark.cuda
@pytest.mark.parametrize("design", DESIGNS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_gpu_triton_perturb_draws_the_design(design, dtype):
    backend = gpu_backend("triton")
    # Stratified z is float64 math rounded once: as tight as on the CPU. The i.i.d. Box-Muller
    # uses the GPU's float32 log and cos: the tolerance of the other GPU tests.
    tight = design == "stratified" and dtype != torch.bfloat16
    tolerance = dict(rtol=2e-6, atol=2e-6) if tight else dict(rtol=1e-2, atol=1e-5)
    for shape in [(3, 5, 7), (2, 64), (1, 3, 33), (1, 1031)]:
        x = torch.randn(*shape, device="cuda").to(dtype)
        index = torch.tensor([2**32 - 1, 5, 2**31][:shape[0]], device="cuda")
        n = x[0].numel()
        for sigma in (torch.rand(2, shape[0], device="cuda"),
                      torch.rand(2, shape[0], n, device="cuda")):
            for kind in KINDS:
                for start, count in [(3, 40), (2**32 - 5, 5)]:
                    got = backend.perturb(x, sigma, 2**63 + 9, start, count, kind,
                                          example_index=index, sampling=design)
                    want = perturb_reference(x.cpu(), sigma.cpu(), 2**63 + 9, start, count,
                                             kind, example_index=index.cpu(), sampling=design)
                    torch.testing.assert_close(got.cpu().double(), want.double(), **tolerance)
                    if kind == "uniform" and dtype != torch.bfloat16:
                        assert torch.equal(got.cpu(), want)
    if design == "antithetic":      # exactly the negated i.i.d. draws of the same kernel
        x, sigma = torch.zeros(2, 1031, device="cuda"), torch.ones(1, 2, device="cuda")
        iid = backend.perturb(x, sigma, 9, 4, 6, "gaussian").view(6, 2, 1031)
        pair = backend.perturb(x, sigma, 9, 4, 6, "gaussian",
                               sampling="antithetic").view(6, 2, 1031)
        assert torch.equal(pair[0::2], iid[0::2]) and torch.equal(pair[1::2], -iid[0::2])


@pytest.mark.cuda
def test_gpu_stratified_words_and_noise():
    gpu_backend("triton")                               # or a skip that says why
    _, sampling = _triton()
    gen = torch.Generator().manual_seed(3)
    example, sample, element = (torch.randint(0, 2**32, (100_000,), generator=gen)
                                for _ in range(3))
    sample[::2] = sample[::2] % 5000
    words = sampling.stratified_words(2**64 - 1, example.cuda(), sample.cuda(), element.cuda())
    assert torch.equal(words.cpu(), smp.stratified_bits(2**64 - 1, example, sample, element))
    for kind in KINDS:
        got = sampling.word_noise(words, kind).cpu()
        want = smp._from_word(words.cpu(), NoiseKind(kind))
        if kind == "uniform":
            assert torch.equal(got, want)
        else:
            assert_within_one_rounding(got, want)
