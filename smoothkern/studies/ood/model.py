"""The assignment's 4-conv + 2-linear CNN with a 3-channel input, for the shift study.

Coloured digits need colour channels at the input, so the study trains the MNIST CNN
(:class:`~smoothkern.models.MnistCNN`) with its first convolution taking RGB, on gray digits
replicated to three channels (what the assignment does). Normalisation is the model's first
module, so inputs are pixels in [0, 1] as everywhere in the package.
"""

from __future__ import annotations

from torch import nn

from ...models import MnistCNN, Normalized
from ...models.mnist import MNIST_MEAN, MNIST_STD
from ...models.zoo import DIGITS_HIDDEN, DIGITS_MEAN, DIGITS_STD, DIGITS_WIDTH

# (width, hidden, per-channel mean, std): the bundled digits model's narrower layers for the
# 1797 small digits, the assignment's full size for MNIST.
SIZES = {"digits": (DIGITS_WIDTH, DIGITS_HIDDEN, DIGITS_MEAN, DIGITS_STD),
         "mnist": (32, 128, MNIST_MEAN, MNIST_STD)}


def rgb_digits_cnn(data: str = "digits") -> Normalized:
    """A freshly initialised RGB MNIST CNN (in eval mode; seed torch's generator first).

    Args:
        data: "digits" (16/32 channels, 64 hidden units: the bundled model's size) or "mnist"
            (32/64 channels, 128 hidden: the assignment's).

    Returns:
        Normalized model: Tensor[B, 3, 28, 28] in [0, 1] → logits Tensor[B, 10].
    """
    if data not in SIZES:
        raise ValueError(f"data must be one of {', '.join(SIZES)}, got {data!r}")
    width, hidden, mean, std = SIZES[data]
    net = MnistCNN(width=width, hidden=hidden)
    first = net.features[0]
    net.features[0] = nn.Conv2d(3, first.out_channels, first.kernel_size, padding=first.padding)
    return Normalized(net, mean * 3, std * 3).eval()
