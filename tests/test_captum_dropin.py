"""smoothkern.captum: rng="captum" equals captum.attr.NoiseTunnel bit for bit; Captum's own
NoiseTunnel expectations hold for the drop-in; extras and errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from attr_models import (
    BNNet,
    GridOutputNet,
    SmallCNN,
    TwoInputNet,
    inputs_for,
    make,
)
from torch import Tensor

import smoothkern as sk
import smoothkern.captum as skc

ca = pytest.importorskip("captum.attr")

NT_TYPES = ("smoothgrad", "smoothgrad_sq", "vargrad")


def pair(name: str, model):
    """(smoothkern.captum object, captum.attr object, extra attribute kwargs)."""
    layer = {SmallCNN: lambda m: m.features[2], BNNet: lambda m: m.conv,
             TwoInputNet: lambda m: m.conv}[type(model)](model)
    return {
        "saliency": (skc.Saliency(model), ca.Saliency(model), {}),
        "signed_saliency": (skc.Saliency(model), ca.Saliency(model), {"abs": False}),
        "input_x_gradient": (skc.InputXGradient(model), ca.InputXGradient(model), {}),
        "integrated_gradients": (skc.IntegratedGradients(model), ca.IntegratedGradients(model),
                                 {"n_steps": 4, "method": "riemann_middle"}),
        "guided_backprop": (skc.GuidedBackprop(model), ca.GuidedBackprop(model), {}),
        "layer_grad_cam": (skc.LayerGradCam(model, layer), ca.LayerGradCam(model, layer),
                           {"relu_attributions": True}),
        "guided_grad_cam": (skc.GuidedGradCam(model, layer), ca.GuidedGradCam(model, layer), {}),
    }[name]


def run_both(ours, theirs, inputs, seed=3, **kwargs):
    torch.manual_seed(seed)
    np.random.seed(seed)  # Captum draws baselines from numpy (draw_baseline_from_distrib)
    got = skc.NoiseTunnel(ours).attribute(inputs, rng="captum", **kwargs)
    torch.manual_seed(seed)
    np.random.seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = ca.NoiseTunnel(theirs).attribute(inputs, **kwargs)
    return got, want


def assert_same(got, want, exact=True):
    if isinstance(want, tuple):
        assert isinstance(got, tuple) and len(got) == len(want)
        for g, w in zip(got, want):
            assert_same(g, w, exact)
        return
    assert got.shape == want.shape and got.dtype == want.dtype
    if exact:
        assert torch.equal(got, want), (got - want).abs().max()
    else:
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


METHOD_NAMES = ["saliency", "signed_saliency", "input_x_gradient", "integrated_gradients",
                "guided_backprop", "layer_grad_cam", "guided_grad_cam"]


@pytest.mark.parametrize("name", METHOD_NAMES)
@pytest.mark.parametrize("model_cls, batch", [(SmallCNN, 1), (SmallCNN, 3), (BNNet, 4)])
def test_captum_rng_equals_captum(name, model_cls, batch):
    model = make(model_cls)
    x = inputs_for(model, batch)
    ours, theirs, extra = pair(name, model)
    target = torch.arange(batch) % 4
    for nt_type in NT_TYPES:
        for chunk in (None, 2):
            got, want = run_both(ours, theirs, x, nt_type=nt_type, nt_samples=5,
                                 nt_samples_batch_size=chunk, stdevs=0.3, target=target, **extra)
            assert_same(got, want, exact=name != "integrated_gradients")


@pytest.mark.parametrize("name", ["saliency", "input_x_gradient", "integrated_gradients",
                                  "guided_backprop", "layer_grad_cam"])
def test_multi_input_with_additional_args_equals_captum(name):
    model = make(TwoInputNet)
    gen = torch.Generator().manual_seed(4)
    inputs = (torch.rand(3, 2, 6, 7, generator=gen), torch.rand(3, 4, generator=gen))
    scale = torch.tensor([1.0, -2.0, 0.5])
    ours, theirs, extra = pair(name, model)
    if name == "integrated_gradients":
        extra = {**extra, "baselines": (torch.rand(3, 2, 6, 7, generator=gen), 0.25)}
    for nt_type in NT_TYPES:
        got, want = run_both(ours, theirs, inputs, nt_type=nt_type, nt_samples=4,
                             nt_samples_batch_size=3, stdevs=(0.2, 0.05), target=[0, 2, 1],
                             additional_forward_args=(scale,), **extra)
        assert_same(got, want, exact=name != "integrated_gradients")


def test_convergence_delta_matches_captum():
    model = make(BNNet)
    x = inputs_for(model, 2)
    got, want = run_both(skc.IntegratedGradients(model), ca.IntegratedGradients(model), x,
                         nt_samples=5, nt_samples_batch_size=2, stdevs=0.1, target=[1, 3],
                         n_steps=6, return_convergence_delta=True)
    assert_same(got[0], want[0], exact=False)
    assert got[1].shape == want[1].shape == (10,)
    torch.testing.assert_close(got[1], want[1], rtol=1e-4, atol=1e-5)
    # Captum's own object works too, in the default rng
    attrs, delta = skc.NoiseTunnel(ca.IntegratedGradients(model)).attribute(
        x, nt_samples=3, target=[1, 3], n_steps=6, return_convergence_delta=True)
    assert attrs.shape == x.shape and delta.shape == (6,)


# -------------------------------------------------------------------------------------------------
# Captum's own NoiseTunnel test expectations, for the drop-in


@pytest.mark.parametrize("rng", ["smoothkern", "captum"])
def test_captum_expectations_shapes_chunking_targets(rng):
    model = make(SmallCNN)
    x = inputs_for(model, 4)
    nt = skc.NoiseTunnel(skc.Saliency(model))
    # shapes follow the inputs, tuple in -> tuple out
    out = nt.attribute((x,), nt_samples=3, target=1, rng=rng)
    assert isinstance(out, tuple) and out[0].shape == x.shape
    # chunked equals unchunked at a tiny σ (Captum's test_batched_..._tiny_stdevs idea)
    for nt_type in NT_TYPES:
        whole = nt.attribute(x, nt_type=nt_type, nt_samples=7, stdevs=1e-6, target=2, rng=rng)
        chunked = nt.attribute(x, nt_type=nt_type, nt_samples=7, nt_samples_batch_size=3,
                               stdevs=1e-6, target=2, rng=rng)
        torch.testing.assert_close(whole, chunked, rtol=1e-4, atol=1e-8)
    # a target per example: each example explained for its own class
    targets = torch.tensor([0, 1, 2, 3])
    per_example = nt.attribute(x, nt_samples=2, stdevs=1e-6, target=targets, rng=rng)
    for b in range(4):
        alone = nt.attribute(x[b:b + 1], nt_samples=2, stdevs=1e-6, target=int(targets[b]),
                             rng=rng)
        torch.testing.assert_close(per_example[b:b + 1], alone, rtol=1e-4, atol=1e-7)
    # smoothgrad at σ≈0 is the plain attribution
    plain = skc.Saliency(model).attribute(x, target=targets)
    torch.testing.assert_close(per_example, plain, rtol=1e-3, atol=1e-6)


def test_scalar_output_needs_no_target():
    model = make(SmallCNN)
    x = inputs_for(model, 2)

    def score(inp):
        return model(inp)[:, 2]

    got, want = run_both(skc.Saliency(score), ca.Saliency(score), x, nt_samples=3, stdevs=0.1)
    assert_same(got, want)


@pytest.mark.parametrize("chunk", [None, 2, 3])
def test_baselines_drawn_from_distribution_equal_captum(chunk):
    model = make(BNNet)
    x = inputs_for(model, 3)
    distribution = torch.rand(7, *x.shape[1:], generator=torch.Generator().manual_seed(5))
    got, want = run_both(skc.IntegratedGradients(model), ca.IntegratedGradients(model), x,
                         nt_samples=5, nt_samples_batch_size=chunk, stdevs=0.1,
                         target=[0, 1, 2], baselines=distribution, n_steps=5,
                         draw_baseline_from_distrib=True, return_convergence_delta=True)
    assert_same(got[0], want[0], exact=False)
    torch.testing.assert_close(got[1], want[1], rtol=1e-4, atol=1e-5)
    # several inputs: a distribution for one, a number for the other
    two = make(TwoInputNet)
    gen = torch.Generator().manual_seed(6)
    inputs = (torch.rand(3, 2, 6, 7, generator=gen), torch.rand(3, 4, generator=gen))
    baselines = (torch.rand(4, 2, 6, 7, generator=gen), 0.25)
    got, want = run_both(skc.IntegratedGradients(two), ca.IntegratedGradients(two), inputs,
                         nt_samples=5, nt_samples_batch_size=chunk, stdevs=(0.2, 0.05),
                         target=[0, 2, 1], baselines=baselines, n_steps=4,
                         draw_baseline_from_distrib=True)
    assert_same(got, want, exact=False)


def test_baselines_drawn_by_the_counter_stream_are_chunk_invariant():
    model = make(BNNet)
    x = inputs_for(model, 3)
    distribution = torch.rand(7, *x.shape[1:], generator=torch.Generator().manual_seed(5))
    nt = skc.NoiseTunnel(skc.IntegratedGradients(model))

    def run(**kwargs):
        return nt.attribute(x, nt_samples=6, stdevs=0.1, target=0, n_steps=4,
                            **{"baselines": distribution, "draw_baseline_from_distrib": True,
                               **kwargs})

    one_pass = run()
    for other in (run(nt_samples_batch_size=1), run(nt_samples_batch_size=4),
                  run(backend="loop")):
        torch.testing.assert_close(other, one_pass, rtol=1e-5, atol=1e-7)
    assert not torch.allclose(run(seed=1), one_pass)                 # the draws follow the seed
    fixed = run(baselines=distribution[:1], draw_baseline_from_distrib=False)
    assert not torch.allclose(fixed, one_pass)                       # rows really are drawn
    # every drawn row is one of the distribution's rows, each of them used
    from smoothkern.captum.baseline_draws import counter_indices
    rows = counter_indices(0, 0, 7, 0, 200, 3)
    assert rows.shape == (200, 3) and set(rows.unique().tolist()) == set(range(7))
    with pytest.raises(ValueError, match="must be \\[M, ...\\] rows shaped like inputs"):
        run(baselines=torch.rand(4, 1, 3, 3))


@pytest.mark.parametrize("target", [(1, 0), (-1, 1), [(0, 1), (2, 0), (1, 1)],
                                    torch.tensor(2)])
def test_tuple_targets_into_outputs_with_more_dims_equal_captum(target):
    model = make(GridOutputNet)
    x = inputs_for(model, 3)
    if isinstance(target, Tensor):   # one index for [B, 3, 2] outputs picks a row, not a scalar
        with pytest.raises(ValueError, match="give 2 index"):
            skc.NoiseTunnel(skc.Saliency(model)).attribute(x, target=target)
        return
    for nt_type in NT_TYPES:
        got, want = run_both(skc.Saliency(model), ca.Saliency(model), x, nt_type=nt_type,
                             nt_samples=4, nt_samples_batch_size=3, stdevs=0.1, target=target)
        assert_same(got, want)
    ours = skc.NoiseTunnel(skc.Saliency(model)).attribute(x, nt_samples=3, target=target)
    assert ours.shape == x.shape


def test_bad_tuple_targets_raise():
    model = make(GridOutputNet)
    x = inputs_for(model, 2)
    nt = skc.NoiseTunnel(skc.Saliency(model))
    with pytest.raises(ValueError, match="out of range"):
        nt.attribute(x, target=(3, 0))
    with pytest.raises(ValueError, match="give 2 index"):
        nt.attribute(x, target=[(0,), (1,)])
    with pytest.raises(TypeError, match="an int or a tuple of ints"):
        nt.attribute(x, target=(0, 1.5))
    with pytest.raises(TypeError, match="must hold integers"):
        skc.NoiseTunnel(skc.Saliency(make(SmallCNN))).attribute(x, target=torch.tensor(1.7))


def test_stdevs_and_noise_level_together_are_refused():
    model = make(SmallCNN)
    x = inputs_for(model, 2)
    nt = skc.NoiseTunnel(skc.Saliency(model))
    with pytest.raises(ValueError, match="either stdevs .* or noise_level"):
        nt.attribute(x, target=0, nt_samples=2, stdevs=0.2, noise_level=0.1)
    # either alone works; the default stdevs is Captum's 1.0
    torch.testing.assert_close(nt.attribute(x, target=0, nt_samples=2),
                               nt.attribute(x, target=0, nt_samples=2, stdevs=1.0))


def test_guided_grad_cam_on_several_inputs_equals_captum():
    model = make(TwoInputNet)
    gen = torch.Generator().manual_seed(4)
    inputs = (torch.rand(3, 2, 6, 7, generator=gen), torch.rand(3, 4, generator=gen))
    ours = skc.GuidedGradCam(model, model.conv)
    theirs = ca.GuidedGradCam(model, model.conv)
    for nt_type in NT_TYPES:
        with pytest.warns(UserWarning, match="cannot be interpolated to inputs \\[1\\]"):
            got, want = run_both(ours, theirs, inputs, nt_type=nt_type, nt_samples=4,
                                 nt_samples_batch_size=3, stdevs=(0.2, 0.05), target=[0, 2, 1])
        # the vector input cannot take the image-shaped map: empty, as in Captum
        assert got[1].shape == want[1].shape == (0,)
        assert_same(got[0], want[0])
        assert got[0].abs().sum() > 0
    with pytest.warns(UserWarning):
        plain = ours.attribute(inputs, target=[0, 2, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = theirs.attribute(inputs, target=[0, 2, 1])
    assert_same(plain[0], expected[0])


def test_layer_grad_cam_passes_grad_kwargs_to_autograd():
    model = make(SmallCNN)
    x = inputs_for(model, 2)
    layer = model.features[2]
    got = skc.LayerGradCam(model, layer).attribute(x, target=1, grad_kwargs={"retain_graph": True})
    want = ca.LayerGradCam(model, layer).attribute(x, target=1, grad_kwargs={"retain_graph": True})
    assert_same(got, want)
    with pytest.raises(TypeError, match="not_an_autograd_option"):
        skc.NoiseTunnel(skc.LayerGradCam(model, layer)).attribute(
            x, target=1, grad_kwargs={"not_an_autograd_option": True})


# -------------------------------------------------------------------------------------------------
# the default rng and smoothkern's extras


def test_default_rng_equals_smooth_grad_and_is_chunk_invariant():
    model = make(BNNet)
    x = inputs_for(model, 3)
    nt = skc.NoiseTunnel(ca.Saliency(model))  # Captum's own object
    out = nt.attribute(x, nt_type=("smoothgrad", "vargrad", "abs", "geomean"), nt_samples=6,
                       stdevs=0.2, target=[0, 1, 2], seed=11)
    ref = sk.smooth_grad(model, x, [0, 1, 2], n_samples=6, stdevs=0.2, seed=11,
                         method="saliency", aggregate=("mean", "var", "abs", "geomean"))
    for nt_type, agg in (("smoothgrad", "mean"), ("vargrad", "var"), ("abs", "abs"),
                         ("geomean", "geomean")):
        torch.testing.assert_close(out[nt_type], ref[agg])
    chunked = nt.attribute(x, nt_samples=6, nt_samples_batch_size=4, stdevs=0.2,
                           target=[0, 1, 2], seed=11)
    torch.testing.assert_close(chunked, out["smoothgrad"], rtol=1e-5, atol=1e-7)
    loop = nt.attribute(x, nt_samples=6, stdevs=0.2, target=[0, 1, 2], seed=11, backend="loop")
    torch.testing.assert_close(loop, out["smoothgrad"], rtol=1e-5, atol=1e-7)


def test_uniform_noise_level_and_per_input_sigma():
    model = make(TwoInputNet)
    gen = torch.Generator().manual_seed(2)
    inputs = (torch.rand(2, 2, 6, 7, generator=gen), 3 * torch.rand(2, 4, generator=gen))
    nt = skc.NoiseTunnel(skc.Saliency(model))
    a = nt.attribute(inputs, nt_samples=4, noise="uniform", noise_level=0.1, target=0, seed=1)
    b = nt.attribute(inputs, nt_samples=4, noise="uniform", noise_level=0.1, target=0, seed=1,
                     backend="loop")
    c = nt.attribute(inputs, nt_samples=4, noise="uniform", noise_level=0.1, target=0, seed=2)
    assert isinstance(a, tuple) and a[1].shape == (2, 4)
    for u, v in zip(a, b):
        torch.testing.assert_close(u, v, rtol=1e-5, atol=1e-7)
    assert not torch.equal(a[0], c[0])
    # one σ shared by all inputs equals the engine's own stream on the joined input
    same = nt.attribute(inputs, nt_samples=3, stdevs=(0.1, 0.1), target=0, backend="loop")
    shared = nt.attribute(inputs, nt_samples=3, stdevs=0.1, target=0)
    for u, v in zip(same, shared):
        torch.testing.assert_close(u, v, rtol=1e-5, atol=1e-7)


# -------------------------------------------------------------------------------------------------
# errors


def test_bad_input_raises_clear_errors():
    model = make(SmallCNN)
    x = inputs_for(model, 2)
    nt = skc.NoiseTunnel(skc.Saliency(model))
    with pytest.raises(ValueError, match="unknown nt_type"):
        nt.attribute(x, nt_type="smooth", target=0)
    with pytest.raises(ValueError, match="nt_samples must be an int >= 1"):
        nt.attribute(x, nt_samples=0, target=0)
    with pytest.raises(ValueError, match="target is required"):
        nt.attribute(x)
    with pytest.raises(ValueError, match="one entry per example"):
        nt.attribute(x, target=[0, 1, 2])
    with pytest.raises(ValueError, match="one per input"):
        nt.attribute(x, stdevs=(0.1, 0.2), target=0)
    with pytest.raises(TypeError, match="unexpected keyword argument 'n_steps'"):
        nt.attribute(x, target=0, n_steps=3)          # Captum's own error (generic path)
    with pytest.raises(ValueError, match="has no convergence delta"):
        nt.attribute(x, target=0, return_convergence_delta=True)
    with pytest.raises(ValueError, match="rng='captum'"):
        nt.attribute(x, target=0, rng="captum", noise="uniform")
    # a refused call draws nothing from numpy's global generator
    np.random.seed(0)
    with pytest.raises(ValueError, match="rng='captum'"):
        skc.NoiseTunnel(skc.IntegratedGradients(model)).attribute(
            x, target=0, rng="captum", seed=3, baselines=torch.rand(4, *x.shape[1:]),
            draw_baseline_from_distrib=True)
    assert np.random.randint(1 << 30) == np.random.RandomState(0).randint(1 << 30)
    with pytest.raises(ValueError, match="rng must be"):
        nt.attribute(x, target=0, rng="numpy")
    with pytest.raises(TypeError, match="takes a captum.attr attribution object"):
        skc.NoiseTunnel(model)
    # a training-mode BatchNorm model runs as Captum runs it (generic path), with a warning
    bn = make(BNNet).train()
    x_bn = inputs_for(bn, 2)
    with pytest.warns(UserWarning, match="training mode"):
        torch.manual_seed(0)
        ours = skc.NoiseTunnel(skc.Saliency(bn)).attribute(x_bn, target=0, rng="captum")
    torch.manual_seed(0)
    assert torch.equal(ours, ca.NoiseTunnel(ca.Saliency(bn)).attribute(x_bn, target=0))
    assert bn.training


def test_hooks_gone_after_exception_in_drop_in():
    model = make(SmallCNN)
    x = inputs_for(model, 2)
    calls = {"n": 0}

    def explode(module, args, out):
        calls["n"] += 1
        if calls["n"] == 3:  # fails inside the noisy passes, after the method hooked the model
            raise RuntimeError("injected")

    handle = model.head.register_forward_hook(explode)
    for attribution in (skc.GuidedGradCam(model, model.features[2]),
                        skc.GuidedBackprop(model)):
        calls["n"] = 0
        with pytest.raises(RuntimeError, match="injected"):
            skc.NoiseTunnel(attribution).attribute(x, nt_samples=4, nt_samples_batch_size=1,
                                                   target=0)
        hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
                    for m in model.modules())
        assert hooks == 1  # only the caller's own
    handle.remove()


def test_one_noise_tunnel_builds_its_prepared_copy_once(monkeypatch):
    """Each call rebinds the same wrapper, so the cached prepared copy (BatchNorm folded) is
    reused, and it runs the current call's inputs and additional arguments."""
    import gc
    import weakref

    from smoothkern.model_cache import prepare

    builds = []
    build = prepare._build
    monkeypatch.setattr(prepare, "_build", lambda *a: builds.append(1) or build(*a))
    model = make(BNNet)
    nt = skc.NoiseTunnel(skc.Saliency(model))
    kwargs = dict(nt_samples=5, stdevs=0.2, target=[0, 3], seed=2)
    x, y = inputs_for(model, 2), inputs_for(model, 2, seed=7)
    first = nt.attribute(x, **kwargs)
    second = nt.attribute(y, **kwargs)
    assert len(builds) == 1
    fresh = skc.NoiseTunnel(skc.Saliency(model)).attribute(y, **kwargs)
    torch.testing.assert_close(second, fresh, rtol=0, atol=0)
    assert not torch.equal(first, second)
    assert len(builds) == 2                       # the fresh object built its own
    alive = weakref.ref(model)
    del model, nt, fresh
    gc.collect()
    assert alive() is None


class ScaledBNNet(BNNet):
    """BNNet (a prepared copy folds its BatchNorm) with a per-example scale argument."""

    def forward(self, x: Tensor, scale: Tensor) -> Tensor:
        return super().forward(x) * scale.view(-1, 1)


def test_a_reused_wrapper_sees_each_calls_inputs_and_additional_args():
    model = make(ScaledBNNet)
    x = inputs_for(make(BNNet), 3)
    nt = skc.NoiseTunnel(skc.Saliency(model))
    kwargs = dict(nt_samples=4, stdevs=0.1, seed=5)
    calls = [(x, torch.tensor([1.0, -2.0, 0.5]), [0, 2, 1]),
             (x, torch.tensor([3.0, 1.0, -1.0]), [0, 2, 1]),
             (x[:2], torch.tensor([0.5, 2.0]), 3)]           # another batch size too
    for inputs, scale, target in calls:
        got = nt.attribute(inputs, additional_forward_args=(scale,), target=target, **kwargs)
        want = skc.NoiseTunnel(skc.Saliency(model)).attribute(
            inputs, additional_forward_args=(scale,), target=target, **kwargs)
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_the_kept_wrapper_lets_go_of_the_calls_arguments():
    import gc
    import weakref

    model = make(ScaledBNNet)
    nt = skc.NoiseTunnel(skc.Saliency(model))
    scale = torch.tensor([1.0, -2.0, 0.5])
    nt.attribute(inputs_for(make(BNNet), 3), additional_forward_args=(scale,), target=0,
                 nt_samples=2, stdevs=0.1)
    alive = weakref.ref(scale)
    del scale
    gc.collect()
    assert alive() is None
