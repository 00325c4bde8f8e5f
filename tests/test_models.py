"""Model wrappers: normalisation in front, local weights with clear errors, the bundled CNN."""

from __future__ import annotations

import sys

import pytest
import torch

from smoothkern.models import (
    CifarResNet,
    MnistCNN,
    Normalize,
    WeightsError,
    cifar10_resnet18,
    digits_cnn,
    imagenet_model,
    load_named_model,
    mnist_cnn,
)
from smoothkern.studies.train import accuracy, train


def test_normalize_is_the_first_module_and_matches_the_formula():
    model = mnist_cnn()
    assert isinstance(model[0], Normalize) and isinstance(model.net, MnistCNN)
    assert not model.training
    x = torch.rand(3, 1, 28, 28)
    expected = model.net((x - 0.1307) / 0.3081)
    torch.testing.assert_close(model(x), expected)
    assert set(model.state_dict()) == {f"net.{k}" for k in model.net.state_dict()}


def test_normalize_rejects_wrong_channels():
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        Normalize((0.5,) * 3, (0.2,) * 3)(torch.rand(1, 1, 8, 8))


def test_cifar_resnet18_shapes():
    model = cifar10_resnet18()
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert model.net.conv1.kernel_size == (3, 3)


@pytest.mark.parametrize("wrap", ["bare", "module", "state_dict", "net", "compiled"])
def test_cifar_weights_load_through_the_common_wrappers(tmp_path, wrap):
    torch.manual_seed(1)
    source = CifarResNet()
    state = source.state_dict()
    if wrap == "module":
        state = {f"module.{k}": v for k, v in state.items()}
    elif wrap == "compiled":
        state = {f"_orig_mod.{k}": v for k, v in state.items()}
    elif wrap in ("state_dict", "net"):
        state = {wrap: {f"module.{k}": v for k, v in state.items()}, "epoch": 3}
    path = tmp_path / "ckpt.pth"
    torch.save(state, path)
    model = cifar10_resnet18(path)
    for k, v in source.state_dict().items():
        assert torch.equal(model.net.state_dict()[k], v), k


def test_torchvision_style_cifar_names_are_mapped(tmp_path):
    source = CifarResNet()
    renamed = {("fc." + k[7:] if k.startswith("linear.") else k).replace(".shortcut.",
                                                                        ".downsample."): v
               for k, v in source.state_dict().items()}
    torch.save(renamed, tmp_path / "tv.pt")
    model = cifar10_resnet18(tmp_path / "tv.pt")
    assert torch.equal(model.net.linear.weight, source.linear.weight)


def test_weight_errors_are_clear(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        mnist_cnn(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read"):
        mnist_cnn(tmp_path / "junk.pt")
    torch.save({"epoch": 1}, tmp_path / "empty.pt")
    with pytest.raises(WeightsError, match="no state dict"):
        mnist_cnn(tmp_path / "empty.pt")
    torch.save(CifarResNet().state_dict(), tmp_path / "cifar.pt")
    with pytest.raises(WeightsError, match="does not fit MnistCNN: missing keys classifier"):
        mnist_cnn(tmp_path / "cifar.pt")
    torch.save(MnistCNN(width=8).state_dict(), tmp_path / "narrow.pt")
    with pytest.raises(WeightsError, match="shapes differ"):
        mnist_cnn(tmp_path / "narrow.pt")


def test_bundled_digits_cnn_is_accurate_on_held_out_digits():
    from smoothkern.data import digits_split

    _, _, x_test, y_test = digits_split()
    assert accuracy(digits_cnn(), x_test, y_test) >= 0.95


def test_training_is_deterministic():
    from smoothkern.data import digits_split

    x, y, _, _ = digits_split()
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = mnist_cnn(width=4, hidden=8)
        losses = train(model, x[:96], y[:96], epochs=1, batch_size=32, seed=3)
        runs.append((losses, model.net.classifier[-1].weight.clone()))
    assert runs[0][0] == runs[1][0]
    assert torch.equal(runs[0][1], runs[1][1])


def test_imagenet_model_from_a_local_file(tmp_path):
    pytest.importorskip("torchvision")
    torch.manual_seed(0)
    source = imagenet_model("squeezenet1_1")
    torch.save(source.net.state_dict(), tmp_path / "sq.pth")
    model = imagenet_model("squeezenet1_1", tmp_path / "sq.pth")
    assert isinstance(model[0], Normalize)
    x = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(model(x), source(x))


def test_imagenet_model_never_downloads(tmp_path, monkeypatch):
    pytest.importorskip("torchvision")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(WeightsError, match=r"never downloads: fetch https://\S+resnet18"):
        imagenet_model("resnet18", "DEFAULT")
    with pytest.raises(ValueError, match="unknown ImageNet model 'resnet19'"):
        imagenet_model("resnet19")


def test_imagenet_model_without_torchvision_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)
    monkeypatch.setitem(sys.modules, "torchvision.models", None)
    with pytest.raises(ImportError, match=r"smoothkern\[vision\]"):
        imagenet_model("resnet18")


def test_named_models():
    model, spec = load_named_model("digits")
    assert (spec.channels, spec.size) == (1, 28)
    _, spec = load_named_model("cifar10-resnet18")
    assert spec.classes[3] == "cat"
    with pytest.raises(ValueError, match="unknown model 'lenet'"):
        load_named_model("lenet")
