"""Fooling images: the smallest normalised-gradient walk that makes the model predict a class.

The assignment's recipe, per image: ascend the raw score of the target class (not the loss, not
the softmax: the softmax can rise by lowering the other scores, the raw score only by looking
more like the target), with steps of fixed length ``learning_rate`` in the model's normalised
input, ``Δ = learning_rate · g / ‖g‖₂``, until the model predicts the target. Here many images
(and targets) walk in one batch: an image that is fooled stops moving and leaves the batch, the
others go on, up to ``max_steps``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import torch
from torch import Tensor, nn

from ...core.state import check_eval_mode, preserved
from ...model_io import OutputSpec, adapt
from .checks import (
    as_targets,
    check_count,
    check_images,
    check_model,
    check_pixel_range,
    check_positive,
    check_target_range,
    class_count,
)
from .scores import scores, scores_and_gradient
from .space import input_space

# The assignment's settings: steps of length 1 in normalised units, at most 100 of them.
LEARNING_RATE = 1.0
MAX_STEPS = 100
MAGNIFICATION = 10.0
# Below this gradient norm a step direction is meaningless; the image then stays put.
_TINY_NORM = 1e-12


@dataclass(frozen=True)
class FoolingResult:
    """What :func:`fooling_images` found, one row per input image.

    Attributes:
        images (Tensor[B, C, H, W]): the fooling images (pixels, within ``pixel_range``).
        originals (Tensor[B, C, H, W]): a copy of the inputs.
        targets (LongTensor[B]): the classes asked for.
        steps (LongTensor[B]): gradient steps taken (0: the model already predicted the target).
        success (BoolTensor[B]): whether the model predicts the target for the fooling image.
        original_predictions, predictions (LongTensor[B]): the model's class before and after.
        difference (Tensor[B, C, H, W]): images − originals.
        magnified (Tensor[B, C, H, W]): magnification · difference.
        magnification: the factor of ``magnified`` (10 in the assignment's figure).
    """

    images: Tensor
    originals: Tensor
    targets: Tensor
    steps: Tensor
    success: Tensor
    original_predictions: Tensor
    predictions: Tensor
    difference: Tensor
    magnified: Tensor
    magnification: float

    def select(self, index) -> FoolingResult:
        """The result for some of the images (an index, slice, list or LongTensor of rows)."""
        index = [index] if isinstance(index, int) else index
        return replace(self, **{f.name: getattr(self, f.name)[index] for f in fields(self)
                                if isinstance(getattr(self, f.name), Tensor)})


def fooling_images(model: nn.Module, inputs: Tensor, targets: Any, *,
                   learning_rate: float = LEARNING_RATE, max_steps: int = MAX_STEPS,
                   normalization: Any = "auto",
                   pixel_range: tuple[float, float] | None = (0.0, 1.0),
                   magnification: float = MAGNIFICATION,
                   batch_size: int | None = None, output: OutputSpec = None,
                   forward_args: Any = None, forward_kwargs: dict[str, Any] | None = None
                   ) -> FoolingResult:
    """Moves each image until the model predicts its target class, all images in one batch.

    Each step, for every image b not yet fooled:
    ``z_b ← z_b + learning_rate · g_b / ‖g_b‖₂`` with ``g_b = d s_target(b) / d z_b``, where s
    are the model's raw class scores and z the image in the model's normalised units (pixels
    when the model has no leading normalisation); the image is then clamped to ``pixel_range``.
    The gradient comes from :class:`smoothkern.methods.Gradient` on the batch of images still
    moving.

    Args:
        model: a classifier returning raw scores [B, classes], in eval mode if it has BatchNorm
            or Dropout. It comes back unchanged (training flags, parameters' ``requires_grad``
            and ``.grad``, hooks).
        inputs (Tensor[B, C, H, W]): the images, pixels within ``pixel_range``; not changed.
        targets: the class to reach per image: an int (the same for all), a sequence of B ints
            or a LongTensor[B].
        learning_rate: the step length ‖Δz‖₂ per image (the assignment's 1).
        max_steps: the most steps an image takes (the assignment's 100).
        normalization: ``"auto"`` (the model's leading ``Normalize`` module, as smoothkern's
            model wrappers have), None (step in pixels) or ``(mean, std)``.
        pixel_range: ``(low, high)`` the images stay within, or None (no clamping: the
            assignment's notebook does not clamp).
        magnification: the factor of ``result.magnified``.
        batch_size: the most images per forward/backward pass (None: all that still move, at
            once), to bound memory for large images or batches; results do not depend on it.
        output, forward_args, forward_kwargs: where the logits are in the model's output and
            its other inputs (:mod:`smoothkern.model_io`); tensors whose first dim is B go
            with their image.

    Returns:
        A :class:`FoolingResult`.

    Raises:
        TypeError, ValueError: bad arguments (shapes, types, target ranges, non-positive counts
            or step sizes, inputs outside ``pixel_range``, a model in training mode with
            BatchNorm/Dropout, a model whose output is not [B, classes]).
    """
    check_model(model)
    check_images(inputs)
    learning_rate = check_positive(learning_rate, "learning_rate")
    max_steps = check_count(max_steps, "max_steps")
    magnification = check_positive(magnification, "magnification")
    batch_size = None if batch_size is None else check_count(batch_size, "batch_size")
    pixel_range = check_pixel_range(pixel_range)
    batch = inputs.shape[0]
    target = as_targets(targets, batch).to(inputs.device)
    if pixel_range is not None and bool(((inputs < pixel_range[0]) |
                                         (inputs > pixel_range[1])).any()):
        raise ValueError(f"inputs have pixels outside pixel_range {pixel_range} (min "
                         f"{inputs.min().item():.4g}, max {inputs.max().item():.4g}); pass the "
                         "range the model takes, or pixel_range=None not to clamp")
    check_eval_mode(model)
    space = input_space(model, inputs.shape[1], normalization, pixel_range).to(inputs)
    call = adapt(model, output, forward_args, forward_kwargs, batch)

    with preserved(model, inputs):
        original_scores = scores(call, inputs.detach(), batch_size)
        check_target_range(target, class_count(original_scores, batch))
        images = inputs.detach().clone()
        steps = torch.zeros(batch, dtype=torch.int64, device=inputs.device)
        moving = (original_scores.argmax(1) != target).nonzero().flatten()
        for _ in range(max_steps):
            if moving.numel() == 0:
                break
            x, t = images[moving], target[moving]
            # The scores come from the same forward as the gradient: the check is of the
            # image before this step, as in the assignment's loop.
            now, grad = scores_and_gradient(call, x, t, batch_size, moving)
            go = now.argmax(1) != t  # fooled images stop here
            moving, x = moving[go], x[go]
            if moving.numel() == 0:
                break
            g = space.gradient_in_model_units(grad[go])
            norm = g.flatten(1).norm(dim=1).clamp_min(_TINY_NORM).view(-1, 1, 1, 1)
            images[moving] = space.move(x, learning_rate * g / norm)
            steps[moving] += 1
        final = scores(call, images, batch_size).argmax(1)
    success = final == target  # the last step's images are judged by a forward of their own
    difference = images - inputs.detach()
    return FoolingResult(images=images, originals=inputs.detach().clone(), targets=target,
                         steps=steps, success=success,
                         original_predictions=original_scores.argmax(1), predictions=final,
                         difference=difference, magnified=magnification * difference,
                         magnification=magnification)
