"""A folder of JPEGs end to end: class subfolders as labels, torchvision's evaluation resize and
crop, decoding in DataLoader workers, a torchvision architecture with a weights file."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import smoothkern as sk
from smoothkern import cli
from smoothkern.dataset import open_store
from smoothkern.dataset.named_data import default_resize, open_source
from smoothkern.models import InputSpec

pytest.importorskip("zarr")
torchvision = pytest.importorskip("torchvision")
skimage_data = pytest.importorskip("skimage.data")

PHOTOS = {"cat": ("chelsea", "coffee"), "rocket": ("rocket", "astronaut")}


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("jpegs")
    for folder, names in PHOTOS.items():
        (root / folder).mkdir()
        for name in names:  # photos of several sizes and aspect ratios
            Image.fromarray(getattr(skimage_data, name)()).save(root / folder / f"{name}.jpg",
                                                                quality=90)
    return root


def test_images_are_read_as_torchvision_evaluates_imagenet_models(jpegs):
    from PIL import Image

    assert default_resize("resnet18", InputSpec(3, 224)) == 256
    assert default_resize("resnet50", InputSpec(3, 224)) == 232
    assert default_resize("digits", InputSpec(1, 28)) == 28
    source = open_source(str(jpegs), InputSpec(3, 224), resize=256)
    assert source.classes == ("cat", "rocket") and len(source.dataset) == 4
    want = torchvision.transforms.Compose([torchvision.transforms.Resize(256),
                                           torchvision.transforms.CenterCrop(224),
                                           torchvision.transforms.ToTensor()])
    for i, (path, label) in enumerate(source.dataset.items):
        x, y = source.dataset[i]
        assert y == label == (i // 2)
        with Image.open(path) as image:
            torch.testing.assert_close(x, want(image.convert("RGB")), rtol=0, atol=1e-6)


@pytest.mark.slow
def test_attribute_a_jpeg_tree_with_a_torchvision_model_and_weights(jpegs, tmp_path):
    net = torchvision.models.squeezenet1_1()
    weights = tmp_path / "squeezenet.pth"
    torch.save(net.state_dict(), weights)
    out = tmp_path / "maps.zarr"
    assert cli.main(["attribute", "--model", "squeezenet1_1", "--weights", str(weights),
                     "--data", str(jpegs), "--target", "label", "--n-samples", "2",
                     "--batch-size", "3", "--chunk-size", "3", "--workers", "2",
                     "--store-inputs", "--quiet", "--out", str(out)]) == 0
    store = open_store(out)
    assert store["label"][:].tolist() == [0, 0, 1, 1] == store["target"][:].tolist()
    meta = store.attrs["smoothkern"]["metadata"]
    assert meta["resize"] == 256 and meta["classes"] == ["cat", "rocket"]
    x = torch.from_numpy(store["input"][:])
    assert x.shape == (4, 3, 224, 224)
    from smoothkern.models import load_named_model

    model, _ = load_named_model("squeezenet1_1", weights)
    want = sk.smooth_grad(model, x, torch.tensor([0, 0, 1, 1]), n_samples=2)
    np.testing.assert_allclose(store["mean"][:], want.numpy(), rtol=1e-4, atol=1e-6)
