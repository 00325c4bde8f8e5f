"""The default call on the models users bring, against the loop reference at the same seed.

Every torchvision classification model that fits the CPU budget, a list of timm models, tiny
transformers configs (text and vision) and hand-written styles: ``smooth_grad(model, x,
n_samples=4)`` (prepared copy, batched passes) equals ``backend="loop", prepare=False`` within
float32 rounding; a subset also through the Captum drop-in's ``NoiseTunnel(Saliency)``.
Random weights (BatchNorm statistics randomised too, so a wrong fold shows), small inputs.

    python -m pytest -m zoo tests/test_zoo.py

Left out, with the reason (everything else ``list_models`` gives runs):
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_text_classifier
from torch import nn

import smoothkern as sk

torchvision = pytest.importorskip("torchvision")

pytestmark = pytest.mark.zoo

N_SAMPLES, SEED, BATCH = 4, 3, 2
# Relative L2 distance to the reference allowed. Float32 rounding alone is ~1e-6 here, but in a
# deep ReLU network one of its ~1e5 gates (or a max-pool choice) per noisy sample now and then
# sits within rounding of its threshold and flips, moving that sample's gradient: measured up to
# 5.4e-4 (ResNet-34, one example of two; the same call with another σ: 5e-7). A wrong fold or a
# stale copy is 1e-2 or more.
TOLERANCE = 1e-3
# The float64 runs (see check): the noise is drawn in float32 by every kernel set, and the
# compiled op's log/cos round differently from the loop's torch kernels (up to 1.7e-7 measured).
TOLERANCE_FLOAT64 = 1e-5

# Too large for a CPU test: building the random weights alone takes seconds each, and the
# prepared copy doubles the memory (parameter counts from torchvision's model docs).
TOO_LARGE = {
    "convnext_base": "89M parameters", "convnext_large": "198M parameters",
    "efficientnet_b5": "30M parameters, 456² native input, slow at any size",
    "efficientnet_b6": "43M parameters", "efficientnet_b7": "66M parameters",
    "efficientnet_v2_m": "54M parameters", "efficientnet_v2_l": "118M parameters",
    "regnet_x_16gf": "54M parameters", "regnet_x_32gf": "108M parameters",
    "regnet_y_16gf": "84M parameters", "regnet_y_32gf": "145M parameters",
    "regnet_y_128gf": "645M parameters", "resnext101_32x8d": "89M parameters",
    "resnext101_64x4d": "83M parameters", "wide_resnet101_2": "127M parameters",
    "vgg11": "133M parameters", "vgg11_bn": "133M parameters", "vgg13": "133M parameters",
    "vgg13_bn": "133M parameters", "vgg16": "138M parameters", "vgg16_bn": "138M parameters",
    "vgg19": "144M parameters", "vgg19_bn": "144M parameters",
    "vit_b_16": "86M parameters", "vit_b_32": "88M parameters", "vit_h_14": "632M parameters",
    "vit_l_16": "304M parameters", "vit_l_32": "306M parameters",
    "swin_b": "88M parameters", "swin_v2_b": "88M parameters",
    "maxvit_t": "needs 224x224 inputs (7x7 partitions at every stage): too slow on this CPU",
}
__doc__ += "".join(f"\n- torchvision ``{k}``: {v}" for k, v in TOO_LARGE.items())

SIZE = {"alexnet": 64, "inception_v3": 80}     # smallest inputs their pooling stages allow
OPTIONS = {"googlenet": {"aux_logits": False, "init_weights": True},
           "inception_v3": {"aux_logits": False, "init_weights": True}}


def randomize_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters, so that a wrong fold shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) * 0.4 - 0.2)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                if m.affine:
                    m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                    m.bias.copy_(torch.rand(m.bias.shape, generator=g) * 0.2 - 0.1)
    return model.eval()


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).norm() / want.norm().clamp_min(1e-30))


def check(model: nn.Module, x: torch.Tensor, target, **options) -> None:
    """The default call equals the loop reference, and the model comes back unchanged.

    Convolutional models run in float64: with random weights and randomised norms a deep net
    (ResNet-152, the DenseNets) amplifies float32 rounding of the fold until one ReLU or
    max-pool decision flips (relative errors up to 5e-3 on one backend), while a wrong or stale
    fold is off by 1e-2 or more at any precision."""
    tolerance = TOLERANCE
    if x.is_floating_point() and x.dim() == 4 and not options:
        model, x, tolerance = model.double(), x.double(), TOLERANCE_FLOAT64
    before = {k: v.clone() for k, v in model.state_dict().items()}
    got = sk.smooth_grad(model, x, target, n_samples=N_SAMPLES, seed=SEED, **options)
    want = sk.smooth_grad(model, x, target, n_samples=N_SAMPLES, seed=SEED, backend="loop",
                          prepare=False, **options)
    assert got.shape == want.shape and torch.isfinite(got).all()
    assert want.abs().sum() > 0
    assert relative_error(got, want) < tolerance, relative_error(got, want)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def image(size: int, channels: int = 3, batch: int = BATCH) -> torch.Tensor:
    return torch.rand(batch, channels, size, size, generator=torch.Generator().manual_seed(7))


# ------------------------------------------------------------------------------------------
# torchvision


def torchvision_names() -> list:
    names = torchvision.models.list_models(module=torchvision.models)
    return [pytest.param(n, marks=pytest.mark.skip(reason=TOO_LARGE[n])) if n in TOO_LARGE
            else n for n in names]


def torchvision_model(name: str) -> nn.Module:
    torch.manual_seed(0)
    options = dict(OPTIONS.get(name, {}))
    if name.startswith("vit_"):
        options["image_size"] = 32
    model = torchvision.models.get_model(name, weights=None, num_classes=10, **options)
    return randomize_norms(model)


@pytest.mark.parametrize("name", torchvision_names())
def test_torchvision(name):
    check(torchvision_model(name), image(SIZE.get(name, 32)), [1, 7])


# ------------------------------------------------------------------------------------------
# timm

TIMM = {
    "resnet50": {}, "convnext_atto": {}, "efficientnet_b0": {}, "mobilenetv3_small_050": {},
    "vit_tiny_patch16_224": {"img_size": 32}, "deit_tiny_patch16_224": {"img_size": 32},
    "regnetx_002": {}, "resnest14d": {}, "rexnet_100": {}, "densenet121": {},
    "swin_tiny_patch4_window7_224": {"img_size": 64, "window_size": 4},
    "levit_128s": {"img_size": 64},
}
TIMM_SIZE = {"swin_tiny_patch4_window7_224": 64, "levit_128s": 64}


@pytest.mark.parametrize("name", list(TIMM))
def test_timm(name):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = randomize_norms(timm.create_model(name, pretrained=False, num_classes=10,
                                              **TIMM[name]))
    check(model, image(TIMM_SIZE.get(name, 32)), [2, 5])


# ------------------------------------------------------------------------------------------
# transformers


def hf_text(kind: str) -> nn.Module:
    pytest.importorskip("transformers")
    return tiny_text_classifier(kind)


@pytest.mark.parametrize("kind", ["bert", "distilbert", "roberta"])
def test_transformers_text_at_the_input_embeddings(kind):
    model = hf_text(kind)
    ids = torch.randint(3, 50, (BATCH, 6), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0
    check(model, ids, [0, 2], noise_at=model.get_input_embeddings(),
          forward_kwargs={"attention_mask": mask})


@pytest.mark.parametrize("kind", ["vit", "resnet"])
def test_transformers_vision(kind):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    if kind == "vit":
        model = transformers.ViTForImageClassification(transformers.ViTConfig(
            image_size=16, patch_size=4, hidden_size=16, num_hidden_layers=1,
            num_attention_heads=2, intermediate_size=32, num_labels=3))
    else:
        model = transformers.ResNetForImageClassification(transformers.ResNetConfig(
            embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=3))
    check(randomize_norms(model), image(16), [0, 2])


# ------------------------------------------------------------------------------------------
# hand-written styles


class TutorialCNN(nn.Module):
    """The MNIST-tutorial style: conv + BatchNorm, then ``h.view(h.size(0), -1)``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3)
        self.bn2 = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 5 * 5, 10)

    def forward(self, x):
        h = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        h = F.relu(self.bn2(self.conv2(h)))
        return self.fc(h.view(h.size(0), -1))


class DictOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(6, 4)

    def forward(self, x):
        h = self.body(x)
        return {"logits": self.head(h), "embedding": h}


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.image = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                                   nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.meta = nn.Linear(5, 6)
        self.head = nn.Linear(6, 4)

    def forward(self, x, meta):
        return self.head(self.image(x) * torch.sigmoid(self.meta(meta)))


def test_a_cnn_that_flattens_with_view():
    torch.manual_seed(0)
    check(randomize_norms(TutorialCNN()), image(16, channels=1), [3, 4])


@pytest.mark.parametrize("output", [None, "embedding_head"])
def test_a_model_returning_a_dict(output):
    torch.manual_seed(0)
    model = randomize_norms(DictOut())
    if output is None:
        check(model, image(12), [1, 2])                       # "logits" read by default
    else:
        check(model, image(12), [1, 2], output=lambda out: model.head(out["embedding"]) * 2)


def test_a_model_with_two_inputs():
    torch.manual_seed(0)
    meta = torch.randn(BATCH, 5)
    check(randomize_norms(TwoInputs()), image(12), [0, 3], forward_args=(meta,))


# ------------------------------------------------------------------------------------------
# the Captum drop-in, on a subset

DROP_IN = ["resnet18", "mobilenet_v3_small", "shufflenet_v2_x0_5", "squeezenet1_1"]


@pytest.mark.parametrize("name", DROP_IN)
def test_captum_drop_in_noise_tunnel(name):
    import smoothkern.captum as skc

    model = torchvision_model(name)
    x = image(32)
    target = torch.tensor([1, 7])
    got = skc.NoiseTunnel(skc.Saliency(model)).attribute(
        x, nt_type="smoothgrad", nt_samples=N_SAMPLES, stdevs=0.1, target=target, seed=SEED)
    want = sk.smooth_grad(model, x, target, method="saliency", n_samples=N_SAMPLES, stdevs=0.1,
                          seed=SEED, backend="loop", prepare=False)
    assert relative_error(got, want) < TOLERANCE
