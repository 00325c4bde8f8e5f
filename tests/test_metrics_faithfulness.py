"""Deletion and insertion curves against a per-step loop, and against Quantus's PixelFlipping."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import tiny_mlp, tiny_resnet
from torch import nn

from smoothkern.metrics.faithfulness import (
    curve_auc,
    deletion_curve,
    insertion_curve,
    perturbation_curve,
)


def curve_reference(model, x, a, target, mode, per_step, baseline, patch=(1, 1),
                    score="softmax", counts=None):
    """Per example and step: rank the units (stable, descending), replace, one forward each."""
    rows = []
    for b in range(x.shape[0]):
        xb, base = x[b], baseline[b]
        score_map = a[b] if a[b].dim() == xb.dim() else a[b][None]
        channels, height, width = score_map.shape if score_map.dim() == 3 else (0, 0, 0)
        if patch == (1, 1):
            units = [[i] for i in range(score_map.numel())]
        else:
            units = []
            for c in range(channels):
                for r0 in range(0, height, patch[0]):
                    for c0 in range(0, width, patch[1]):
                        units.append([c * height * width + r * width + col
                                      for r in range(r0, min(r0 + patch[0], height))
                                      for col in range(c0, min(c0 + patch[1], width))])
        flat = score_map.flatten()
        scores = [float(flat[u].sum()) for u in units]
        order = sorted(range(len(units)), key=lambda u: -scores[u])   # sorted() is stable
        if counts is None:
            counts = [min(k * per_step, len(units))
                      for k in range(math.ceil(len(units) / per_step) + 1)]
        curve = []
        for count in counts:
            mask = torch.zeros(score_map.numel(), dtype=torch.bool)
            mask[[i for u in order[:count] for i in units[u]]] = True
            mask = mask.view(score_map.shape).expand_as(xb)
            image = torch.where(mask, base, xb) if mode == "deletion" else \
                torch.where(mask, xb, base)
            with torch.no_grad():
                logits = model(image[None])[0]
            value = logits.softmax(0) if score == "softmax" else logits
            curve.append(float(value[target[b]]))
        rows.append(curve)
    return torch.tensor(rows, dtype=torch.float64)


@pytest.fixture(scope="module")
def setting():
    torch.manual_seed(1)
    model = tiny_resnet(in_channels=2, classes=4)
    x = torch.rand(3, 2, 5, 6)
    x[:, :, :2] = 0.0                                  # pixels already at the black baseline
    a = torch.randn(3, 2, 5, 6)
    return model, x, a


@pytest.mark.parametrize("mode", ["deletion", "insertion"])
@pytest.mark.parametrize("per_step", [1, 4])
def test_curve_equals_the_per_step_loop(setting, mode, per_step):
    model, x, a = setting
    target = torch.tensor([0, 3, 1])
    got = perturbation_curve(model, x, a, target, mode=mode, features_per_step=per_step)
    black = x.flatten(1).min(1).values.view(-1, 1, 1, 1).expand_as(x)
    want = curve_reference(model, x, a, target, mode, per_step, black)
    assert got.scores.shape == (3, math.ceil(60 / per_step) + 1)
    torch.testing.assert_close(got.scores.double(), want, atol=1e-6, rtol=1e-5)
    assert got.fraction[0] == 0 and got.fraction[-1] == 1
    torch.testing.assert_close(got.auc, torch.trapezoid(got.scores, got.fraction, dim=1))
    # Steps that replace black pixels by black change nothing and are not recomputed.
    assert got.forward_rows < got.scores.numel()


def test_patches_steps_per_pixel_maps_logits_and_baselines(setting):
    model, x, a = setting
    per_pixel = a.sum(1, keepdim=True)                 # [B, 1, H, W]: channels go together
    baseline = torch.linspace(0.2, 0.4, 2).view(2, 1, 1)
    got = deletion_curve(model, x, per_pixel, 2, patch=(2, 3), steps=3, baseline=baseline,
                         score="logit")
    n_units = 3 * 2                                    # ceil(5/2) × ceil(6/3) cells
    counts = [k * n_units // 3 for k in range(4)]
    want = curve_reference(model, x, per_pixel, torch.tensor([2, 2, 2]), "deletion", None,
                           baseline.expand_as(x), patch=(2, 3), score="logit", counts=counts)
    torch.testing.assert_close(got.scores.double(), want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.fraction, torch.tensor(counts) / n_units)


@pytest.mark.parametrize("baseline", ["white", "mean", "blur", 0.5])
def test_named_baselines(setting, baseline):
    model, x, a = setting
    curve = insertion_curve(model, x, a, features_per_step=25, baseline=baseline)
    with torch.no_grad():
        probs = model(x).softmax(1)
    # Insertion ends at the clean input; deletion ends at the baseline.
    torch.testing.assert_close(curve.scores[:, -1], probs.gather(1, curve.target[:, None])[:, 0])
    if baseline == "mean":
        image = x.flatten(1).mean(1).view(-1, 1, 1, 1).expand_as(x)
    elif baseline == "white":
        image = x.flatten(1).max(1).values.view(-1, 1, 1, 1).expand_as(x)
    elif baseline == 0.5:
        image = torch.full_like(x, 0.5)
    else:                                              # a normalised Gaussian blur
        gaussian_filter = pytest.importorskip("scipy.ndimage").gaussian_filter
        image = torch.tensor(np.stack([[gaussian_filter(c, 1.0, mode="mirror", truncate=3.0)
                                        for c in xb] for xb in x.numpy()]))
    with torch.no_grad():
        start = model(image).softmax(1).gather(1, curve.target[:, None])[:, 0]
    torch.testing.assert_close(curve.scores[:, 0], start, atol=1e-5, rtol=1e-4)


def test_ties_break_by_position_and_passes_do_not_matter(setting):
    model, x, _ = setting
    flat = torch.zeros_like(x)                         # all tied: removed in index order
    got = deletion_curve(model, x, flat, features_per_step=10, rows_per_pass=1)
    black = x.flatten(1).min(1).values.view(-1, 1, 1, 1).expand_as(x)
    want = curve_reference(model, x, flat, got.target, "deletion", 10, black)
    torch.testing.assert_close(got.scores.double(), want, atol=1e-6, rtol=1e-5)
    small = deletion_curve(model, x, flat, features_per_step=10, memory_limit=1)
    torch.testing.assert_close(small.scores, got.scores, atol=1e-6, rtol=1e-5)


def test_tabular_inputs_and_auc_helper():
    model = tiny_mlp(features=7)
    x, a = torch.randn(4, 7), torch.randn(4, 7)
    got = deletion_curve(model, x, a, baseline=0.0)
    want = curve_reference(model, x, a, got.target, "deletion", 1, torch.zeros_like(x))
    torch.testing.assert_close(got.scores.double(), want, atol=1e-6, rtol=1e-5)
    line = torch.tensor([[1.0, 0.5, 0.0]])
    torch.testing.assert_close(curve_auc(line), torch.tensor([0.5]))


def test_model_and_inputs_come_back_unchanged(setting):
    model, x, a = setting
    x0, a0 = x.clone(), a.clone()
    params = {k: v.clone() for k, v in model.state_dict().items()}
    model.fc.weight.requires_grad_(True)
    deletion_curve(model, x, a)
    assert torch.equal(x, x0) and torch.equal(a, a0)
    assert all(torch.equal(v, params[k]) for k, v in model.state_dict().items())
    assert model.fc.weight.grad is None and model.fc.weight.requires_grad
    assert not model.training


@pytest.mark.parametrize("options, error", [
    (dict(mode="sideways"), "mode"),
    (dict(score="probits"), "score"),
    (dict(output="logit"), "score="),
    (dict(steps=4, features_per_step=2), "not both"),
    (dict(steps=61), "steps"),
    (dict(features_per_step=0), "features_per_step"),
    (dict(baseline="grey"), "baseline"),
    (dict(baseline=torch.zeros(3)), "broadcast"),
    (dict(patch=0), "patch"),
    (dict(patch=9), "larger"),
    (dict(rows_per_pass=0), "rows_per_pass"),
])
def test_bad_arguments(setting, options, error):
    model, x, a = setting
    with pytest.raises(ValueError, match=error):
        perturbation_curve(model, x, a, **options)


def test_bad_inputs(setting):
    model, x, a = setting
    with pytest.raises(ValueError, match="shaped like"):
        deletion_curve(model, x, a[:, :, :4])
    with pytest.raises(ValueError, match="NaN"):
        deletion_curve(model, x, a.clone().fill_(float("nan")))
    with pytest.raises(ValueError, match="out of range"):
        deletion_curve(model, x, a, 4)
    with pytest.raises(ValueError, match="patch needs image"):
        deletion_curve(tiny_mlp(features=7), torch.randn(2, 7), torch.randn(2, 7), patch=2)
    training = nn.Sequential(nn.Flatten(), nn.Dropout(), nn.Linear(60, 3))
    with pytest.raises(ValueError, match="eval"):
        deletion_curve(training, x, a)


def test_equals_quantus_pixel_flipping():
    quantus = pytest.importorskip("quantus")
    from smoothkern import smooth_grad
    from smoothkern.data import digit_examples
    from smoothkern.models import digits_cnn

    model = digits_cnn().eval()
    x, y = digit_examples()
    x, y = x[:3], y[:3]
    a = smooth_grad(model, x, y, n_samples=4)
    # Quantus's defaults (softmax, attributions scaled by their maximum); it needs a step that
    # divides H·W.
    metric = quantus.PixelFlipping(features_in_step=28, disable_warnings=True)
    want = np.array(metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a.numpy(),
                           device="cpu"))
    got = deletion_curve(model, x, a, y, features_per_step=28)
    np.testing.assert_allclose(got.scores[:, 1:].numpy(), want, atol=1e-6)
    # Three channels, attributions shaped like the inputs, one feature per step, logits.
    rgb_model = tiny_resnet(in_channels=3)
    xc, ac = torch.rand(2, 3, 6, 5), torch.randn(2, 3, 6, 5)
    yc = np.array([1, 2])
    metric = quantus.PixelFlipping(disable_warnings=True, normalise=False)
    want = np.array(metric(model=rgb_model, x_batch=xc.numpy(), y_batch=yc, a_batch=ac.numpy(),
                           device="cpu", softmax=False))
    got = deletion_curve(rgb_model, xc, ac, torch.from_numpy(yc), score="logit")
    np.testing.assert_allclose(got.scores[:, 1:].numpy(), want, atol=1e-5)
