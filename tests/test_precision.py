"""Reduced-precision model passes: the accuracy contract, float32 noise and statistics."""

from __future__ import annotations

import pytest
import torch

import smoothkern as sk
from smoothkern.core.precision import fast_reduced_precision
from smoothkern.data.digits import digit_examples
from smoothkern.models import cifar10_resnet18, digits_cnn

DTYPES = [torch.bfloat16, torch.float16]


def relative_l2(a, b):
    return ((a - b).norm() / b.norm()).item()


def assert_contract(model, x, **kw):
    """The reduced-precision map is nearer the fp32 map of its seed than a quarter of the
    distance between two fp32 seeds (the Monte-Carlo error at the same m)."""
    reference = sk.smooth_grad(model, x, seed=0, **kw)
    other_seed = sk.smooth_grad(model, x, seed=1, **kw)
    monte_carlo = relative_l2(other_seed, reference)
    for dtype in DTYPES:
        low = sk.smooth_grad(model, x, seed=0, compute_dtype=dtype, **kw)
        assert low.dtype == torch.float32
        assert relative_l2(low, reference) <= monte_carlo / 4, (dtype, kw)
        assert relative_l2(low, reference) > 0            # it did run in reduced precision


@pytest.fixture(scope="module")
def digits():
    x, _ = digit_examples(per_class=1)
    return digits_cnn(), x[:3]


@pytest.mark.parametrize("method, options", [
    ("gradient", {}), ("input_x_gradient", {}), ("integrated_gradients", {"n_steps": 8}),
    ("guided_backprop", {}), ("grad_cam", {"layer": "last_conv"})])
def test_contract_on_the_bundled_digits_model(digits, method, options):
    model, x = digits
    if options.get("layer") == "last_conv":
        options = {"layer": [n for n, m in model.named_modules()
                             if isinstance(m, torch.nn.Conv2d)][-1]}
    assert_contract(model, x, method=method, n_samples=16, **options)


def test_contract_on_a_cifar_resnet18():
    torch.manual_seed(0)
    model = cifar10_resnet18().eval()
    assert_contract(model, torch.rand(1, 3, 32, 32), n_samples=12, backend="torch")


def test_reduced_precision_keeps_noise_and_float32_statistics(digits):
    model, x = digits
    # every backend and pass size give the same map up to the model's own rounding
    want = sk.smooth_grad(model, x, n_samples=6, compute_dtype=torch.bfloat16, backend="loop",
                          aggregate=("mean", "var"))
    got = sk.smooth_grad(model, x, n_samples=6, compute_dtype=torch.bfloat16,
                         samples_per_pass=4, aggregate=("mean", "var"))
    for name in want:
        assert got[name].dtype == torch.float32
        assert relative_l2(got[name], want[name]) < 0.05
    # the inputs' own dtype and the caller's autocast state are untouched
    assert x.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")


def test_the_drop_in_takes_compute_dtype(digits):
    skc = pytest.importorskip("smoothkern.captum")
    model, x = digits
    nt = skc.NoiseTunnel(skc.Saliency(model))
    want = nt.attribute(x, target=1, nt_samples=8, stdevs=0.1)
    low = nt.attribute(x, target=1, nt_samples=8, stdevs=0.1, compute_dtype=torch.bfloat16)
    assert low.dtype == x.dtype and 0 < relative_l2(low, want) < 0.1


@pytest.mark.parametrize("bad", [torch.float64, torch.int8, "bf16"])
def test_bad_compute_dtype_is_refused(digits, bad):
    model, x = digits
    with pytest.raises(TypeError, match="compute_dtype"):
        sk.smooth_grad(model, x, compute_dtype=bad)


def test_hardware_report_names_both_dtypes():
    report = fast_reduced_precision("cpu")
    assert set(report) == {"bfloat16", "float16"}
    assert all(v.startswith(("fast", "slow")) for v in report.values())


def test_memory_limit_sizes_passes_and_keeps_the_result(digits, monkeypatch,
                                                         gradient_pass_rows):
    model, x = digits
    monkeypatch.delenv("SMOOTHKERN_MEMORY_BUDGET", raising=False)
    monkeypatch.delenv("SMOOTHKERN_CPU_ROWS", raising=False)
    calls = gradient_pass_rows
    want = sk.smooth_grad(model, x, n_samples=8, samples_per_pass=8)
    calls.clear()
    got = sk.smooth_grad(model, x, n_samples=8, memory_limit=1)    # one row's worth at most
    assert max(calls) == x.shape[0]                  # one sample (B rows) per pass
    torch.testing.assert_close(got, want)
    for bad in (0, -5, float("inf"), "1GB", True):
        with pytest.raises(ValueError, match="memory_limit"):
            sk.smooth_grad(model, x, memory_limit=bad)


@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["auto", "torch", "triton"])
def test_contract_on_the_gpu(digits, backend):
    # the same autocast path on CUDA (bf16 and fp16 tensor cores), every GPU kernel set
    model, x = digits
    model, x = model.cuda(), x.cuda()
    try:
        assert_contract(model, x, n_samples=16, backend=backend)
        report = fast_reduced_precision(x.device)
        assert set(report) == {"bfloat16", "float16"}
    finally:
        model.cpu()
