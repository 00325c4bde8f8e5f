"""Real images without downloads: bundled digits and photos, plus loaders for local MNIST and
CIFAR-10 files and for image files. Everything returns pixels in [0, 1]. The out-of-distribution
study's shifts and the MNIST-C loader live beside the library, in :mod:`smoothkern.studies`."""

from __future__ import annotations

from .cifar import CLASSES as CIFAR10_CLASSES
from .cifar import load_cifar10
from .digits import digit_examples, digits_split, load_digits
from .errors import DataError
from .images import load_image, load_images
from .mnist import load_mnist, read_idx
from .photos import PHOTOS, load_photos

__all__ = ["CIFAR10_CLASSES", "PHOTOS", "DataError", "digit_examples", "digits_split",
           "load_cifar10", "load_digits", "load_image", "load_images", "load_mnist",
           "load_photos", "read_idx"]
