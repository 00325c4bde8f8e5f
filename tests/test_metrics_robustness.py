"""Robustness metrics: Captum's numbers for the same seed, a plain loop as the reference, the
fused smoothkern job equal to the unfused computation, and bad arguments refused."""

from __future__ import annotations

import functools
import inspect
import warnings

import captum.attr as ca
import captum.metrics as cm
import pytest
import torch
from attr_models import GridOutputNet, SmallCNN, TwoInputNet, inputs_for, make
from torch import nn

import smoothkern as sk
import smoothkern.captum as skc
import smoothkern.captum.metrics as drop_in
from smoothkern.core.planning import forward_measuring_saved_bytes
from smoothkern.metrics import sensitivity as sensitivity_module
from smoothkern.metrics import sensitivity_fused
from smoothkern.metrics.robustness import (
    MetricArgumentError,
    avg_sensitivity,
    infidelity,
    infidelity_perturb_func_decorator,
    sensitivity_max,
)

pytestmark = pytest.mark.filterwarnings("ignore:Input Tensor")   # Captum's requires_grad note


@pytest.fixture(scope="module")
def digits():
    from smoothkern.data import digit_examples
    from smoothkern.models import digits_cnn

    x, y = digit_examples()
    return digits_cnn().eval(), x[[0, 3, 7]].contiguous(), y[[0, 3, 7]].contiguous()


@pytest.fixture(scope="module")
def small():
    model = make(SmallCNN)
    return model, inputs_for(model, 3), torch.tensor([4, 0, 2])


@pytest.fixture(scope="module")
def two_inputs():
    model = make(TwoInputNet)
    gen = torch.Generator().manual_seed(5)
    image, vector = torch.rand(3, 2, 6, 7, generator=gen), torch.rand(3, 4, generator=gen)
    scale = torch.rand(3, generator=gen) + 0.5
    return model, (image, vector), scale


def both(metric_ours, metric_captum, seed, *args, **kwargs):
    """Both metrics after the same seed; also the generator's next draw after each."""
    torch.manual_seed(seed)
    ours = metric_ours(*args, **kwargs)
    after_ours = torch.rand(3)
    torch.manual_seed(seed)
    theirs = metric_captum(*args, **kwargs)
    return ours, theirs, after_ours, torch.rand(3)


# ----------------------------------------------------------------------------------------------
# sensitivity: Captum's numbers


@pytest.mark.parametrize("seed, max_examples", [(0, None), (1, 3), (2, 7), (3, 12), (4, 2)])
def test_sensitivity_max_equals_captum_on_the_digits_cnn(digits, seed, max_examples):
    model, x, y = digits
    saliency = ca.Saliency(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)     # Captum's and ours: limit below B
        ours, theirs, after_ours, after_theirs = both(
            sensitivity_max, cm.sensitivity_max, seed, saliency.attribute, x, target=y,
            n_perturb_samples=5, max_examples_per_batch=max_examples)
    assert ours.shape == (3,)
    assert torch.equal(ours, theirs)
    assert torch.equal(after_ours, after_theirs)       # the generator consumed alike


@pytest.mark.parametrize("norm_ord", ["fro", 1, float("inf")])
def test_sensitivity_max_with_tuple_inputs_forward_args_and_norms(two_inputs, norm_ord):
    model, inputs, scale = two_inputs
    method = ca.InputXGradient(model)
    ours, theirs, after_ours, after_theirs = both(
        sensitivity_max, cm.sensitivity_max, 7, method.attribute, inputs, target=[0, 2, 1],
        additional_forward_args=(scale,), n_perturb_samples=4, max_examples_per_batch=7,
        norm_ord=norm_ord, perturb_radius=0.05)
    assert torch.equal(ours, theirs) and torch.equal(after_ours, after_theirs)


def test_sensitivity_max_expands_baselines_and_tensor_targets_like_captum():
    model = make(SmallCNN)
    x = inputs_for(model, 3)
    baselines = torch.rand(3, 3, 9, 9, generator=torch.Generator().manual_seed(2)) * 0.1
    method = ca.IntegratedGradients(model)
    ours, theirs, _, _ = both(sensitivity_max, cm.sensitivity_max, 3, method.attribute, x,
                              target=torch.tensor([4, 0, 2]), baselines=baselines, n_steps=4,
                              n_perturb_samples=3, max_examples_per_batch=6)
    assert torch.equal(ours, theirs)


def test_sensitivity_max_with_tuple_targets_and_a_custom_perturbation():
    model = make(GridOutputNet)
    x = inputs_for(model, 2)

    def perturb(inputs):             # one parameter: no radius passed, as in Captum
        return inputs + 0.01 * torch.randn_like(inputs)

    ours, theirs, _, _ = both(sensitivity_max, cm.sensitivity_max, 4,
                              ca.Saliency(model).attribute, x, perturb_func=perturb,
                              target=(1, 0), n_perturb_samples=3)
    assert torch.equal(ours, theirs)


# ----------------------------------------------------------------------------------------------
# sensitivity: a plain loop as the reference


def recording_perturbation(store):
    def perturb(inputs, radius):
        noisy = inputs + torch.empty_like(inputs).uniform_(-radius, radius)
        store.append(noisy)
        return noisy
    return perturb


@pytest.mark.parametrize("max_examples", [None, 4])
def test_sensitivities_equal_a_loop_over_examples_and_perturbations(max_examples):
    model = make(SmallCNN)
    x, target = inputs_for(model, 2), torch.tensor([1, 3])
    explain = ca.Saliency(model).attribute
    drawn: list[torch.Tensor] = []
    worst = sensitivity_max(explain, x, recording_perturbation(drawn), 0.1, 5, target=target,
                            max_examples_per_batch=max_examples)
    count = len(drawn)
    mean = avg_sensitivity(explain, x, recording_perturbation(drawn), 0.1, 5, target=target,
                           max_examples_per_batch=max_examples)
    rows = torch.cat(drawn[:count])           # chunk after chunk, example-major in each
    again = torch.cat(drawn[count:])
    for b in range(2):
        clean = explain(x[b:b + 1], target=int(target[b]))
        changes, changes_again = [], []
        for j in range(5):
            chunk = 5 if max_examples is None else 2
            start = (j // chunk) * chunk * 2            # rows of the chunks before
            k = min(chunk, 5 - (j // chunk) * chunk)
            row = start + b * k + j % chunk
            for source, out in ((rows, changes), (again, changes_again)):
                moved = explain(source[row:row + 1], target=int(target[b]))
                out.append(float((clean - moved).norm() / clean.norm()))
        assert worst[b].item() == pytest.approx(max(changes), rel=1e-5)
        assert mean[b].item() == pytest.approx(sum(changes_again) / 5, rel=1e-5)


# ----------------------------------------------------------------------------------------------
# infidelity


def noise_and_perturbed(inputs):
    noise = 0.03 * torch.randn_like(inputs)
    return noise, inputs - noise


@pytest.mark.parametrize("seed, max_examples, normalize",
                         [(0, None, False), (1, 5, True), (2, 4, False), (3, 13, True)])
def test_infidelity_equals_captum_on_the_digits_cnn(digits, seed, max_examples, normalize):
    model, x, y = digits
    attributions = ca.Saliency(model).attribute(x, target=y)
    ours, theirs, after_ours, after_theirs = both(
        infidelity, cm.infidelity, seed, model, noise_and_perturbed, x, attributions,
        target=y, n_perturb_samples=6, max_examples_per_batch=max_examples, normalize=normalize)
    assert ours.shape == (3,)
    assert torch.equal(ours, theirs) and torch.equal(after_ours, after_theirs)


@pytest.mark.parametrize("multiply_by_inputs", [True, False])
def test_infidelity_with_tuple_inputs_baselines_forward_args_and_the_decorator(
        two_inputs, multiply_by_inputs):
    model, inputs, scale = two_inputs
    attributions = ca.InputXGradient(model).attribute(inputs, target=1,
                                                      additional_forward_args=(scale,))

    def perturb(inputs, baselines):
        return tuple(x - 0.02 * torch.randn_like(x) + 0.0 * b for x, b in zip(inputs, baselines))

    ours_perturb = infidelity_perturb_func_decorator(multiply_by_inputs)(perturb)
    captum_perturb = cm.infidelity_perturb_func_decorator(multiply_by_inputs)(perturb)
    results = []
    for metric, func in ((infidelity, ours_perturb), (cm.infidelity, captum_perturb)):
        torch.manual_seed(9)
        results.append(metric(model, func, inputs, attributions,
                              baselines=(0.1, torch.zeros(3, 4)),
                              additional_forward_args=(scale,), target=1,
                              n_perturb_samples=5, max_examples_per_batch=6))
    assert torch.equal(results[0], results[1])


def test_infidelity_with_a_random_forward_consumes_the_generator_like_captum(digits):
    model, x, y = digits
    def noisy_model(inputs):                                        # the forward draws
        return nn.functional.dropout(model(inputs), 0.3, training=True)

    attributions = ca.Saliency(model).attribute(x, target=y)
    ours, theirs, after_ours, after_theirs = both(
        infidelity, cm.infidelity, 5, noisy_model, noise_and_perturbed, x, attributions,
        target=y.tolist(), n_perturb_samples=4, max_examples_per_batch=6)
    assert torch.equal(ours, theirs) and torch.equal(after_ours, after_theirs)


def test_infidelity_equals_a_loop_over_perturbations():
    model = make(SmallCNN)
    x = inputs_for(model, 2)
    attributions = torch.rand(2, 3, 9, 9, generator=torch.Generator().manual_seed(1))
    drawn: list[tuple[torch.Tensor, torch.Tensor]] = []

    def perturb(inputs):
        noise = 0.05 * torch.randn_like(inputs)
        drawn.append((noise, inputs - noise))
        return noise, inputs - noise

    got = infidelity(model, perturb, x, attributions, target=2, n_perturb_samples=3,
                     max_examples_per_batch=4)               # chunks of 2 and 1 perturbations
    noise = [n for n, _ in drawn]
    for b in range(2):
        errors = []
        for chunk, k in zip(noise, (2, 1)):
            for j in range(k):
                i = chunk[b * k + j]
                with torch.no_grad():
                    change = model(x[b:b + 1])[0, 2] - model((x[b] - i)[None])[0, 2]
                errors.append(float(((i * attributions[b]).sum() - change) ** 2))
        assert got[b].item() == pytest.approx(sum(errors) / 3, rel=1e-4)


# ----------------------------------------------------------------------------------------------
# fused smoothkern explanations equal the unfused computation


def unfused(metric, explainer, *args, **kwargs):
    """The metric with the explainer behind a plain function it cannot recognise (which hands
    smooth_grad and noise_grad the one tensor they take where Captum passes a 1-tuple)."""
    takes_tensor = isinstance(explainer, functools.partial) and explainer.func in (
        sk.smooth_grad, sk.noise_grad)

    def plain(inputs, **kw):
        if takes_tensor and isinstance(inputs, tuple):
            (inputs,) = inputs
        return explainer(inputs, **kw)
    return metric(plain, *args, **kwargs)


class CallCount:
    def __init__(self, monkeypatch):
        self.rows, self.unfused = 0, 0
        for cls in (sensitivity_fused.NoiseFunction, sensitivity_fused.DropInNoiseTunnel):
            monkeypatch.setattr(cls, "call_rows", self.wrap(cls.call_rows, "rows"))
            monkeypatch.setattr(cls, "call", self.wrap(cls.call, "unfused"))

    def wrap(self, fn, name):
        def counted(*args, **kwargs):
            setattr(self, name, getattr(self, name) + 1)
            return fn(*args, **kwargs)
        return counted


@pytest.mark.parametrize("metric", [sensitivity_max, avg_sensitivity])
@pytest.mark.parametrize("max_examples, calls", [(None, 1), (7, 3)])
def test_smooth_grad_fused_equals_unfused(small, monkeypatch, metric, max_examples, calls):
    model, x, y = small
    explain = functools.partial(sk.smooth_grad, model, n_samples=6, noise_level=0.2,
                                aggregate="sq", noise="uniform")
    count = CallCount(monkeypatch)
    torch.manual_seed(11)
    fused = metric(explain, x, target=y, n_perturb_samples=4,
                   max_examples_per_batch=max_examples)
    assert (count.rows, count.unfused) == (calls, 0)     # 15 rows: one call, or 7 + 7 + 1
    torch.manual_seed(11)
    reference = unfused(metric, explain, x, target=y, n_perturb_samples=4,
                        max_examples_per_batch=max_examples)
    torch.testing.assert_close(fused, reference, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("metric", [sensitivity_max, avg_sensitivity])
def test_one_example_with_a_one_element_tensor_target(small, monkeypatch, metric):
    model, x, y = small
    explain = functools.partial(sk.smooth_grad, model, n_samples=4, noise_level=0.2)
    count = CallCount(monkeypatch)
    torch.manual_seed(7)
    fused = metric(explain, x[:1], target=y[:1], n_perturb_samples=4)
    assert count.rows == 1 and fused.shape == (1,)
    torch.manual_seed(7)
    reference = unfused(metric, explain, x[:1], target=int(y[0]), n_perturb_samples=4)
    torch.testing.assert_close(fused, reference, rtol=1e-5, atol=1e-7)


def test_fused_rows_are_split_at_the_engines_memory_budget(small, monkeypatch):
    model, x, y = small
    _, row_bytes = forward_measuring_saved_bytes(model, x)
    monkeypatch.setenv("SMOOTHKERN_MEMORY_BUDGET", str(6 * row_bytes))   # 15 rows: 3 calls of 5
    explain = functools.partial(sk.smooth_grad, model, n_samples=3)
    count = CallCount(monkeypatch)
    torch.manual_seed(5)
    fused = sensitivity_max(explain, x, target=y, n_perturb_samples=4)
    assert (count.rows, count.unfused) == (3, 0)
    torch.manual_seed(5)
    reference = unfused(sensitivity_max, explain, x, target=y, n_perturb_samples=4)
    torch.testing.assert_close(fused, reference, rtol=1e-5, atol=1e-7)


def test_smooth_grad_itself_with_model_and_an_example_offset(small, monkeypatch):
    model, x, _ = small
    count = CallCount(monkeypatch)
    torch.manual_seed(2)
    fused = sensitivity_max(sk.smooth_grad, x, model=model, n_samples=5, example_index=40,
                            n_perturb_samples=3, method="input_x_gradient")
    assert count.rows == 1
    torch.manual_seed(2)
    reference = unfused(sensitivity_max, functools.partial(
        sk.smooth_grad, model, n_samples=5, example_index=40, method="input_x_gradient"),
        x, n_perturb_samples=3)
    torch.testing.assert_close(fused, reference, rtol=1e-5, atol=1e-7)


def test_noise_grad_fused_equals_unfused(small, monkeypatch):
    model, x, y = small
    explain = functools.partial(sk.noise_grad, model, n_models=2, n_samples=2, noise_level=0.1)
    count = CallCount(monkeypatch)
    torch.manual_seed(3)
    fused = avg_sensitivity(explain, x[:2], target=y[:2], n_perturb_samples=3)
    assert count.rows == 1
    torch.manual_seed(3)
    reference = unfused(avg_sensitivity, explain, x[:2], target=y[:2], n_perturb_samples=3)
    torch.testing.assert_close(fused, reference, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("example_index, fused_calls", [(None, 1), (7, 0)],
                         ids=["fused", "callers_example_index_runs_unfused"])
def test_drop_in_noise_tunnel_with_tuple_inputs_equals_unfused(two_inputs, monkeypatch,
                                                               example_index, fused_calls):
    """Fused as one job; a caller's own example_index runs unfused instead (not passed twice)."""
    model, inputs, scale = two_inputs
    tunnel = skc.NoiseTunnel(skc.InputXGradient(model))
    kwargs = dict(target=torch.tensor([2, 0, 1]), additional_forward_args=(scale,),
                  nt_samples=4, stdevs=(0.1, 0.2), n_perturb_samples=3)
    if example_index is not None:
        kwargs["example_index"] = example_index
    count = CallCount(monkeypatch)
    torch.manual_seed(4)
    got = drop_in.sensitivity_max(tunnel.attribute, inputs, **kwargs)
    assert count.rows == fused_calls
    torch.manual_seed(4)
    reference = unfused(sensitivity_max, tunnel.attribute, inputs, **kwargs)
    tolerance = {"rtol": 1e-5, "atol": 1e-7} if fused_calls else {"rtol": 0, "atol": 0}
    torch.testing.assert_close(got, reference, **tolerance)


def test_drop_in_integrated_gradients_with_per_example_baselines(monkeypatch):
    model = make(SmallCNN)
    x = inputs_for(model, 2)
    tunnel = skc.NoiseTunnel(skc.IntegratedGradients(model))
    explain = functools.partial(tunnel.attribute, nt_samples=3, stdevs=0.1, n_steps=4)
    kwargs = dict(target=3, baselines=torch.full_like(x, 0.2), n_perturb_samples=4,
                  max_examples_per_batch=5)
    count = CallCount(monkeypatch)
    torch.manual_seed(6)
    fused = sensitivity_max(explain, x, **kwargs)
    assert (count.rows, count.unfused) == (2, 0)          # 10 rows in calls of 5
    torch.manual_seed(6)
    reference = unfused(sensitivity_max, explain, x, **kwargs)
    torch.testing.assert_close(fused, reference, rtol=1e-5, atol=1e-7)


def test_drop_in_with_captums_rng_is_captums_metric(digits):
    model, x, y = digits
    kwargs = dict(target=y, nt_samples=3, stdevs=0.1, n_perturb_samples=3)
    torch.manual_seed(8)
    ours = drop_in.sensitivity_max(skc.NoiseTunnel(skc.Saliency(model)).attribute, x,
                                   rng="captum", **kwargs)
    torch.manual_seed(8)
    theirs = cm.sensitivity_max(ca.NoiseTunnel(ca.Saliency(model)).attribute, x, **kwargs)
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("options", [
    dict(aggregate=("mean", "var")), dict(snapshots=(2, 4)), dict(noise_level=(0.1, 0.2)),
    dict(stdevs=torch.tensor([0.1, 0.2, 0.3])), dict(example_index=[3, 4, 5])])
def test_smooth_grad_calls_that_are_not_one_map_per_row_run_unfused(digits, options):
    model, _, _ = digits
    explain = functools.partial(sk.smooth_grad, model, n_samples=4, **options)
    assert sensitivity_fused.fusable(explain, {}, 3) is None


@pytest.mark.parametrize("options", [
    dict(rng="captum"), dict(nt_type=("smoothgrad", "vargrad")),
    dict(draw_baseline_from_distrib=True, baselines=torch.zeros(2, 3, 9, 9)),
    dict(return_convergence_delta=True)])
def test_drop_in_calls_with_other_noise_or_results_run_unfused(options):
    tunnel = skc.NoiseTunnel(skc.IntegratedGradients(make(SmallCNN)))
    assert sensitivity_fused.fusable(tunnel.attribute, options, 3) is None
    assert sensitivity_fused.fusable(tunnel.attribute, {"nt_samples": 4}, 3) is not None
    deep_lift = skc.NoiseTunnel(skc.DeepLift(make(SmallCNN)))
    assert sensitivity_fused.fusable(deep_lift.attribute, {}, 3) is None


# ----------------------------------------------------------------------------------------------
# the drop-in module, the caller's tensors, bad arguments


def test_drop_in_serves_captums_names_and_signatures():
    assert set(drop_in.__all__) == set(cm.__all__)
    for name in cm.__all__:
        ours = inspect.signature(getattr(drop_in, name)).parameters
        theirs = inspect.signature(getattr(cm, name)).parameters
        assert [(p.name, p.kind) for p in ours.values()] == \
            [(p.name, p.kind) for p in theirs.values()]
        assert [p.default for p in ours.values() if p.name != "perturb_func"] == \
            [p.default for p in theirs.values() if p.name != "perturb_func"]


def test_the_callers_inputs_and_model_are_left_as_they_were(small):
    model, x, y = small
    x = x.clone().requires_grad_(True)
    before = x.detach().clone()
    params = {k: v.clone() for k, v in model.state_dict().items()}
    explain = functools.partial(sk.smooth_grad, model, n_samples=3)
    sensitivity_max(explain, x, target=y, n_perturb_samples=2)
    infidelity(model, noise_and_perturbed, x, torch.ones_like(x), target=y, n_perturb_samples=2)
    assert torch.equal(x.detach(), before) and x.requires_grad and x.grad is None
    assert all(torch.equal(v, params[k]) for k, v in model.state_dict().items())
    assert not model.training


@pytest.mark.parametrize("change, error, match", [
    (dict(explanation_func=3), TypeError, "explanation_func"),
    (dict(inputs=[1.0]), TypeError, "inputs"),
    (dict(inputs=(torch.rand(2, 3, 9, 9), torch.rand(3, 4))), ValueError, "dim 0"),
    (dict(n_perturb_samples=0), ValueError, "n_perturb_samples"),
    (dict(n_perturb_samples=2.0), TypeError, "n_perturb_samples"),
    (dict(max_examples_per_batch=0), ValueError, "max_examples_per_batch"),
    (dict(perturb_radius=-0.1), ValueError, "perturb_radius"),
    (dict(norm_ord="nuc"), ValueError, "norm_ord"),
    (dict(norm_ord="l2"), ValueError, "norm_ord"),
    (dict(perturb_func=lambda x, r: x[:1]), ValueError, "perturb_func"),
    (dict(explanation_func=lambda x, **k: torch.zeros(1, 5)), ValueError, "one row"),
])
def test_bad_sensitivity_arguments_are_refused(change, error, match):
    model = make(SmallCNN)
    kwargs = dict(explanation_func=ca.Saliency(model).attribute, inputs=inputs_for(model, 2),
                  target=1)
    kwargs.update(change)
    with pytest.raises(error, match=match):
        sensitivity_max(**kwargs)


def test_smooth_grad_without_its_model_is_refused(digits):
    _, x, _ = digits
    with pytest.raises(TypeError, match="model="):
        sensitivity_max(sk.smooth_grad, x)


@pytest.mark.parametrize("change, match", [
    (dict(attributions=torch.zeros(2, 3, 9, 8)), "shaped like the inputs"),
    (dict(attributions=(torch.zeros(2, 3, 9, 9),) * 2), "must match"),
    (dict(perturb_func=lambda x: x + 1), "perturbations, perturbed"),
    (dict(perturb_func=lambda x: (x[:, :1], x)), "shaped like"),
    (dict(n_perturb_samples=-1), "n_perturb_samples"),
])
def test_bad_infidelity_arguments_are_refused(change, match):
    model = make(SmallCNN)
    x = inputs_for(model, 2)
    kwargs = dict(forward_func=model, perturb_func=noise_and_perturbed, inputs=x,
                  attributions=torch.zeros_like(x), target=0)
    kwargs.update(change)
    with pytest.raises(MetricArgumentError, match=match):
        infidelity(**kwargs)
    assert issubclass(MetricArgumentError, AssertionError)    # Captum asserts these


def test_unfused_and_fused_paths_share_the_default_perturbation(digits):
    """The module's default perturbation draws what Captum's does."""
    _, x, _ = digits
    from captum.metrics._core.sensitivity import default_perturb_func as captum_default
    torch.manual_seed(1)
    ours = sensitivity_module.default_perturb_func((x, x[:, :, :3]), 0.3)
    torch.manual_seed(1)
    theirs = captum_default((x, x[:, :, :3]), 0.3)
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
