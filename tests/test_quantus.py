"""smoothkern.quantus.explain as Quantus's explain_func: Quantus's conventions, the same maps as
quantus.explain (through Captum) for the deterministic methods, and a Quantus metric run."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import smoothkern as sk
from smoothkern.quantus import METHODS, explain

quantus = pytest.importorskip("quantus")
pytest.importorskip("captum")


@pytest.fixture(scope="module")
def setting():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(24, 5)).eval()
    x = np.random.default_rng(0).random((3, 3, 8, 8)).astype(np.float32)
    y = np.array([0, 3, 4])
    return model, x, y


def quantus_explain(model, x, y, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantus.explain(model, x, y, **kwargs)


@pytest.mark.parametrize("method", ["Gradient", "Saliency", "InputXGradient",
                                    "IntegratedGradients"])
@pytest.mark.parametrize("reduce", [{}, {"reduce_axes": ()}, {"reduce_axes": (1, 2),
                                                               "keepdims": False}])
def test_deterministic_methods_equal_quantus_explain(setting, method, reduce):
    model, x, y = setting
    got = explain(model, x, y, method=method, **reduce)
    want = quantus_explain(model, x, y, method=method, **reduce)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("layer", ["model[2]", "2", None])
def test_grad_cam_equals_quantus_layer_grad_cam(setting, layer):
    model, x, y = setting
    gc_layer = model[2] if layer is None else layer
    got = explain(model, x, y, method="GradCAM", gc_layer=gc_layer, interpolate=(8, 8))
    want = quantus_explain(model, x, y, method="LayerGradCam", gc_layer="model[2]",
                           interpolate=(8, 8))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_smooth_grad_takes_quantus_keywords(setting):
    model, x, y = setting
    got = explain(model, x, y, method="SmoothGrad", num_samples=6, noise=0.2, seed=4)
    want = sk.smooth_grad(model, torch.from_numpy(x), torch.from_numpy(y), n_samples=6,
                          stdevs=0.2, seed=4).sum(1, keepdim=True)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-7)
    # no seed: fresh noise per call from torch's generator (as Captum draws it)
    torch.manual_seed(1)
    a = explain(model, x, y, method="SmoothGrad")
    b = explain(model, x, y, method="SmoothGrad")
    torch.manual_seed(1)
    np.testing.assert_array_equal(explain(model, x, y, method="SmoothGrad"), a)
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("method, kwargs, call", [
    ("NoiseGrad", dict(n=3, std=0.1), dict(n_models=3, weight_noise=0.1)),
    ("FusionGrad", dict(n=2, std=0.1, m=3, sg_std=0.05),
     dict(n_models=2, weight_noise=0.1, n_samples=3, stdevs=0.05)),
])
def test_noise_grad_and_fusion_grad(setting, method, kwargs, call):
    model, x, y = setting
    got = explain(model, x, y, method=method, seed=2, reduce_axes=(), **kwargs)
    want = sk.noise_grad(model, torch.from_numpy(x), torch.from_numpy(y), seed=2, **call)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-7)


def test_softmax_explains_probabilities_like_quantus(setting):
    model, x, y = setting
    got = explain(model, x, y, method="Gradient", softmax=True)
    want = quantus_explain(model, x, y, method="Gradient", softmax=True)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(method="LRP"), ValueError, "choose from"),
    (dict(method="SmoothGrad", nosie=0.1), TypeError, "nosie"),
    (dict(method="Gradient", num_samples=3), TypeError, "num_samples"),
    (dict(method="Gradient", reduce_axes=(0,)), ValueError, "batch axis"),
    (dict(method="GradCAM"), ValueError, "gc_layer"),
])
def test_bad_keywords(setting, kwargs, error, match):
    model, x, y = setting
    with pytest.raises(error, match=match):
        explain(model, x, y, **kwargs)


def test_every_method_runs_and_keeps_quantus_shape(setting):
    model, x, y = setting
    extra = {"GradCAM": dict(gc_layer="2", interpolate=(8, 8)),
             "LayerGradCam": dict(gc_layer="2", interpolate=(8, 8)),
             "NoiseGrad": dict(n=2), "FusionGrad": dict(n=2, m=2)}
    for method in METHODS:
        out = explain(model, x, y, method=method, **extra.get(method, {}))
        assert out.shape == (3, 1, 8, 8) and np.isfinite(out).all(), method


def test_a_quantus_metric_runs_with_it(setting):
    model, x, y = setting
    metric = quantus.MaxSensitivity(nr_samples=3, lower_bound=0.02, disable_warnings=True,
                                    display_progressbar=False,
                                    return_nan_when_prediction_changes=False)
    scores = metric(model=model, x_batch=x, y_batch=y, a_batch=None, explain_func=explain,
                    explain_func_kwargs={"method": "SmoothGrad", "num_samples": 4,
                                         "noise": 0.1},
                    device="cpu")
    assert len(scores) == 3 and np.isfinite(scores).all()
