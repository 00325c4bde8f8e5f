"""Real images without downloads: bundled digits and photos, plus loaders for local MNIST and
CIFAR-10 (and MNIST-C) files and for image files, and the distribution shifts of the
out-of-distribution study (:mod:`smoothkern.data.shifts`). Everything returns pixels in [0, 1]."""

from __future__ import annotations

from . import shifts
from .cifar import CLASSES as CIFAR10_CLASSES
from .cifar import load_cifar10
from .digits import digit_examples, digits_split, load_digits
from .errors import DataError
from .images import load_image, load_images
from .mnist import load_mnist, read_idx
from .mnist_c import load_mnist_c, mnist_c_corruptions
from .photos import PHOTOS, load_photos

__all__ = ["CIFAR10_CLASSES", "PHOTOS", "DataError", "digit_examples", "digits_split",
           "load_cifar10", "load_digits", "load_image", "load_images", "load_mnist",
           "load_mnist_c", "load_photos", "mnist_c_corruptions", "read_idx", "shifts"]
