"""Base methods: each equals Captum on the same rows, and smooth_grad's batched engine equals the
per-sample loop for every aggregate, noise kind, sweep and snapshot."""

from __future__ import annotations

import warnings

import pytest
import torch
from attr_models import BNNet, FunctionalReluNet, SmallCNN, inputs_for, make
from torch import nn

import smoothkern as sk
from smoothkern.methods import (
    METHODS,
    GradCam,
    Gradient,
    GuidedBackprop,
    GuidedGradCam,
    InputXGradient,
    IntegratedGradients,
    Saliency,
)

LAYERS = {SmallCNN: "features.2", BNNet: "conv"}


@pytest.fixture
def captum_attr():
    """``captum.attr``; only the comparisons with Captum need it (skipped without it)."""
    return pytest.importorskip("captum.attr")


def ours_and_captum(name: str, model: nn.Module, ca):
    """(our method object, a function computing Captum's attribution for (x, target)).

    Args:
        ca: the ``captum.attr`` module.
    """
    layer = LAYERS[type(model)]
    module = model.get_submodule(layer)
    table = {
        "gradient": (Gradient(), lambda x, t: ca.Saliency(model).attribute(x, target=t, abs=False)),
        "saliency": (Saliency(), lambda x, t: ca.Saliency(model).attribute(x, target=t)),
        "input_x_gradient": (InputXGradient(),
                             lambda x, t: ca.InputXGradient(model).attribute(x, target=t)),
        "integrated_gradients": (
            IntegratedGradients(n_steps=6, internal_batch_size=None),
            lambda x, t: ca.IntegratedGradients(model).attribute(x, target=t, n_steps=6)),
        "guided_backprop": (GuidedBackprop(),
                            lambda x, t: ca.GuidedBackprop(model).attribute(x, target=t)),
        "grad_cam": (GradCam(layer), lambda x, t: ca.LayerGradCam(model, module).attribute(
            x, target=t)),
        "guided_grad_cam": (GuidedGradCam(layer),
                            lambda x, t: ca.GuidedGradCam(model, module).attribute(x, target=t)),
    }
    return table[name]


@pytest.mark.parametrize("model_cls", [SmallCNN, BNNet])
@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_equals_captum_bit_for_bit(name, model_cls, captum_attr):
    model = make(model_cls)
    x = inputs_for(model, 5)
    target = torch.tensor([0, 1, 2, 3, 1])
    ours, theirs = ours_and_captum(name, model, captum_attr)
    got = ours.attribute(model, x, target)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = theirs(x.clone(), target)
    assert got.shape == want.shape
    assert torch.equal(got, want)


@pytest.mark.parametrize("rule", ["riemann_left", "riemann_right", "riemann_middle",
                                  "riemann_trapezoid", "gausslegendre"])
def test_integration_rules_equal_captum(rule, captum_attr):
    model = make(SmallCNN)
    x = inputs_for(model, 3)
    target = torch.tensor([4, 0, 2])
    baseline = torch.rand(3, 3, 9, 9)
    got = IntegratedGradients(n_steps=5, integration=rule, baseline=baseline,
                              internal_batch_size=7).attribute(model, x, target)
    want = captum_attr.IntegratedGradients(model).attribute(
        x, baselines=baseline, target=target, n_steps=5, method=rule, internal_batch_size=7)
    assert torch.equal(got, want)


def test_integrated_gradients_chunking_and_completeness():
    model = make(BNNet).double()
    x = inputs_for(model, 4).double()
    target = torch.tensor([0, 1, 2, 3])
    whole = IntegratedGradients(n_steps=20, internal_batch_size=None, record_delta=True)
    one = whole.attribute(model, x, target)
    for size in (1, 9, "auto"):
        other = IntegratedGradients(n_steps=20, internal_batch_size=size)
        torch.testing.assert_close(other.attribute(model, x, target), one)
    # completeness: Gauss-Legendre with 20 points on a piecewise-linear model is close
    assert whole.deltas[0].shape == (4,)
    assert whole.deltas[0].abs().max() < 0.05 * one.abs().sum() / 4
    local = IntegratedGradients(n_steps=20, multiply_by_inputs=False).attribute(model, x, target)
    torch.testing.assert_close(local * x, one)


def test_per_example_baseline_follows_row_order():
    model = make(SmallCNN)
    x = inputs_for(model, 2)
    base = torch.rand(2, 3, 9, 9)
    method = IntegratedGradients(n_steps=4, baseline=base, internal_batch_size=None)
    tiled = method.attribute(model, torch.cat([x, x, x]), torch.tensor([1, 2] * 3))
    single = method.attribute(model, x, torch.tensor([1, 2]))
    torch.testing.assert_close(tiled[4:], single)
    with pytest.raises(ValueError, match="does not fit"):
        IntegratedGradients(baseline=torch.zeros(3, 3, 9, 9)).attribute(
            model, x, torch.tensor([0, 1]))


# -------------------------------------------------------------------------------------------------
# through the engine


CASES = [  # (method, options, model, noise, sweep, snapshots)
    ("gradient", {}, SmallCNN, "gaussian", False, None),
    ("saliency", {}, BNNet, "uniform", True, None),
    ("input_x_gradient", {}, SmallCNN, "gaussian", False, (2, 5)),
    ("integrated_gradients", {"n_steps": 4, "integration": "riemann_trapezoid"}, BNNet,
     "gaussian", True, (3,)),
    ("guided_backprop", {}, SmallCNN, "uniform", False, (1, 5)),
    ("grad_cam", {"layer": "features.2", "upsample": True}, SmallCNN, "gaussian", True, None),
    ("grad_cam", {"layer": "conv", "relu_attributions": True}, BNNet, "uniform", False, (4,)),
    ("guided_grad_cam", {"layer": "conv"}, BNNet, "gaussian", False, (2,)),
]


@pytest.mark.parametrize("name, options, model_cls, noise, sweep, snapshots", CASES)
def test_engine_equals_loop(name, options, model_cls, noise, sweep, snapshots):
    model = make(model_cls)
    x = inputs_for(model, 3)
    kwargs = dict(target=[0, 2, 1], n_samples=5, noise=noise, seed=7,
                  noise_level=[0.05, 0.2] if sweep else 0.1, snapshots=snapshots,
                  aggregate=("mean", "abs", "sq", "var", "geomean"), method=name, **options)
    batched = sk.smooth_grad(model, x, backend="torch", samples_per_pass=2, **kwargs)
    loop = sk.smooth_grad(model, x, backend="loop", **kwargs)
    for agg in batched:
        torch.testing.assert_close(batched[agg], loop[agg], rtol=1e-4, atol=1e-6)
    shape = batched["mean"].shape
    lead = (len(snapshots),) if snapshots else ()
    assert shape[:len(lead) + (2 if sweep else 1)] == (*lead, *((2,) if sweep else ()), 3)
    method = sk.methods.resolve_method(name, **options)
    assert tuple(shape[-len(method.output_shape(model, x[:1])):]) == \
        method.output_shape(model, x[:1])


def test_options_by_keyword_equal_method_object():
    model = make(SmallCNN)
    x = inputs_for(model, 2)
    by_name = sk.smooth_grad(model, x, n_samples=3, method="integrated_gradients", n_steps=5,
                             integration="riemann_left")
    by_object = sk.smooth_grad(model, x, n_samples=3,
                               method=IntegratedGradients(n_steps=5, integration="riemann_left"))
    assert torch.equal(by_name, by_object)


def test_saliency_is_abs_of_gradient_samples():
    model = make(BNNet)
    x = inputs_for(model, 2)
    sal = sk.smooth_grad(model, x, n_samples=4, method="saliency")
    absgrad = sk.smooth_grad(model, x, n_samples=4, method="gradient", aggregate="abs")
    torch.testing.assert_close(sal, absgrad)
    vm = sk.smooth_grad(model, x, n_samples=4, method="saliency", backend="vmap")
    torch.testing.assert_close(vm, sal)


def test_grad_cam_output_shape_and_layer_forms():
    model = make(SmallCNN)
    x = inputs_for(model, 2)
    module = model.features[2]
    assert GradCam("features.2").output_shape(model, x[:1]) == (1, 4, 4)
    assert GradCam(module, upsample=True).output_shape(model, x[:1]) == (1, 9, 9)
    assert GradCam(module, attr_dim_summation=False).output_shape(model, x[:1]) == (8, 4, 4)
    a = sk.smooth_grad(model, x, n_samples=2, method="grad_cam", layer="features.2")
    b = sk.smooth_grad(model, x, n_samples=2, method="grad_cam", layer=module)
    assert a.shape == (2, 1, 4, 4) and torch.equal(a, b)


# -------------------------------------------------------------------------------------------------
# errors and hooks


def test_bad_options_raise_clear_errors():
    model = make(SmallCNN)
    x = inputs_for(model, 1)
    with pytest.raises(ValueError, match="integration rule"):
        IntegratedGradients(integration="simpson")
    with pytest.raises(ValueError, match="n_steps must be >= 2"):
        IntegratedGradients(n_steps=1, integration="riemann_left")
    with pytest.raises(TypeError, match="unexpected keyword argument.*'n_steps'.*'saliency'"):
        sk.smooth_grad(model, x, method="saliency", n_steps=3)
    with pytest.raises(ValueError, match="no layer 'features.9'"):
        sk.smooth_grad(model, x, method="grad_cam", layer="features.9")
    with pytest.raises(ValueError, match="not a submodule"):
        sk.smooth_grad(model, x, method="grad_cam", layer=nn.Conv2d(1, 1, 1))
    with pytest.raises(ValueError, match="cannot run under backend 'vmap'"):
        sk.smooth_grad(model, x, method="guided_backprop", backend="vmap")


def test_guided_backprop_refuses_functional_relu():
    model = make(FunctionalReluNet)
    x = inputs_for(model, 2)
    with pytest.raises(ValueError, match=r"applies ReLU as a function 1 time"):
        sk.smooth_grad(model, x, n_samples=2, method="guided_backprop")
    with pytest.raises(ValueError, match="has none"):
        sk.smooth_grad(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), torch.rand(2, 4),
                       method="guided_backprop")
    assert all(not m._forward_hooks for m in model.modules())


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


class Boom(RuntimeError):
    pass


@pytest.mark.parametrize("method", [GuidedBackprop(), GradCam("features.2"),
                                    GuidedGradCam("features.2")])
def test_hooks_removed_after_exception(method):
    model = make(SmallCNN)
    x = inputs_for(model, 2)
    calls = {"n": 0, "hooks_seen": 0}

    def explode(module, args, out):  # the caller's own hook: raises inside the method's pass
        calls["n"] += 1
        calls["hooks_seen"] = max(calls["hooks_seen"], _hook_count(model))
        if calls["n"] >= 2:
            raise Boom("injected")

    own = model.head.register_forward_hook(explode)
    before = _hook_count(model)
    with pytest.raises(Boom), method.session(model):
        method.attribute(model, x, torch.tensor([0, 1]))
        method.attribute(model, x, torch.tensor([0, 1]))
    assert calls["hooks_seen"] > before  # the method did install hooks...
    assert _hook_count(model) == before  # ...and removed them itself
    own.remove()
    with pytest.raises(Boom):  # the same without a session (hooks per call)
        calls["n"] = 1
        model.head.register_forward_hook(explode)
        method.attribute(model, x, torch.tensor([0, 1]))
    assert _hook_count(model) == before
