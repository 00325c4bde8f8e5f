"""Argument checks shared by the input optimisations: clear errors before any work is done."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ...core.checks import check_count, check_model
from ...model_io import logits_of

__all__ = ["as_targets", "check_count", "check_image_shape", "check_images", "check_model",
           "check_non_negative", "check_pixel_range", "check_positive", "check_target_range",
           "class_count"]


def check_positive(value: Any, name: str) -> float:
    """A positive finite number (bool refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not 0 < value < math.inf:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def check_non_negative(value: Any, name: str) -> float:
    """A finite number >= 0 (bool refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not 0 <= value < math.inf:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def check_pixel_range(pixel_range: Any) -> tuple[float, float] | None:
    """None (no clamping) or ``(low, high)`` with finite low < high."""
    if pixel_range is None:
        return None
    if not isinstance(pixel_range, Sequence) or isinstance(pixel_range, str) or \
            len(pixel_range) != 2:
        raise TypeError(f"pixel_range must be None or a pair (low, high), got {pixel_range!r}")
    low, high = pixel_range
    for v in (low, high):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"pixel_range must hold two finite numbers, got {pixel_range!r}")
    if not low < high:
        raise ValueError(f"pixel_range must have low < high, got {pixel_range!r}")
    return float(low), float(high)


def check_images(inputs: Any, name: str = "inputs") -> Tensor:
    """A floating, finite ``[B, C, H, W]`` tensor with B >= 1 and values (not on ``meta``)."""
    if not isinstance(inputs, Tensor):
        raise TypeError(f"{name} must be a Tensor, got {type(inputs).__name__}")
    if not inputs.is_floating_point():
        raise TypeError(f"{name} must be floating point, got dtype {inputs.dtype}")
    if inputs.dim() != 4 or inputs.numel() == 0:
        raise ValueError(f"{name} must be images [B, C, H, W] with no empty dim, got "
                         f"{tuple(inputs.shape)}")
    if inputs.device.type == "meta":
        raise ValueError(f"{name} are on the meta device: move them to a real device")
    if not bool(torch.isfinite(inputs).all()):
        raise ValueError(f"{name} contain NaN or Inf")
    return inputs


def check_image_shape(shape: Any) -> tuple[int, int, int]:
    """``(C, H, W)`` of positive ints."""
    if shape is None:
        raise TypeError("image_shape is required: the (channels, height, width) of the images "
                        "to generate, e.g. (1, 28, 28) for the digits CNN or (3, 224, 224)")
    if not isinstance(shape, (Sequence, torch.Size)) or isinstance(shape, str) or len(shape) != 3:
        raise TypeError(f"image_shape must be (channels, height, width), got {shape!r}")
    for s in shape:
        if isinstance(s, bool) or not isinstance(s, int) or s < 1:
            raise ValueError(f"image_shape must hold three positive ints, got {tuple(shape)!r}")
    return tuple(int(s) for s in shape)


def as_targets(targets: Any, batch: int | None) -> Tensor:
    """Targets as a LongTensor[B] (on the CPU); ``batch`` None: their own length.

    An int (or 0-d tensor) is repeated ``batch`` times when ``batch`` is given.
    """
    if isinstance(targets, bool):
        raise TypeError("targets must be an int, a sequence of ints or a LongTensor, not bool")
    if isinstance(targets, int):
        if batch is None:
            targets = [targets]
        else:
            return torch.full((batch,), targets, dtype=torch.int64)
    if isinstance(targets, range):
        targets = list(targets)
    if isinstance(targets, Tensor):
        if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
            raise TypeError(f"targets must be an integer tensor, got dtype {targets.dtype}")
        if targets.dim() == 0:
            targets = targets.reshape(1).expand(1 if batch is None else batch)
        out = targets.detach().to("cpu", torch.int64).clone()
    elif isinstance(targets, Sequence) and not isinstance(targets, str):
        if not all(isinstance(t, int) and not isinstance(t, bool) for t in targets):
            raise TypeError(f"targets must be ints, got {list(targets)!r}")
        out = torch.tensor(list(targets), dtype=torch.int64)
    else:
        raise TypeError(f"targets must be an int, a sequence of ints or a LongTensor, got "
                        f"{type(targets).__name__}")
    if out.dim() != 1 or out.numel() == 0:
        raise ValueError(f"targets must be one class per image, got shape {tuple(out.shape)}")
    if batch is not None and out.shape[0] != batch:
        raise ValueError(f"targets must have one class per image ({batch}), got "
                         f"{out.shape[0]}")
    return out


def check_target_range(targets: Tensor, classes: int) -> None:
    bad = (targets < 0) | (targets >= classes)
    if bool(bad.any()):
        raise ValueError(f"targets out of range: the model has {classes} classes (0.."
                         f"{classes - 1}), got {targets[bad].tolist()}")


def class_count(out: Any, batch: int) -> int:
    """The number of classes of the model's output (logits [B, classes], checked)."""
    return int(logits_of(out, None, batch).shape[1])
