"""Data sources of the command line: ``digits``, ``photos``, a folder of images, ``mnist:DIR``,
``cifar10:DIR`` (the test split; ``mnist-train:DIR`` and ``cifar10-train:DIR`` for training).

Each becomes a map-style Dataset of ``(x, label)`` items (label -1 where a source has none),
checked against the model's input before any work.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset, TensorDataset

from ..data import DataError
from ..models import InputSpec

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
PREFIXED = {"mnist": ("mnist", "test"), "mnist-train": ("mnist", "train"),
            "cifar10": ("cifar10", "test"), "cifar10-train": ("cifar10", "train")}
SOURCES_HELP = ("digits, photos, a folder of images (subfolders as classes), mnist:DIR, "
                "cifar10:DIR (test split; mnist-train:DIR, cifar10-train:DIR)")


@dataclass(frozen=True)
class Source:
    """A parsed SOURCE: the dataset and what to record about it.

    Attributes:
        dataset: items ``(x Tensor[C, H, W] in [0, 1], label int)``.
        text: the SOURCE as recorded (folders as absolute paths), to open it again.
        classes: class names of a folder of class subfolders, else None.
        listing: for a folder, a hash of the names and sizes of the files read (in order), so
            that a store can tell when the folder changed; else None.
    """

    dataset: Dataset
    text: str
    classes: tuple[str, ...] | None = None
    listing: str | None = None


def open_source(text: str, spec: InputSpec, limit: int | None = None,
                resize: int | None = None) -> Source:
    """The data set a SOURCE names, shaped for a model taking ``spec``'s input.

    Image files are resized (shorter side to ``resize``, default the input size) and
    centre-cropped to the input size, as torchvision's ImageNet evaluation does (shorter side
    to 256, or 232 for some weights, then the central 224²).

    Raises:
        DataError: a missing folder or file, a folder without images.
        ValueError: an unknown source, or images the model cannot take (channels or size).
    """
    kind, sep, rest = text.partition(":")
    classes, listing = None, None
    if text == "digits":
        from ..data import load_digits

        dataset, recorded = TensorDataset(*load_digits(28)), text
    elif text == "photos":
        from ..data import PHOTOS, load_photos

        images = load_photos(PHOTOS, size=spec.size)
        dataset = TensorDataset(images, torch.full((len(images),), -1, dtype=torch.int64))
        recorded = text
    elif sep and kind in PREFIXED:
        name, split = PREFIXED[kind]
        folder = Path(rest).expanduser().resolve()
        if name == "mnist":
            from ..data import load_mnist

            dataset = TensorDataset(*load_mnist(folder, split))
        else:
            from ..data import load_cifar10

            dataset = TensorDataset(*load_cifar10(folder, split))
        recorded = f"{kind}:{folder}"
    elif Path(text).expanduser().is_dir():
        folder = Path(text).expanduser().resolve()
        dataset = ImageFolder(folder, spec, resize)
        recorded, classes = str(folder), dataset.classes
    elif sep and len(kind) > 1:
        raise ValueError(f"unknown data source {text!r}; choose from {SOURCES_HELP}")
    else:
        raise DataError(f"data folder not found: {text} (sources: {SOURCES_HELP})")
    _check_shape(dataset, spec, text)
    if isinstance(dataset, ImageFolder):
        listing = dataset.listing(len(dataset) if limit is None else limit)
    if limit is not None and limit < len(dataset):
        dataset = Subset(dataset, range(limit))
    return Source(dataset, recorded, classes, listing)


class ImageFolder(Dataset):
    """Image files of a folder, read when asked for: its files (sorted, no labels), or the files
    of its subfolders (sorted; label = the subfolder's index among the sorted subfolders).

    Every image is converted to the model's channels, its shorter side resized to ``resize``
    (default: the model's input size), and the centre cropped to the input size. Images are
    decoded when an item is read: in the DataLoader's workers when there are some.
    """

    def __init__(self, folder: Path, spec: InputSpec, resize: int | None = None) -> None:
        if resize is not None and resize < spec.size:
            raise ValueError(f"resize must be at least the model's input size {spec.size}, got "
                             f"{resize}")
        self.spec, self.folder, self.resize = spec, folder, resize or spec.size
        files = _images_in(folder)
        self.classes: tuple[str, ...] | None = None
        self.items: list[tuple[Path, int]] = [(f, -1) for f in files]
        if not files:
            subfolders = sorted(p for p in folder.iterdir() if p.is_dir() and _images_in(p))
            self.classes = tuple(p.name for p in subfolders)
            self.items = [(f, label) for label, sub in enumerate(subfolders)
                          for f in _images_in(sub)]
        if not self.items:
            raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder} or its "
                            "subfolders")

    def __len__(self) -> int:
        return len(self.items)

    def listing(self, count: int) -> str:
        """A hash of the first ``count`` items' paths (relative to the folder), sizes and
        labels: it changes when an image is added, removed, renamed or rewritten among them."""
        digest = hashlib.sha256(str(min(count, len(self.items))).encode())
        for path, label in self.items[:count]:
            digest.update(f"{path.relative_to(self.folder)}\0{path.stat().st_size}\0{label}\n"
                          .encode())
        return digest.hexdigest()[:16]

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        from ..data import load_image

        path, label = self.items[index]
        return load_image(path, channels=self.spec.channels, size=self.spec.size,
                          resize=self.resize), label


def default_resize(model: str, spec: InputSpec) -> int:
    """The shorter side images are resized to before the centre crop: for a torchvision
    architecture, what its default weights' evaluation transform uses (256 for resnet18, 232
    for resnet50's), else the model's input size (no crop beyond the aspect ratio)."""
    try:
        import torchvision.models

        transform = torchvision.models.get_model_weights(model).DEFAULT.transforms()
    except (ImportError, KeyError, ValueError, AttributeError, TypeError):
        return spec.size
    if list(transform.crop_size) != [spec.size]:
        return spec.size
    return int(transform.resize_size[0])


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _check_shape(dataset: Dataset, spec: InputSpec, text: str) -> None:
    x = dataset[0][0]
    wanted = (spec.channels, spec.size, spec.size)
    if tuple(x.shape) != wanted:
        raise ValueError(f"the model takes {'×'.join(map(str, wanted))} images, the data "
                         f"source {text!r} gives {'×'.join(map(str, x.shape))}")
