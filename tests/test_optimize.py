"""Fooling images and class visualisation: against plain per-image loops, on tiny models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter1d
from torch import nn

from smoothkern.models import Normalized
from smoothkern.studies.optimize import (
    CS231N_RECIPE,
    DIGITS_RECIPE,
    class_visualization,
    class_visualization_figure,
    fooling_figure,
    fooling_images,
    gaussian_blur,
    input_space,
    roll_images,
)
from smoothkern.studies.optimize.visualization import _jitter_offsets, _start_noise

MEAN, STD = (0.3, 0.5, 0.4), (0.25, 0.2, 0.3)


class TinyNet(nn.Module):
    """3×7×9 → 6 classes: a convolution, a ReLU and a linear layer (odd sizes on purpose)."""

    def __init__(self, channels: int = 3, height: int = 7, width: int = 9, classes: int = 6):
        super().__init__()
        self.conv = nn.Conv2d(channels, 4, 3, padding=1)
        self.fc = nn.Linear(4 * height * width, classes)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return Normalized(TinyNet(), MEAN, STD).eval()


def images(batch: int = 5, seed: int = 1) -> torch.Tensor:
    return torch.rand(batch, 3, 7, 9, generator=torch.Generator().manual_seed(seed))


def other_targets(model, x):
    """A class other than the predicted one for every image."""
    with torch.no_grad():
        return (model(x).argmax(1) + torch.arange(1, len(x) + 1)) % 6


# -- the plain references: the assignment's per-image loops, with autograd on z ---------------

def fooling_reference(model, x, target, lr, max_steps):
    """One image [1, C, H, W] at a time, in normalised units z, as the assignment writes it."""
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    image, steps = x.clone(), 0
    for _ in range(max_steps):
        z = ((image - mean) / std).requires_grad_(True)
        scores = model(z * std + mean)
        if scores.argmax(1).item() == target:
            break
        scores[0, target].backward()
        z = z.detach() + lr * z.grad / z.grad.norm()
        image = (z * std + mean).clamp(0, 1)
        steps += 1
    return image, steps


def visualization_reference(model, target, index, seed, settings, shape=(3, 7, 9)):
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    idx = torch.tensor([index])
    image = (mean + std * settings["init_std"] * _start_noise(seed, idx, shape)).clamp(0, 1)
    offsets = _jitter_offsets(seed, idx, settings["num_steps"], settings["max_jitter"])
    for t in range(settings["num_steps"]):
        oy, ox = offsets[t, 0].tolist()
        image = torch.roll(image, (oy, ox), (2, 3))
        z = ((image - mean) / std).requires_grad_(True)
        objective = model(z * std + mean)[0, target] - settings["l2_reg"] * (z * z).sum()
        objective.backward()
        z = z.detach() + settings["learning_rate"] * z.grad
        image = torch.roll(z * std + mean, (-oy, -ox), (2, 3)).clamp(0, 1)
        if t % settings["blur_every"] == 0:
            blurred = gaussian_filter1d(image.numpy(), settings["blur_sigma"], axis=2)
            image = torch.from_numpy(gaussian_filter1d(blurred, settings["blur_sigma"], axis=3))
    return image[0]


SMALL = {"num_steps": 7, "learning_rate": 0.5, "l2_reg": 1e-2, "blur_every": 3,
         "blur_sigma": 0.5, "max_jitter": 2, "init_std": 1.0}


# -- fooling images -----------------------------------------------------------------------------

def test_fooling_flips_every_prediction_and_matches_the_per_image_loop():
    model, x = tiny_model(), images()
    target = other_targets(model, x)
    result = fooling_images(model, x, target, learning_rate=0.3, max_steps=60)
    assert result.success.all() and torch.equal(result.predictions, target)
    with torch.no_grad():
        assert torch.equal(model(result.images).argmax(1), target)
    assert (result.steps >= 1).all()
    assert result.images.min() >= 0 and result.images.max() <= 1
    for b in range(len(x)):  # the batch equals each image's own loop
        ref, steps = fooling_reference(model, x[b:b + 1], int(target[b]), 0.3, 60)
        assert int(result.steps[b]) == steps
        torch.testing.assert_close(result.images[b], ref[0], atol=1e-5, rtol=0)
        alone = fooling_images(model, x[b:b + 1], target[b:b + 1], learning_rate=0.3,
                               max_steps=60)
        assert torch.equal(alone.steps, result.steps[b:b + 1])
        torch.testing.assert_close(alone.images[0], result.images[b], atol=1e-6, rtol=0)
    in_pairs = fooling_images(model, x, target, learning_rate=0.3, max_steps=60, batch_size=2)
    assert torch.equal(in_pairs.steps, result.steps)
    torch.testing.assert_close(in_pairs.images, result.images, atol=1e-6, rtol=0)
    torch.testing.assert_close(result.difference, result.images - x)
    torch.testing.assert_close(result.magnified, 10 * (result.images - x))


def test_fooling_stops_fooled_images_and_caps_the_rest():
    model, x = tiny_model(), images(4)
    with torch.no_grad():
        predicted = model(x).argmax(1)
    target = predicted.clone()
    target[1:] = (predicted[1:] + 1) % 6
    result = fooling_images(model, x, target, learning_rate=1e-4, max_steps=3)
    assert int(result.steps[0]) == 0 and bool(result.success[0])
    assert torch.equal(result.images[0], x[0])  # already the target: not moved at all
    assert result.steps[1:].tolist() == [3, 3, 3] and not result.success[1:].any()
    assert not torch.equal(result.images[1], x[1])


def test_fooling_in_pixels_without_clamping():
    model, x = tiny_model(), images(3)
    target = other_targets(model, x)
    result = fooling_images(model, x, target, normalization=None, pixel_range=None,
                            learning_rate=0.5, max_steps=40)
    assert result.success.all()
    # Without normalisation every step has length learning_rate in pixels.
    norms = result.difference.flatten(1).norm(dim=1)
    assert (norms <= 0.5 * result.steps + 1e-5).all()


# -- class visualisation ------------------------------------------------------------------------

def test_class_visualization_matches_the_per_image_loop():
    model = tiny_model()
    targets = [4, 0, 5, 2]
    result = class_visualization(model, targets, image_shape=(3, 7, 9), seed=5, **SMALL)
    for b, target in enumerate(targets):
        ref = visualization_reference(model, target, b, 5, SMALL)
        torch.testing.assert_close(result.images[b], ref, atol=1e-5, rtol=0)
    assert result.images.min() >= 0 and result.images.max() <= 1
    assert result.score_history.shape == (SMALL["num_steps"], 4)
    assert result.settings["seed"] == 5 and result.settings["std"] == pytest.approx(STD)
    with torch.no_grad():
        scores = model(result.images)
    torch.testing.assert_close(result.final_scores, scores[torch.arange(4), result.targets])


def test_class_visualization_raises_every_class_score():
    torch.manual_seed(3)  # pooled features: jitter moves the image, not the model's view of it
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 6))
    model = Normalized(net, MEAN, STD).eval()
    result = class_visualization(model, range(6), image_shape=(3, 12, 12), **dict(SMALL,
                                 num_steps=20, step="normalized", learning_rate=1.0, l2_reg=1e-4))
    assert (result.final_scores > result.initial_scores).all()


def test_on_the_bundled_digits_model():
    from smoothkern.data import digit_examples
    from smoothkern.models import digits_cnn

    model = digits_cnn()
    x, labels = digit_examples(per_class=1)
    x, labels = x[[1, 4, 8]], labels[[1, 4, 8]]
    fooled = fooling_images(model, x, (labels + 5) % 10)
    assert fooled.success.all() and (fooled.steps < 100).all()
    vis = class_visualization(model, range(10), image_shape=(1, 28, 28),
                              **dict(DIGITS_RECIPE, num_steps=20))
    assert torch.equal(vis.predictions, torch.arange(10))
    assert (vis.final_scores > vis.initial_scores + 1).all()


def test_class_visualization_batch_equals_single_runs_and_seeds_reproduce():
    model = tiny_model()
    settings = dict(SMALL, step="normalized")
    batch = class_visualization(model, range(6), image_shape=(3, 7, 9), seed=11, **settings)
    again = class_visualization(model, range(6), image_shape=(3, 7, 9), seed=11, **settings)
    assert torch.equal(batch.images, again.images)
    other = class_visualization(model, range(6), image_shape=(3, 7, 9), seed=12, **settings)
    assert not torch.allclose(batch.images, other.images)
    for b in (0, 3, 5):
        alone = class_visualization(model, [b], image_shape=(3, 7, 9), seed=11,
                                    example_index=b, **settings)
        torch.testing.assert_close(alone.images[0], batch.images[b], atol=1e-5, rtol=0)
    in_threes = class_visualization(model, range(6), image_shape=(3, 7, 9), seed=11,
                                    batch_size=3, **settings)
    torch.testing.assert_close(in_threes.images, batch.images, atol=1e-5, rtol=0)
    # Two images of one class differ: the randomness is keyed by the example.
    twice = class_visualization(model, [2, 2], image_shape=(3, 7, 9), **settings)
    assert not torch.allclose(twice.images[0], twice.images[1])


def test_class_visualization_from_given_images_without_regularisers():
    model = tiny_model()
    start = images(2)
    result = class_visualization(model, [1, 3], init=start, num_steps=4, learning_rate=0.1,
                                 l2_reg=0, blur_every=None, max_jitter=0, step="normalized")
    with torch.no_grad():
        before = model(start)[[0, 1], [1, 3]]
    torch.testing.assert_close(result.initial_scores, before)
    assert (result.final_scores > before).all()
    assert (result.score_history[1:] > result.score_history[:-1]).all()


def test_class_visualization_on_a_torchvision_imagenet_model(tmp_path):
    pytest.importorskip("torchvision")
    from smoothkern.models import imagenet_model

    torch.manual_seed(0)  # random weights, saved and loaded as a local weight file
    torch.save(imagenet_model("resnet18").net.state_dict(), tmp_path / "resnet18.pt")
    model = imagenet_model("resnet18", weights=tmp_path / "resnet18.pt")
    space = input_space(model, 3)  # the wrapper's ImageNet normalisation
    torch.testing.assert_close(space.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    # A tiny image: jitter scaled down with it (16 px of 224 ≈ 2 px of 32).
    result = class_visualization(model, [7, 900], image_shape=(3, 32, 32), num_steps=3,
                                 max_jitter=2, step="normalized", learning_rate=5.0)
    assert result.images.shape == (2, 3, 32, 32)
    assert result.images.min() >= 0 and result.images.max() <= 1
    assert (result.final_scores > result.initial_scores).all()


def test_recipes_hold_only_keywords_of_the_function():
    model = tiny_model()
    for recipe in (CS231N_RECIPE, DIGITS_RECIPE):
        settings = dict(recipe, num_steps=1)
        result = class_visualization(model, [0], image_shape=(3, 7, 9), **settings)
        assert result.images.shape == (1, 3, 7, 9)


# -- regularisers and the input space -----------------------------------------------------------

@pytest.mark.parametrize("shape,sigma", [((2, 3, 28, 28), 0.5), ((1, 2, 5, 3), 2.0),
                                         ((3, 1, 7, 9), 1.3)])
def test_gaussian_blur_equals_scipy(shape, sigma):
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    reference = gaussian_filter1d(gaussian_filter1d(x.numpy(), sigma, axis=2), sigma, axis=3)
    np.testing.assert_allclose(gaussian_blur(x, sigma).numpy(), reference, atol=1e-6)


def test_roll_images_equals_torch_roll_per_image():
    x = torch.rand(3, 2, 5, 7)
    dy, dx = torch.tensor([0, 2, -1]), torch.tensor([3, 0, 9])
    out = roll_images(x, dy, dx)
    for b in range(3):
        assert torch.equal(out[b], torch.roll(x[b], (int(dy[b]), int(dx[b])), (1, 2)))
    assert torch.equal(roll_images(out, -dy, -dx), x)


def test_jitter_offsets_cover_the_range():
    offsets = _jitter_offsets(0, torch.arange(4), 200, 3)
    assert offsets.shape == (200, 4, 2)
    assert set(offsets.unique().tolist()) == {0, 1, 2, 3}


def test_input_space_reads_the_models_normalisation():
    transforms = pytest.importorskip("torchvision.transforms")
    TorchvisionNormalize = transforms.Normalize

    plain = nn.Sequential(TorchvisionNormalize(MEAN, STD), TinyNet())
    space = input_space(plain, 3)
    torch.testing.assert_close(space.std.flatten(), torch.tensor(STD))
    space = input_space(TinyNet(), 3)  # none: pixels are the model's units
    assert space.mean.flatten().tolist() == [0.0] and space.std.flatten().tolist() == [1.0]
    space = input_space(TinyNet(), 3, normalization=(0.5, (1.0, 2.0, 3.0)))
    assert space.std.flatten().tolist() == [1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match="3 channels"):
        input_space(TinyNet(), 3, normalization=((0.1, 0.2), 1.0))


# -- the caller's model is untouched; bad arguments ----------------------------------------------

def test_the_callers_model_and_inputs_come_back_unchanged():
    model = nn.Sequential(tiny_model(), nn.Dropout(0.5)).eval()
    inner = model[0].net
    inner.conv.weight.requires_grad_(False)
    inner.fc.weight.grad = torch.ones_like(inner.fc.weight)
    calls = []
    handle = inner.conv.register_forward_hook(lambda *args: calls.append(1))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    x = images(2).requires_grad_(True)
    x_before = x.detach().clone()
    fooling_images(model, x, other_targets(model, x.detach()), max_steps=3)
    class_visualization(model, [0, 1], image_shape=(3, 7, 9), num_steps=2)
    assert calls  # the caller's hook ran and is still there
    assert inner.conv._forward_hooks and not model.training
    assert [p.requires_grad for p in model.parameters()] == flags
    assert torch.equal(inner.fc.weight.grad, torch.ones_like(inner.fc.weight))
    assert inner.conv.weight.grad is None and inner.conv.bias.grad is None
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert torch.equal(x.detach(), x_before) and x.requires_grad and x.grad is None
    handle.remove()


def test_a_model_in_training_mode_with_dropout_is_refused():
    model = nn.Sequential(tiny_model(), nn.Dropout(0.5)).train()
    with pytest.raises(ValueError, match="model.eval"):
        fooling_images(model, images(1), [0])
    with pytest.raises(ValueError, match="model.eval"):
        class_visualization(model, [0], image_shape=(3, 7, 9))
    assert model.training


@pytest.mark.parametrize("kwargs,error,match", [
    ({"inputs": torch.rand(2, 7, 9)}, ValueError, r"\[B, C, H, W\]"),
    ({"inputs": torch.ones(2, 3, 7, 9, dtype=torch.int64)}, TypeError, "floating"),
    ({"inputs": torch.full((2, 3, 7, 9), float("nan"))}, ValueError, "NaN"),
    ({"inputs": torch.full((2, 3, 7, 9), 1.5)}, ValueError, "pixel_range"),
    ({"targets": [0, 1, 2]}, ValueError, "one class per image"),
    ({"targets": [0, 6]}, ValueError, "out of range"),
    ({"targets": [0, -1]}, ValueError, "out of range"),
    ({"targets": 1.5}, TypeError, "targets"),
    ({"targets": torch.tensor([0.0, 1.0])}, TypeError, "integer"),
    ({"max_steps": 0}, ValueError, "max_steps"),
    ({"max_steps": 2.0}, TypeError, "max_steps"),
    ({"learning_rate": -1.0}, ValueError, "learning_rate"),
    ({"learning_rate": float("inf")}, ValueError, "learning_rate"),
    ({"magnification": 0}, ValueError, "magnification"),
    ({"batch_size": 0}, ValueError, "batch_size"),
    ({"pixel_range": (1.0, 0.0)}, ValueError, "low < high"),
    ({"normalization": "imagenet"}, ValueError, "normalization"),
    ({"model": "net"}, TypeError, "nn.Module"),
])
def test_fooling_refuses_bad_arguments(kwargs, error, match):
    args = {"model": tiny_model(), "inputs": images(2), "targets": [0, 1]}
    args.update(kwargs)
    with pytest.raises(error, match=match):
        fooling_images(args.pop("model"), args.pop("inputs"), args.pop("targets"), **args)


@pytest.mark.parametrize("kwargs,error,match", [
    ({"image_shape": None}, TypeError, "image_shape is required"),
    ({"image_shape": (7, 9)}, TypeError, "image_shape"),
    ({"image_shape": (3, 0, 9)}, ValueError, "image_shape"),
    ({"targets": [6]}, ValueError, "out of range"),
    ({"targets": []}, ValueError, "one class per image"),
    ({"num_steps": 0}, ValueError, "num_steps"),
    ({"blur_every": 0}, ValueError, "blur_every"),
    ({"max_jitter": -1}, ValueError, "max_jitter"),
    ({"blur_sigma": 0.0}, ValueError, "blur_sigma"),
    ({"l2_reg": -1e-3}, ValueError, "l2_reg"),
    ({"step": "adam"}, ValueError, "step"),
    ({"batch_size": 1.5}, TypeError, "batch_size"),
    ({"seed": -1}, ValueError, "seed"),
    ({"example_index": [0, 1]}, ValueError, "example_index"),
    ({"init": torch.rand(2, 3, 7, 9)}, ValueError, "one class per image"),
    ({"image_shape": (3, 7, 8), "init": torch.rand(1, 3, 7, 9)}, ValueError, "does not match"),
])
def test_class_visualization_refuses_bad_arguments(kwargs, error, match):
    args = {"targets": [1], "image_shape": (3, 7, 9)}
    args.update(kwargs)
    with pytest.raises(error, match=match):
        class_visualization(tiny_model(), args.pop("targets"), **args)


def test_a_model_that_does_not_return_class_scores_is_refused():
    model = nn.Sequential(tiny_model(), nn.Flatten(0))
    with pytest.raises(ValueError, match=r"\[B, classes\]"):
        fooling_images(model, images(2), [0, 1])
    with pytest.raises(ValueError, match=r"\[B, classes\]"):
        class_visualization(model, [0], image_shape=(3, 7, 9))


# -- figures ------------------------------------------------------------------------------------

def test_figures_have_the_assignments_layout(tmp_path):
    from smoothkern.viz import save_figure

    model, x = tiny_model(), images(3)
    fooled = fooling_images(model, x, other_targets(model, x), max_steps=5)
    figure = fooling_figure(fooled, class_names=list("abcdef"))
    assert len(figure.axes) == 12
    assert figure.axes[3].get_title() == "difference ×10"
    assert save_figure(figure, tmp_path / "fooling.png").stat().st_size > 0
    vis = class_visualization(model, range(6), image_shape=(3, 7, 9), num_steps=2)
    figure = class_visualization_figure(vis, columns=4)
    assert len(figure.axes) == 8 and figure.axes[0].get_title().startswith("0: ")


@pytest.mark.cuda
def test_on_a_gpu_the_results_match_the_cpu():
    model, x = tiny_model(), images(4)
    target = other_targets(model, x)
    on_cpu = fooling_images(model, x, target, learning_rate=0.3, max_steps=60)
    vis_cpu = class_visualization(model, [1, 4], image_shape=(3, 7, 9), **SMALL)
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):  # float32 convolutions
        on_gpu = fooling_images(model.cuda(), x.cuda(), target.cuda(), learning_rate=0.3,
                                max_steps=60)
        vis_gpu = class_visualization(model, [1, 4], image_shape=(3, 7, 9), **SMALL)
    assert torch.equal(on_gpu.steps.cpu(), on_cpu.steps) and on_gpu.success.all()
    torch.testing.assert_close(on_gpu.images.cpu(), on_cpu.images, atol=1e-4, rtol=0)
    assert vis_gpu.images.is_cuda
    torch.testing.assert_close(vis_gpu.images.cpu(), vis_cpu.images, atol=1e-4, rtol=0)
