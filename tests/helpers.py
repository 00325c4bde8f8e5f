"""Small models and tolerances shared by the tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class TinyResNet(nn.Module):
    """Conv-BN-ReLU stem, one residual block with BatchNorm, global pool, linear: any H×W."""

    def __init__(self, in_channels: int = 3, width: int = 6, classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(width)
        self.conv1 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.fc = nn.Linear(width, classes)

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.bn0(self.stem(x)))
        r = F.relu(self.bn1(self.conv1(h)))
        h = F.relu(h + self.bn2(self.conv2(r)))
        return self.fc(F.adaptive_avg_pool2d(h, 1).flatten(1))


def tiny_resnet(seed: int = 0, **kwargs) -> TinyResNet:
    """A TinyResNet in eval mode with non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    model = TinyResNet(**kwargs)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.1, 0.1)
    return model.eval()


def tiny_mlp(features: int = 7, classes: int = 4, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(features, 16), nn.Tanh(),
                         nn.Linear(16, classes)).eval()


class Quadratic(nn.Module):
    """f(x) = ½ xᵀAx as a one-class "logit": its gradient is A x."""

    def __init__(self, a: Tensor) -> None:
        super().__init__()
        self.register_buffer("a", a)

    def forward(self, x: Tensor) -> Tensor:
        flat = x.reshape(x.shape[0], -1)
        return 0.5 * ((flat @ self.a) * flat).sum(dim=1, keepdim=True)


def assert_close_results(got, want, rtol: float = 1e-4, atol: float = 1e-6) -> None:
    """Compares a Tensor or a dict of Tensors."""
    if isinstance(want, dict):
        assert got.keys() == want.keys()
        for name in want:
            torch.testing.assert_close(got[name], want[name], rtol=rtol, atol=atol,
                                       msg=lambda m, n=name: f"{n}: {m}")
    else:
        torch.testing.assert_close(got, want, rtol=rtol, atol=atol)


def gpu_backend(name: str):
    """The named kernel set on CUDA, or a skip that says why it cannot run here (the CUDA op
    is built only where nvcc was found at install time; triton may be missing)."""
    import pytest

    from smoothkern.ops import backends as registry

    reason = registry.status("cuda")[name]
    if reason != "available":
        pytest.skip(f"backend {name!r} on CUDA: {reason}")
    return registry.resolve(name, "cuda")


def spy_on_value_reads(monkeypatch) -> list[str]:
    """Records every read of a tensor's value on the host (``bool()``, ``.item()``, ``int()``,
    ``operator.index``, ``.tolist()``): each would synchronise with a GPU. Returns the list that
    fills as they happen; ``monkeypatch.undo()`` ends the spying."""
    reads: list[str] = []
    for name in ("__bool__", "item", "__int__", "__index__", "tolist"):
        original = getattr(torch.Tensor, name)

        def spy(self, *args, _original=original, _name=name, **kwargs):
            reads.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, spy)
    return reads


def tiny_text_classifier(kind: str, vocab: int = 50, classes: int = 3) -> nn.Module:
    """A tiny transformers sequence classifier ("bert", "roberta" or "distilbert"), random
    weights, eval mode; needs transformers."""
    import transformers

    torch.manual_seed(0)
    common = dict(vocab_size=vocab, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                  intermediate_size=32, max_position_embeddings=40, num_labels=classes)
    if kind == "bert":
        model = transformers.BertForSequenceClassification(transformers.BertConfig(**common))
    elif kind == "roberta":
        model = transformers.RobertaForSequenceClassification(
            transformers.RobertaConfig(**common, pad_token_id=1))
    else:
        model = transformers.DistilBertForSequenceClassification(transformers.DistilBertConfig(
            vocab_size=vocab, dim=16, n_layers=1, n_heads=2, hidden_dim=32,
            max_position_embeddings=40, num_labels=classes))
    return model.eval()
