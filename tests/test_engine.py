"""Every backend against the naive loop; analytic checks; chunking, snapshots, sweeps, OOM."""

import math
import re

import pytest
import torch
from helpers import Quadratic, assert_close_results, tiny_mlp, tiny_resnet

import smoothkern as sk
import smoothkern.methods
from smoothkern.core.stats import AGGREGATES
from smoothkern.ops import backends as registry
from smoothkern.ops import extension

FAST_BACKENDS = [name for name in registry.available("cpu") if name != "loop"]


@pytest.fixture(scope="module")
def resnet():
    return tiny_resnet()


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("noise", ["gaussian", "uniform"])
def test_backend_equals_loop_on_residual_bn_cnn(resnet, backend, noise):
    x = torch.rand(3, 3, 11, 7)  # odd spatial sizes
    kwargs = dict(n_samples=7, aggregate=AGGREGATES, noise=noise, seed=11, target=[0, 4, 2])
    want = sk.smooth_grad(resnet, x, backend="loop", **kwargs)
    got = sk.smooth_grad(resnet, x, backend=backend, samples_per_pass=3, **kwargs)
    assert_close_results(got, want)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_backend_equals_loop_with_sweep_and_snapshots(resnet, backend):
    x = torch.rand(2, 3, 9, 10)
    kwargs = dict(n_samples=6, aggregate=("mean", "var", "geomean"), noise_level=(0.0, 0.1, 0.3),
                  snapshots=(1, 4, 6), seed=3)
    want = sk.smooth_grad(resnet, x, backend="loop", **kwargs)
    got = sk.smooth_grad(resnet, x, backend=backend, samples_per_pass=4, **kwargs)
    assert want["mean"].shape == (3, 3, 2, 3, 9, 10)
    assert_close_results(got, want)


@pytest.mark.parametrize("per_pass", [1, 2, 5, 7, None])
def test_result_does_not_depend_on_samples_per_pass(resnet, per_pass):
    x = torch.rand(2, 3, 8, 8)
    kwargs = dict(n_samples=7, aggregate=AGGREGATES, seed=5, backend="torch")
    want = sk.smooth_grad(resnet, x, samples_per_pass=7, **kwargs)
    got = sk.smooth_grad(resnet, x, samples_per_pass=per_pass, **kwargs)
    assert_close_results(got, want, rtol=1e-5, atol=1e-7)


def test_snapshot_k_equals_a_run_with_k_samples(resnet):
    x = torch.rand(2, 3, 8, 8)
    steps = sk.smooth_grad(resnet, x, n_samples=9, snapshots=(2, 5, 9), samples_per_pass=4)
    assert steps.shape == (3, 2, 3, 8, 8)
    for index, k in enumerate((2, 5, 9)):
        alone = sk.smooth_grad(resnet, x, n_samples=k, samples_per_pass=4)
        torch.testing.assert_close(steps[index], alone, rtol=1e-5, atol=1e-7)


def test_snapshots_need_not_include_n_samples(resnet):
    x = torch.rand(1, 3, 6, 6)
    out = sk.smooth_grad(resnet, x, n_samples=6, snapshots=(3,), aggregate=("mean",))
    assert out["mean"].shape == (1, 1, 3, 6, 6)


def test_sweep_level_equals_run_at_that_level(resnet):
    x = torch.rand(2, 3, 8, 8)
    grid = sk.smooth_grad(resnet, x, n_samples=5, noise_level=(0.05, 0.2))
    alone = sk.smooth_grad(resnet, x, n_samples=5, noise_level=0.2)
    torch.testing.assert_close(grid[1], alone, rtol=1e-5, atol=1e-7)


def test_default_target_is_the_predicted_class(resnet):
    x = torch.rand(3, 3, 8, 8)
    predicted = resnet(x).argmax(1)
    torch.testing.assert_close(sk.smooth_grad(resnet, x, n_samples=3),
                               sk.smooth_grad(resnet, x, predicted, n_samples=3))


def test_stdevs_per_example_tensor(resnet):
    x = torch.rand(2, 3, 8, 8)
    per_example = sk.smooth_grad(resnet, x, n_samples=4, stdevs=torch.tensor([0.1, 0.3]))
    first = sk.smooth_grad(resnet, x[:1], n_samples=4, stdevs=0.1)
    torch.testing.assert_close(per_example[:1], first, rtol=1e-5, atol=1e-7)


def test_float64_model_and_accumulator():
    model = tiny_mlp().double()
    x = torch.rand(3, 7, dtype=torch.float64)
    kwargs = dict(n_samples=5, aggregate=AGGREGATES, accumulator_dtype=torch.float64)
    want = sk.smooth_grad(model, x, backend="loop", **kwargs)
    # The torch backend draws the loop's noise bit for bit; kernel backends agree only to the
    # float32 rounding of log/cos, which a float64 tolerance this tight would see.
    got = sk.smooth_grad(model, x, samples_per_pass=2, backend="torch", **kwargs)
    assert got["mean"].dtype == torch.float64
    assert_close_results(got, want, rtol=1e-10, atol=1e-12)


def test_zero_noise_gives_the_plain_gradient(resnet):
    x = torch.rand(2, 3, 8, 8)
    target = torch.tensor([1, 3])
    leaf = x.clone().requires_grad_(True)
    resnet(leaf).gather(1, target.view(-1, 1)).sum().backward()
    g = leaf.grad
    out = sk.smooth_grad(resnet, x, target, n_samples=4, noise_level=0.0, aggregate=AGGREGATES)
    torch.testing.assert_close(out["mean"], g)
    torch.testing.assert_close(out["abs"], g.abs())
    torch.testing.assert_close(out["sq"], g.square())
    assert float(out["var"].abs().max()) <= 1e-12
    torch.testing.assert_close(out["geomean"], g.abs(), rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("noise", ["gaussian", "uniform"])
def test_quadratic_model_mean_and_variance(noise):
    torch.manual_seed(0)
    n, m, sigma = 6, 4000, 0.3
    a = torch.randn(n, n, dtype=torch.float64)
    a = (a + a.T) / 2
    model = Quadratic(a)
    x = torch.randn(1, n, dtype=torch.float64)
    out = sk.smooth_grad(model, x, 0, n_samples=m, stdevs=sigma, noise=noise,
                         aggregate=("mean", "var"), accumulator_dtype=torch.float64)
    mean_expected = (x @ a)[0]
    var_expected = sigma**2 * a.square().sum(dim=1)
    mean_se = torch.sqrt(var_expected / m)
    # Var of the sample variance: (μ4 − σ⁴)/m, with μ4 = 3σ⁴ (Gaussian) or 1.8σ⁴ (uniform) of
    # a linear combination... bounded above by the Gaussian value for both.
    var_se = var_expected * math.sqrt(2 / m)
    assert ((out["mean"][0] - mean_expected).abs() <= 5 * mean_se).all()
    assert ((out["var"][0] - var_expected).abs() <= 5 * var_se).all()


def test_out_of_memory_halves_the_pass_and_keeps_the_result(resnet, monkeypatch):
    x = torch.rand(2, 3, 8, 8)
    kwargs = dict(n_samples=8, aggregate=AGGREGATES, seed=2)
    want = sk.smooth_grad(resnet, x, samples_per_pass=8, **kwargs)
    method = sk.methods.Gradient()
    original, sizes = method.attribute, []

    def flaky(model, inputs, target):
        sizes.append(inputs.shape[0])
        if inputs.shape[0] > 4:  # more than 2 samples × B=2 rows does not "fit"
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(model, inputs, target)

    monkeypatch.setattr(method, "attribute", flaky)
    got = sk.smooth_grad(resnet, x, samples_per_pass=8, method=method, **kwargs)
    assert sizes[:3] == [16, 8, 4]
    assert_close_results(got, want, rtol=1e-5, atol=1e-7)


def test_cpu_allocation_failure_is_retried(resnet, monkeypatch):
    x = torch.rand(1, 3, 8, 8)
    method = sk.methods.Gradient()
    original, calls = method.attribute, []

    def flaky(model, inputs, target):
        calls.append(inputs.shape[0])
        if len(calls) == 1:
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: "
                               "can't allocate memory: you tried to allocate 10 bytes")
        return original(model, inputs, target)

    monkeypatch.setattr(method, "attribute", flaky)
    sk.smooth_grad(resnet, x, n_samples=4, samples_per_pass=4, method=method)
    assert calls == [4, 2, 2]


def test_out_of_memory_frees_the_failed_pass_before_the_retry(resnet, monkeypatch):
    # The failed pass's frames hold its activations; the split must run after the handler is
    # left, or nothing can be released (a retry inside `except` keeps the traceback alive).
    import gc
    import weakref

    method = sk.methods.Gradient()
    original, held, alive_at_retry = method.attribute, [], []

    def flaky(model, inputs, target):
        if held:
            gc.collect()
            alive_at_retry.append(held[0]() is not None)
        if inputs.shape[0] > 2:
            activations = torch.empty(1024, 1024)     # what a failed forward holds
            held.append(weakref.ref(activations))
            raise torch.OutOfMemoryError("CUDA out of memory")
        return original(model, inputs, target)

    monkeypatch.setattr(method, "attribute", flaky)
    sk.smooth_grad(resnet, torch.rand(1, 3, 8, 8), n_samples=4, samples_per_pass=4,
                   method=method)
    assert alive_at_retry and not any(alive_at_retry)


def test_out_of_memory_at_one_sample_is_raised(resnet, monkeypatch):
    method = sk.methods.Gradient()

    def broken(model, inputs, target):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(method, "attribute", broken)
    with pytest.raises(torch.OutOfMemoryError):
        sk.smooth_grad(resnet, torch.rand(1, 3, 8, 8), n_samples=4, method=method)


def test_backend_report_is_complete_and_true():
    """Every name ``backend=`` accepts is reported, as "available" or a one-line reason, and the
    report holds: an available backend runs (and equals the loop), an unavailable one is refused
    with that reason."""
    report = sk.backend_status()
    assert set(report) == set(registry.names())
    assert {"torch", "vmap", "loop", "cpp", "cuda", "triton"} <= set(report)
    for name, state in report.items():
        assert isinstance(state, str) and state.strip() and "\n" not in state, (name, state)
    assert report["torch"] == report["vmap"] == report["loop"] == "available"
    assert (report["cpp"] == "available") == extension.has_ops()
    assert report["cpp"] == (extension.why_no_ops() or "available")
    assert report["cuda"] != "available"  # the CUDA kernels never take CPU tensors
    model, x = tiny_mlp(), torch.rand(2, 7)
    want = sk.smooth_grad(model, x, n_samples=3, seed=4, backend="loop")
    for name, state in report.items():
        if state == "available":
            got = sk.smooth_grad(model, x, n_samples=3, seed=4, backend=name)
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6,
                                       msg=lambda text, name=name: f"{name}: {text}")
        else:
            with pytest.raises(ValueError, match=re.escape(state)):
                sk.smooth_grad(model, x, n_samples=3, backend=name)
