"""Models for the assignments: the networks, normalised wrappers, local weights, training.

All wrappers take pixels in [0, 1] (normalisation is their first module) and load weights from
local files only.
"""

from __future__ import annotations

from .cifar import CifarResNet
from .imagenet import imagenet_model, imagenet_names
from .loading import WeightsError, load_weights, read_state_dict
from .mnist import MnistCNN
from .named import InputSpec, load_named_model, model_names
from .normalize import Normalize, Normalized
from .zoo import BUNDLED_DIGITS_WEIGHTS, cifar10_resnet18, digits_cnn, mnist_cnn

__all__ = ["BUNDLED_DIGITS_WEIGHTS", "CifarResNet", "MnistCNN", "Normalize", "Normalized",
           "InputSpec", "WeightsError", "cifar10_resnet18", "digits_cnn", "imagenet_model",
           "imagenet_names", "load_named_model", "load_weights", "mnist_cnn", "model_names",
           "read_state_dict"]
