"""Models by name, for the command line: the constructor plus the input each one expects."""

from __future__ import annotations

import os
from dataclasses import dataclass

from torch import nn

from ..data.cifar import CLASSES as CIFAR10_CLASSES
from .imagenet import imagenet_model, imagenet_names
from .zoo import cifar10_resnet18, digits_cnn, mnist_cnn


@dataclass(frozen=True)
class InputSpec:
    """What a model takes: channels, square size, and class names (None: class indices)."""

    channels: int
    size: int
    classes: tuple[str, ...] | None = None


LOCAL_MODELS = {"digits": "the bundled digits CNN (trained, default weights)",
                "mnist": "the MNIST CNN (4 conv + 2 linear)",
                "cifar10_resnet18": "CIFAR-style ResNet18"}


def model_names() -> list[str]:
    """Every name :func:`load_named_model` accepts (ImageNet names need torchvision)."""
    try:
        extra = imagenet_names()
    except ImportError:
        extra = []
    return list(LOCAL_MODELS) + extra


def load_named_model(name: str, weights: str | os.PathLike | None = None
                     ) -> tuple[nn.Module, InputSpec]:
    """A normalised model in eval mode and its input spec.

    Args:
        name: "digits", "mnist", "cifar10_resnet18" (dashes accepted) or a torchvision
            architecture such as "resnet18".
        weights: a local weight file (for "digits", None means the bundled weights).

    Raises:
        ValueError: unknown name. WeightsError: bad weights. ImportError: torchvision missing.
    """
    key = name.replace("-", "_").lower()
    if key == "digits":
        return (digits_cnn() if weights is None else digits_cnn(weights)), InputSpec(1, 28)
    if key in ("mnist", "mnist_cnn"):
        return mnist_cnn(weights), InputSpec(1, 28)
    if key in ("cifar10_resnet18", "cifar_resnet18", "cifar10"):
        return cifar10_resnet18(weights), InputSpec(3, 32, CIFAR10_CLASSES)
    try:
        known = imagenet_names()
    except ImportError:
        known = []
    if key in known:
        return imagenet_model(key, weights), InputSpec(3, 224, _imagenet_classes(key, weights))
    if not known:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(LOCAL_MODELS)} (ImageNet "
                         "models need torchvision: pip install 'smoothkern[vision]')")
    raise ValueError(f"unknown model {name!r}; choose from {', '.join(LOCAL_MODELS)} or a "
                     "torchvision architecture (resnet18, resnet50, squeezenet1_1, vgg16, ...)")


def _imagenet_classes(name: str, weights) -> tuple[str, ...] | None:
    if weights is None:  # random weights: class names would suggest a meaning there is not
        return None
    import torchvision.models

    try:
        return tuple(torchvision.models.get_model_weights(name).DEFAULT.meta["categories"])
    except (KeyError, ValueError, AttributeError):
        return None
