"""NoiseTunnel over every Captum algorithm: equal to captum.attr.NoiseTunnel bit for bit under
rng="captum", equal to the loop reference under the counter-based noise; the classes behave as
Captum's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

ca = pytest.importorskip("captum.attr")
skc = pytest.importorskip("smoothkern.captum")


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 3)).eval()


MODEL = mlp()
LAYER = MODEL[0]
DIST = torch.rand(4, 5, generator=torch.Generator().manual_seed(1))   # baselines distribution
T = {"target": 1}

# (constructor, attribute options): every kind of Captum algorithm, input, layer and neuron
ALGORITHMS = [
    (lambda: ca.Deconvolution(MODEL), T),
    (lambda: ca.DeepLift(MODEL), T),
    (lambda: ca.DeepLiftShap(MODEL), {**T, "baselines": DIST}),
    (lambda: ca.GradientShap(MODEL), {**T, "baselines": DIST, "n_samples": 3}),
    (lambda: ca.FeatureAblation(MODEL), T),
    (lambda: ca.FeaturePermutation(MODEL), T),
    (lambda: ca.Occlusion(MODEL), {**T, "sliding_window_shapes": (2,)}),
    (lambda: ca.ShapleyValueSampling(MODEL), {**T, "n_samples": 2}),
    (lambda: ca.Lime(MODEL), {**T, "n_samples": 8}),
    (lambda: ca.KernelShap(MODEL), {**T, "n_samples": 8}),
    (lambda: ca.LRP(MODEL), T),
    (lambda: ca.LayerConductance(MODEL, LAYER), {**T, "n_steps": 4}),
    (lambda: ca.LayerIntegratedGradients(MODEL, LAYER), {**T, "n_steps": 4}),
    (lambda: ca.LayerGradientXActivation(MODEL, LAYER), T),
    (lambda: ca.LayerActivation(MODEL, LAYER), {}),
    (lambda: ca.LayerDeepLift(MODEL, LAYER), T),
    (lambda: ca.LayerFeatureAblation(MODEL, LAYER), T),
    (lambda: ca.LayerGradientShap(MODEL, LAYER), {**T, "baselines": DIST, "n_samples": 2}),
    (lambda: ca.InternalInfluence(MODEL, LAYER), {**T, "n_steps": 4}),
    (lambda: ca.NeuronGradient(MODEL, LAYER), {"neuron_selector": 1}),
    (lambda: ca.NeuronIntegratedGradients(MODEL, LAYER), {"neuron_selector": 1, "n_steps": 4}),
    (lambda: ca.NeuronConductance(MODEL, LAYER), {**T, "neuron_selector": 1, "n_steps": 4}),
    (lambda: ca.NeuronDeepLift(MODEL, LAYER), {"neuron_selector": 1}),
    (lambda: ca.NeuronGuidedBackprop(MODEL, LAYER), {"neuron_selector": 1}),
    (lambda: ca.NeuronDeconvolution(MODEL, LAYER), {"neuron_selector": 1}),
    (lambda: ca.NeuronFeatureAblation(MODEL, LAYER), {"neuron_selector": 1}),
    (lambda: ca.NeuronGradientShap(MODEL, LAYER),
     {"neuron_selector": 1, "baselines": DIST, "n_samples": 2}),
]
IDS = [make().__class__.__name__ for make, _ in ALGORITHMS]
X = torch.rand(3, 5, generator=torch.Generator().manual_seed(2))


def both(make, options, inputs=X, **nt):
    """(ours with rng="captum", Captum's) after the same torch and numpy seeds."""
    out = []
    for tunnel, extra in ((skc.NoiseTunnel, {"rng": "captum"}), (ca.NoiseTunnel, {})):
        torch.manual_seed(7)
        np.random.seed(7)
        out.append(tunnel(make()).attribute(inputs, **nt, **extra, **options))
    return out


@pytest.mark.parametrize(("make", "options"), ALGORITHMS, ids=IDS)
@pytest.mark.parametrize("nt_type", ["smoothgrad", "vargrad"])
def test_every_algorithm_equals_captum_bit_for_bit(make, options, nt_type):
    ours, theirs = both(make, options, nt_type=nt_type, nt_samples=5, nt_samples_batch_size=2,
                        stdevs=0.2, draw_baseline_from_distrib="baselines" in options)
    ours, theirs = (o if isinstance(o, tuple) else (o,) for o in (ours, theirs))
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert torch.equal(a, b)


def test_drawn_baselines_with_numpy_draws_inside_the_algorithm_equal_captum():
    # GradientShap's inner NoiseTunnel(InputBaselineXGradient) draws baselines and alphas from
    # numpy: the draws must interleave in Captum's order (remainder chunk included)
    from captum.attr._core.gradient_shap import InputBaselineXGradient

    ours, theirs = both(lambda: InputBaselineXGradient(MODEL), {**T, "baselines": DIST},
                        nt_samples=7, nt_samples_batch_size=3, stdevs=0.1,
                        draw_baseline_from_distrib=True)
    assert torch.equal(ours, theirs)


def test_convergence_delta_of_a_generic_algorithm_equals_captum():
    (a, da), (b, db) = both(lambda: ca.DeepLift(MODEL), T, nt_samples=4,
                            nt_samples_batch_size=3, stdevs=0.1, return_convergence_delta=True)
    assert torch.equal(a, b) and torch.equal(da, db) and da.shape == (3 * 4,)


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 3), nn.Linear(6, 3)

    def forward(self, x, y, scale):
        return torch.relu(self.a(x) + self.b(y.flatten(1))) * scale


def test_tuple_inputs_and_additional_args_on_the_generic_path():
    torch.manual_seed(0)
    model = TwoInputs().eval()
    x, y = torch.rand(3, 4), torch.rand(3, 2, 3)
    scale = torch.tensor([[1.0], [2.0], [0.5]])
    options = dict(target=[0, 1, 2], additional_forward_args=(scale,))
    outs = both(lambda: ca.DeepLift(model), options, inputs=(x, y), nt_samples=5,
                nt_samples_batch_size=2, stdevs=(0.1, 0.3))
    assert isinstance(outs[0], tuple) and len(outs[0]) == 2
    for a, b in zip(*outs):
        assert torch.equal(a, b)
    # the counter-based noise with a σ per input on the kernel sets, same as the loop reference
    nt = skc.NoiseTunnel(ca.DeepLift(model))
    want = nt.attribute((x, y), nt_samples=6, stdevs=(0.1, 0.3), backend="loop", **options)
    from smoothkern.ops import backends

    for backend in backends.available("cpu"):
        if backend in ("loop", "vmap"):
            continue
        got = nt.attribute((x, y), nt_samples=6, nt_samples_batch_size=4, stdevs=(0.1, 0.3),
                           backend=backend, **options)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("make", "options"),
                         [ALGORITHMS[1], ALGORITHMS[4], ALGORITHMS[12], ALGORITHMS[3]],
                         ids=[IDS[1], IDS[4], IDS[12], IDS[3]])
def test_counter_noise_on_the_generic_path_matches_the_loop_and_is_chunk_invariant(make,
                                                                                  options):
    nt = skc.NoiseTunnel(make())
    types = ("smoothgrad", "smoothgrad_sq", "vargrad", "abs", "geomean")
    kw = dict(nt_type=types, nt_samples=5, stdevs=0.2, seed=11, **options)
    if "baselines" in options:
        kw["draw_baseline_from_distrib"] = True
    torch.manual_seed(0)            # GradientShap's own alphas come from torch/numpy
    np.random.seed(0)
    want = nt.attribute(X, backend="loop", **kw)
    for batch_size in (1, 2, None):
        torch.manual_seed(0)
        np.random.seed(0)
        got = nt.attribute(X, nt_samples_batch_size=batch_size, **kw)
        if "n_samples" in options:  # the algorithm draws its own numbers per call: only shapes
            assert all(got[t].shape == want[t].shape for t in types)
            continue
        for t in types:
            torch.testing.assert_close(got[t], want[t], rtol=1e-5, atol=1e-6)
    assert bool((got["abs"] + 1e-6 >= got["smoothgrad"].abs()).all())


def test_an_algorithm_captums_noise_tunnel_cannot_call():
    # LayerLRP.attribute has no __wrapped__, so captum.attr.NoiseTunnel fails on it
    with pytest.raises(AttributeError):
        ca.NoiseTunnel(ca.LayerLRP(MODEL, LAYER)).attribute(X, target=1)
    nt = skc.NoiseTunnel(ca.LayerLRP(MODEL, LAYER))
    got = nt.attribute(X, target=1, nt_samples=3, stdevs=0.1)
    want = nt.attribute(X, target=1, nt_samples=3, stdevs=0.1, backend="loop")
    assert got.shape == (3, 6)
    torch.testing.assert_close(got, want)


def test_uniform_noise_and_noise_level_on_the_generic_path():
    nt = skc.NoiseTunnel(ca.DeepLift(MODEL))
    a = nt.attribute(X, target=1, nt_samples=4, noise="uniform", noise_level=0.1, seed=1)
    b = nt.attribute(X, target=1, nt_samples=4, noise="gaussian", noise_level=0.1, seed=1)
    c = nt.attribute(X, target=1, nt_samples=4, noise="uniform", noise_level=0.1, seed=1)
    assert torch.equal(a, c) and not torch.equal(a, b)


def test_classes_behave_as_captums():
    for ours, theirs in ((skc.Saliency, ca.Saliency), (skc.IntegratedGradients,
                                                      ca.IntegratedGradients),
                         (skc.InputXGradient, ca.InputXGradient),
                         (skc.GuidedBackprop, ca.GuidedBackprop)):
        obj = ours(MODEL)
        assert isinstance(obj, theirs)
        with pytest.raises(NotImplementedError):
            obj.attribute_future()
        assert obj.forward_func is MODEL
        assert obj.has_convergence_delta() == theirs(MODEL).has_convergence_delta()
        assert obj.multiplies_by_inputs == theirs(MODEL).multiplies_by_inputs
        torch.testing.assert_close(obj.attribute(X, target=1), theirs(MODEL).attribute(X, target=1))
    ig = skc.IntegratedGradients(MODEL)
    attr = ig.attribute(X, target=1, n_steps=5)
    delta = ig.compute_convergence_delta(attr, torch.zeros_like(X), X, target=1)
    assert delta.shape == (3,)
    nt = skc.NoiseTunnel(ig)
    with pytest.raises(NotImplementedError):
        nt.attribute_future()
    assert nt.has_convergence_delta() and nt.multiplies_by_inputs and nt.forward_func is MODEL
    # smoothkern.captum serves every other captum.attr name as Captum's own
    assert skc.DeepLift is ca.DeepLift and "LayerConductance" in dir(skc)


def test_wrong_targets_raise_an_error_that_is_value_and_assertion_error():
    nt = skc.NoiseTunnel(skc.Saliency(MODEL))
    for bad in (dict(), dict(target=[0, 1]), dict(target=(1, 0))):
        with pytest.raises(AssertionError):
            nt.attribute(X, **bad)
        with pytest.raises(ValueError):
            nt.attribute(X, **bad)
    with pytest.raises(AssertionError):
        nt.attribute(X, target=0, nt_type="smooth")


@pytest.mark.parametrize("backend", ["cuda", "triton", "nope"])
def test_a_requested_backend_is_run_or_refused_never_replaced(backend):
    import smoothkern as sk

    if sk.backend_status("cpu").get(backend) == "available":
        pytest.skip(f"{backend} runs here")
    model = TwoInputs().eval()
    nt = skc.NoiseTunnel(skc.Saliency(model))
    with pytest.raises(ValueError, match=f"backend {backend!r}"):  # per-input σ too
        nt.attribute((torch.rand(2, 4), torch.rand(2, 2, 3)), stdevs=(0.1, 0.2), target=0,
                     additional_forward_args=(1.0,), backend=backend)


def test_captums_own_algorithms_built_on_noise_tunnel_keep_captums_stream(monkeypatch):
    # GradientShap builds a NoiseTunnel inside and calls attribute.__wrapped__: with ours in its
    # place (as when every class is swapped in) the result must stay Captum's, draws included
    import captum.attr._core.gradient_shap as gradient_shap

    def run():
        torch.manual_seed(7)
        np.random.seed(7)
        return ca.GradientShap(MODEL).attribute(X, baselines=DIST, target=1, n_samples=5,
                                                stdevs=0.1)

    want = run()
    monkeypatch.setattr(gradient_shap, "NoiseTunnel", skc.NoiseTunnel)
    assert torch.equal(run(), want)
    # while a user's call keeps smoothkern's counter-based default
    import inspect

    assert inspect.signature(skc.NoiseTunnel(ca.Saliency(MODEL)).attribute
                             ).parameters["rng"].default == "smoothkern"
