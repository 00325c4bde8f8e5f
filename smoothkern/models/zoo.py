"""Ready-to-explain models: the network with its normalisation in front, weights from local files.

Every constructor returns a :class:`~smoothkern.models.normalize.Normalized` model in eval mode
that takes pixels in [0, 1]. Nothing is downloaded: weights are a path to a local file.
"""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from .cifar import CifarResNet
from .loading import WeightsError, load_weights
from .mnist import MNIST_MEAN, MNIST_STD, MnistCNN
from .normalize import Normalized

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)  # Kuang Liu's constants; pass mean/std for other repos
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Pixel statistics of scikit-learn's digits scaled to [0, 1] and resized to 28×28.
DIGITS_MEAN, DIGITS_STD = (0.3053,), (0.3247,)
# The narrower MNIST CNN trained on the digits (python -m smoothkern.studies.train_digits).
DIGITS_WIDTH, DIGITS_HIDDEN = 16, 64
BUNDLED_DIGITS_WEIGHTS = Path(__file__).with_name("weights") / "digits_cnn.pt"
# Measured by train_digits on the 450 held-out digits (seed 0, 12 epochs).
BUNDLED_DIGITS_ACCURACY = 0.9889

PathLike = str | os.PathLike


def _finish(net: nn.Module, mean, std, weights: PathLike | None, rename=None) -> Normalized:
    if weights is not None:
        load_weights(net, weights, rename=rename)
    model = Normalized(net, mean, std).eval()
    model.weights_source = "random init" if weights is None else str(weights)
    return model


def mnist_cnn(weights: PathLike | None = None, *, width: int = 32, hidden: int = 128,
              mean=MNIST_MEAN, std=MNIST_STD) -> Normalized:
    """The assignment's MNIST CNN (4 conv + 2 linear), 1×28×28 pixels in [0, 1] → 10 logits.

    Args:
        weights: a local state dict of :class:`MnistCNN`; None leaves random weights.
        width, hidden: channels of the first convolutions and units of the hidden layer.
        mean, std: the normalisation the weights were trained with.
    """
    return _finish(MnistCNN(width=width, hidden=hidden), mean, std, weights)


def digits_cnn(weights: PathLike | None = BUNDLED_DIGITS_WEIGHTS) -> Normalized:
    """The narrower MNIST CNN trained on scikit-learn's digits; bundled with the package.

    Args:
        weights: defaults to the bundled file (held-out accuracy in docs/demo.md).
    """
    if weights is not None and Path(weights) == BUNDLED_DIGITS_WEIGHTS and \
            not BUNDLED_DIGITS_WEIGHTS.is_file():
        raise WeightsError(f"the bundled digits weights are missing ({BUNDLED_DIGITS_WEIGHTS}); "
                           "recreate them with `python -m smoothkern.studies.train_digits`")
    return mnist_cnn(weights, width=DIGITS_WIDTH, hidden=DIGITS_HIDDEN, mean=DIGITS_MEAN,
                     std=DIGITS_STD)


def _cifar_rename(key: str) -> str:
    # Torchvision-style CIFAR ResNets (e.g. huyvnphan/PyTorch_CIFAR10) name the same layers so.
    key = key.replace(".downsample.", ".shortcut.")
    return "linear." + key[3:] if key.startswith("fc.") else key


def cifar10_resnet18(weights: PathLike | None = None, *, mean=CIFAR10_MEAN,
                     std=CIFAR10_STD) -> Normalized:
    """The CIFAR-style ResNet18 (3×3 stem, no max-pool), 3×32×32 pixels in [0, 1] → 10 logits.

    Args:
        weights: a local state dict, bare or under ``"state_dict"``/``"net"``, with or without
            the ``module.`` prefix; torchvision-style names (``downsample``, ``fc``) are mapped.
            None leaves random weights.
        mean, std: the normalisation the checkpoint was trained with.
    """
    return _finish(CifarResNet(), mean, std, weights, rename=_cifar_rename)
