"""Torchvision ImageNet architectures from local weight files (torchvision is optional)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from .loading import WeightsError
from .normalize import Normalized
from .zoo import IMAGENET_MEAN, IMAGENET_STD, _finish

INSTALL_HINT = "pip install 'smoothkern[vision]' (or: pip install torchvision)"


def _torchvision():
    try:
        import torchvision.models
    except ImportError as err:
        raise ImportError(f"ImageNet models need torchvision ({err}); install it with "
                          f"{INSTALL_HINT}") from None
    return torchvision.models


def imagenet_names() -> list[str]:
    """Torchvision's classification architectures (resnet18, resnet50, vgg16, ...)."""
    return sorted(_torchvision().list_models(module=_torchvision()))


def imagenet_model(name: str, weights: str | os.PathLike | None = None) -> Normalized:
    """A torchvision classifier, 3×H×W pixels in [0, 1] → 1000 logits, ImageNet normalisation.

    Args:
        name: a torchvision architecture (``resnet18``, ``resnet50``, ``squeezenet1_1``, ...).
        weights: a local state dict file (as torchvision publishes them); a torchvision weights
            name (``"DEFAULT"``, ``"IMAGENET1K_V1"``) is taken from torch's hub cache if already
            there, never downloaded. None leaves random weights.

    Raises:
        ImportError: torchvision is not installed (the message says how to install it).
        ValueError: unknown architecture.
        WeightsError: missing or unfitting weights (the message says where to get them).
    """
    models = _torchvision()
    names = imagenet_names()
    if name not in names:
        raise ValueError(f"unknown ImageNet model {name!r}; torchvision has e.g. "
                         f"{', '.join(n for n in names if n[:3] in ('res', 'squ', 'vgg'))}")
    net = models.get_model(name, weights=None)
    if weights is not None and not Path(weights).expanduser().exists() and \
            re.fullmatch(r"[A-Z][A-Z0-9_]*", str(weights)):
        weights = _cached_torchvision_file(models, name, str(weights))
    return _finish(net, IMAGENET_MEAN, IMAGENET_STD, weights)


def _cached_torchvision_file(models, name: str, tag: str) -> Path:
    """The hub-cache path of a named torchvision weight, or an error saying how to get it."""
    import torch.hub

    enum = models.get_model_weights(name)
    try:
        entry = enum.DEFAULT if tag == "DEFAULT" else enum[tag]
    except KeyError:
        raise WeightsError(f"{name} has no weights {tag!r}; choose from "
                           f"{[w.name for w in enum]} or pass a file path") from None
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(entry.url).name
    if not cached.is_file():
        raise WeightsError(f"{name} weights {entry.name} are not on this machine and smoothkern "
                           f"never downloads: fetch {entry.url} elsewhere and pass the file "
                           f"(--weights PATH / weights=PATH), or place it at {cached}")
    return cached
