"""Class visualisation: an image the model scores highly for a class, grown from noise.

The assignment's recipe (Simonyan et al. 2014, with Yosinski et al. 2015's regularisers), per
image, for t = 0 .. num_steps − 1, on the image z in the model's normalised units:

    jitter   z ← roll(z, oy, ox), ox, oy uniform in 0..max_jitter
    ascend   z ← z + learning_rate · ∇(s_y(z) − l2_reg · ‖z‖₂²)       (step="gradient")
             (or learning_rate · ∇ / ‖∇‖₂ per image with step="normalized")
    unjitter z ← roll(z, −oy, −ox)
    clamp    to the pixel range
    blur     Gaussian, σ = blur_sigma pixels, when t % blur_every == 0

starting from z = init_std · N(0, 1). Every requested class is one image of one batch. The
randomness (start and offsets) is counter-based noise keyed by (seed, example index, step), so
image b is the same in any batch it is computed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ...core.state import check_eval_mode, preserved
from ...model_io import OutputSpec, adapt
from ...noise.philox import check_seed, raw_bits, standard_noise, uint_to_unit
from ...ops.perturb import check_example_index
from .checks import (
    as_targets,
    check_count,
    check_image_shape,
    check_images,
    check_model,
    check_non_negative,
    check_pixel_range,
    check_positive,
    check_target_range,
    class_count,
)
from .regularize import gaussian_blur, roll_images
from .scores import scores, scores_and_gradient
from .space import input_space

# The assignment's defaults (CS231n, PyTorch NetworkVisualization notebook, SqueezeNet at 224²).
CS231N_RECIPE: dict[str, Any] = {"num_steps": 100, "learning_rate": 25.0, "l2_reg": 1e-3,
                                 "blur_every": 10, "blur_sigma": 0.5, "max_jitter": 16,
                                 "init_std": 1.0, "step": "gradient"}
# For 28×28 digits (the bundled digits CNN), chosen by looking at the figures (docs/optimize.md):
# steps and penalty in pixels, so the penalty pulls towards the black background rather than the
# mean gray; small steps from faint noise, twice as many of them, blur more often, and jitter
# scaled to the image (16 px of 224 ≈ 2 px of 28).
DIGITS_RECIPE: dict[str, Any] = {"num_steps": 200, "learning_rate": 0.15, "l2_reg": 0.05,
                                 "blur_every": 5, "blur_sigma": 0.5, "max_jitter": 2,
                                 "init_std": 0.1, "step": "gradient", "normalization": None}
STEPS = ("gradient", "normalized")
_TINY_NORM = 1e-12


@dataclass(frozen=True)
class ClassVisualization:
    """What :func:`class_visualization` made, one row per requested class.

    Attributes:
        images (Tensor[B, C, H, W]): the images, pixels (within ``pixel_range``).
        targets (LongTensor[B]): the classes.
        initial_scores (Tensor[B]): the raw target score of the starting image.
        final_scores (Tensor[B]): the raw target score of the result.
        score_history (Tensor[num_steps, B]): the raw target score of the (jittered) image each
            step ascended from.
        predictions (LongTensor[B]): the model's class for the result.
        settings (dict): the recipe's values used, the seed, and the normalisation (``mean``,
            ``std``) and ``pixel_range`` the steps were taken in.
    """

    images: Tensor
    targets: Tensor
    initial_scores: Tensor
    final_scores: Tensor
    score_history: Tensor
    predictions: Tensor
    settings: dict


def class_visualization(model: nn.Module, targets: Any, *,
                        image_shape: tuple[int, int, int] | None = None,
                        num_steps: int = CS231N_RECIPE["num_steps"],
                        learning_rate: float = CS231N_RECIPE["learning_rate"],
                        l2_reg: float = CS231N_RECIPE["l2_reg"],
                        blur_every: int | None = CS231N_RECIPE["blur_every"],
                        blur_sigma: float = CS231N_RECIPE["blur_sigma"],
                        max_jitter: int = CS231N_RECIPE["max_jitter"],
                        init_std: float = CS231N_RECIPE["init_std"],
                        step: str = CS231N_RECIPE["step"],
                        seed: int = 0, example_index: Any = None, init: Tensor | None = None,
                        normalization: Any = "auto",
                        pixel_range: tuple[float, float] | None = (0.0, 1.0),
                        batch_size: int | None = None, output: OutputSpec = None,
                        forward_args: Any = None, forward_kwargs: dict[str, Any] | None = None
                        ) -> ClassVisualization:
    """Grows one image per target class by gradient ascent on its raw score, in one batch.

    The defaults are the assignment's (``CS231N_RECIPE``, chosen there for SqueezeNet at
    224×224); ``DIGITS_RECIPE`` holds the settings used for 28×28 digits.

    Args:
        model: a classifier returning raw scores [B, classes], in eval mode if it has BatchNorm
            or Dropout. It comes back unchanged (training flags, parameters' ``requires_grad``
            and ``.grad``, hooks).
        targets: the classes: an int, a sequence of ints (``range(10)``) or a LongTensor[B].
        image_shape: ``(C, H, W)`` of the images (not needed with ``init``).
        num_steps: ascent steps (100).
        learning_rate: step size in normalised units (25).
        l2_reg: weight λ of the penalty λ‖z‖₂² on the normalised image (1e-3).
        blur_every: blur at steps t with t % blur_every == 0 (10); None: never.
        blur_sigma: the blur's standard deviation in pixels (0.5).
        max_jitter: the largest random shift in pixels (16); 0: none.
        init_std: standard deviation of the starting noise in normalised units (1.0).
        step: ``"gradient"`` (the assignment's ``z += learning_rate · ∇``) or ``"normalized"``
            (``learning_rate · ∇ / ‖∇‖₂`` per image: a step length independent of the model's
            score scale).
        seed: the randomness (0 ≤ seed < 2⁶⁴).
        example_index: the images' indices for the randomness (an int offset, B ints or a
            LongTensor[B]); default 0..B−1. With it, an image is the same in any batch.
        init (Tensor[B, C, H, W] or None): start from these pixels instead of noise.
        normalization: ``"auto"`` (the model's leading ``Normalize``), None, or ``(mean, std)``.
        pixel_range: the pixel range images are clamped to after every step, or None.
        batch_size: the most images per forward/backward pass (None: all at once), to bound
            memory; results do not depend on it.
        output, forward_args, forward_kwargs: where the logits are in the model's output and
            its other inputs (:mod:`smoothkern.model_io`); tensors whose first dim is B go
            with their image.

    Returns:
        A :class:`ClassVisualization`.

    Raises:
        TypeError, ValueError: bad arguments (types, shapes, target ranges, non-positive counts
            or sizes, a model in training mode with BatchNorm/Dropout, a model whose output is
            not [B, classes]).
    """
    check_model(model)
    settings = _check_recipe(num_steps, learning_rate, l2_reg, blur_every, blur_sigma, max_jitter,
                             init_std, step)
    seed = check_seed(seed)
    batch_size = None if batch_size is None else check_count(batch_size, "batch_size")
    pixel_range = check_pixel_range(pixel_range)
    like = _model_tensor(model)
    if init is not None:
        check_images(init, "init")
        if image_shape is not None and tuple(image_shape) != tuple(init.shape[1:]):
            raise ValueError(f"image_shape {tuple(image_shape)} does not match init "
                             f"{tuple(init.shape)}")
        like = init.detach()
        target = as_targets(targets, init.shape[0])
        shape = tuple(init.shape[1:])
    else:
        shape = check_image_shape(image_shape)
        target = as_targets(targets, None)
    batch, device = target.shape[0], like.device
    target = target.to(device)
    index = check_example_index(example_index, batch, torch.device("cpu"))
    index = torch.arange(batch, dtype=torch.int64) if index is None else index
    check_eval_mode(model)
    space = input_space(model, shape[0], normalization, pixel_range)
    space = space.to(like)
    call = adapt(model, output, forward_args, forward_kwargs, batch)

    with preserved(model, *(() if init is None else (init,))):
        if init is None:
            z = init_std * _start_noise(seed, index, shape).to(like)
            images = space.clamp(space.mean + space.std * z)
        else:
            images = space.clamp(init.detach().clone())
        first = scores(call, images, batch_size)
        check_target_range(target, class_count(first, batch))
        offsets = _jitter_offsets(seed, index, settings["num_steps"],
                                  settings["max_jitter"]).to(device)
        history = []
        for t in range(settings["num_steps"]):
            images, score = _ascent_step(call, images, target, space, offsets[t], settings,
                                         batch_size)
            history.append(score)
            if settings["blur_every"] is not None and t % settings["blur_every"] == 0:
                images = gaussian_blur(images, settings["blur_sigma"])
        last = scores(call, images, batch_size)
    rows = torch.arange(batch, device=device)
    settings = dict(settings, seed=seed, mean=space.mean.flatten().tolist(),
                    std=space.std.flatten().tolist(), pixel_range=pixel_range)
    return ClassVisualization(images=images, targets=target,
                              initial_scores=first[rows, target],
                              final_scores=last[rows, target],
                              score_history=torch.stack(history), predictions=last.argmax(1),
                              settings=settings)


def _ascent_step(model: nn.Module, images: Tensor, target: Tensor, space, offsets: Tensor,
                 settings: dict, batch_size: int | None) -> tuple[Tensor, Tensor]:
    """One jitter–ascend–unjitter–clamp step (blur is the caller's); returns the new images and
    the target score of the jittered images (Tensor[B])."""
    dy, dx = offsets[:, 0], offsets[:, 1]
    shifted = roll_images(images, dy, dx) if settings["max_jitter"] else images
    now, grad = scores_and_gradient(model, shifted, target, batch_size)
    z = space.to_model_units(shifted)
    ascent = space.gradient_in_model_units(grad) - 2.0 * settings["l2_reg"] * z
    if settings["step"] == "normalized":
        ascent = ascent / ascent.flatten(1).norm(dim=1).clamp_min(_TINY_NORM).view(-1, 1, 1, 1)
    moved = shifted + settings["learning_rate"] * ascent * space.std
    if settings["max_jitter"]:
        moved = roll_images(moved, -dy, -dx)
    score = now.gather(1, target.view(-1, 1)).flatten()
    return space.clamp(moved), score


def _start_noise(seed: int, index: Tensor, shape: tuple[int, int, int]) -> Tensor:
    """N(0, 1) draws z(seed, example, sample 0, element) as Tensor[B, C, H, W] (CPU)."""
    elements = torch.arange(shape[0] * shape[1] * shape[2], dtype=torch.int64)
    sample = torch.zeros((), dtype=torch.int64)
    noise = standard_noise(seed, index[:, None], sample, elements[None, :])
    return noise.view(len(index), *shape)


def _jitter_offsets(seed: int, index: Tensor, num_steps: int, max_jitter: int) -> Tensor:
    """Offsets (dy, dx) uniform in 0..max_jitter from samples 1..num_steps of the stream:
    LongTensor[num_steps, B, 2] (CPU)."""
    steps = torch.arange(1, num_steps + 1, dtype=torch.int64)[:, None, None]
    elements = torch.arange(2, dtype=torch.int64)[None, None, :]
    r0, _ = raw_bits(seed, index[None, :, None], steps, elements)
    offsets = (uint_to_unit(r0).double() * (max_jitter + 1)).floor().long()
    return offsets.clamp_(max=max_jitter)


def _check_recipe(num_steps, learning_rate, l2_reg, blur_every, blur_sigma, max_jitter,
                  init_std, step) -> dict:
    if step not in STEPS:
        raise ValueError(f"step must be one of {STEPS}, got {step!r}")
    return {"num_steps": check_count(num_steps, "num_steps"),
            "learning_rate": check_positive(learning_rate, "learning_rate"),
            "l2_reg": check_non_negative(l2_reg, "l2_reg"),
            "blur_every": None if blur_every is None else check_count(blur_every, "blur_every"),
            "blur_sigma": check_positive(blur_sigma, "blur_sigma"),
            "max_jitter": check_count(max_jitter, "max_jitter", minimum=0),
            "init_std": check_non_negative(init_std, "init_std"), "step": step}


def _model_tensor(model: nn.Module) -> Tensor:
    """An empty tensor on the model's device, in its floating dtype (float32 without one)."""
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_floating_point():
            return torch.empty(0, device=tensor.device, dtype=tensor.dtype)
    return torch.empty(0)
