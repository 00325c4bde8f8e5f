"""scikit-image's bundled photos, cropped to ImageNet size (they ship in the wheel: offline)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .transforms import resize_center_crop, set_channels, to_tensor

INSTALL_HINT = "pip install 'smoothkern[data]' (or: pip install scikit-image)"
# Colour photos that ship inside the scikit-image wheel (no pooch download needed).
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry",
          "hubble_deep_field")


def load_photos(names: Sequence[str] = ("chelsea", "coffee", "astronaut"),
                size: int = 224) -> Tensor:
    """Bundled photos, shorter side resized to ``size`` and centre-cropped.

    Args:
        names: photos from :data:`PHOTOS` (any ``skimage.data`` image bundled in the wheel).
        size: output height and width.

    Returns:
        Tensor[len(names), 3, size, size] in [0, 1].
    """
    try:
        import skimage.data
    except ImportError:
        raise ImportError(f"the photos need scikit-image: {INSTALL_HINT}") from None
    images = []
    for name in names:
        loader = getattr(skimage.data, name, None)
        if loader is None or not callable(loader):
            raise ValueError(f"unknown photo {name!r}; choose from {PHOTOS}")
        try:
            array = loader()
        except Exception as err:  # noqa: BLE001 - e.g. images that would need a download
            raise ValueError(f"photo {name!r} is not available offline ({type(err).__name__}); "
                             f"choose from {PHOTOS}") from None
        images.append(resize_center_crop(set_channels(to_tensor(array), 3), size))
    return torch.stack(images)
