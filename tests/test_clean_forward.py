"""The clean forward a call runs before its passes: skipped when the caller names the target and
the model was seen before, and nothing the first call checked or built goes stale."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import smoothkern as sk
from tests.helpers import tiny_resnet

X = torch.rand(2, 3, 9, 11, generator=torch.Generator().manual_seed(3))


class CountingForwards(nn.Module):
    """Wraps a model; counts forward calls by the number of rows they ran."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.rows: list[int] = []

    def forward(self, x: Tensor) -> Tensor:
        self.rows.append(x.shape[0])
        return self.inner(x)


def run(model, target, **kwargs):
    return sk.smooth_grad(model, X, target, n_samples=6, samples_per_pass=3, seed=4, **kwargs)


@pytest.mark.parametrize("prepare", [True, False])
def test_a_named_target_skips_the_clean_forward_on_later_calls(prepare):
    model = CountingForwards(tiny_resnet(classes=5))
    first = run(model, [1, 3], prepare=prepare)
    model.rows.clear()
    second = run(model, [1, 3], prepare=prepare)
    # only the passes: 6 samples · 2 examples in passes of 3 samples
    assert model.rows == [6, 6]         # (a prepared copy shares the wrapper's list)
    torch.testing.assert_close(second, first, rtol=0, atol=0)
    model.rows.clear()
    run(model, None, prepare=prepare)                      # the predicted class needs the logits
    assert model.rows[0] == X.shape[0]


def test_the_skipped_forward_still_checks_the_target_range():
    model = tiny_resnet(classes=5)
    run(model, 0)
    with pytest.raises(ValueError, match="target out of range: the model has 5 classes"):
        run(model, 5)


def test_changed_weights_rebuild_the_prepared_copy_without_a_clean_forward():
    model = tiny_resnet(classes=5)
    run(model, [0, 4])
    with torch.no_grad():
        model.bn1.running_var.mul_(3.0)     # folding must see the new statistics
        model.conv2.weight.mul_(-1.0)
    got = run(model, [0, 4])
    want = run(model, [0, 4], prepare=False)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


class Switchable(nn.Module):
    """Returns logits, or a feature map once ``mode[0]`` says so (a plain attribute rebound
    is seen by the cache; a change inside a shared list is not)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.mode = ["logits"]
        self.head = "all"

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv(x)
        if self.mode[0] == "features":
            return h
        return h.mean(dim=(2, 3)) if self.head == "all" else h.mean(dim=(2, 3))[:, :2]


def test_an_output_that_stops_being_logits_is_refused_by_the_passes():
    model = Switchable().eval()
    run(model, 1)
    model.mode[0] = "features"
    with pytest.raises(ValueError, match=r"must return logits shaped \[B, classes\]"):
        run(model, 1)


def test_a_rebound_attribute_that_changes_the_classes_runs_the_clean_forward():
    model = Switchable().eval()
    run(model, 3)
    model.head = "two"                     # 4 classes -> 2: target 3 is out of range now
    with pytest.raises(ValueError, match="the model has 2 classes"):
        run(model, 3)
    run(model, 1)
    model.head = "all"
    run(model, 3)                          # and valid again
