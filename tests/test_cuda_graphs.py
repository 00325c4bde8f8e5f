"""CUDA graphs of the model passes: replayed passes equal eager ones; models that cannot be
captured fall back to eager passes with one warning; the CPU refuses clearly."""

from __future__ import annotations

import warnings

import pytest
import torch
from helpers import tiny_resnet
from torch import nn

import smoothkern as sk
from smoothkern.cuda_graphs import GraphedPasses
from smoothkern.methods import Gradient, InputXGradient


def test_cpu_rows_are_refused():
    graphs = GraphedPasses(tiny_resnet())
    with pytest.raises(ValueError, match="CUDA rows"):
        graphs.attribute(Gradient(), torch.rand(2, 3, 8, 8), torch.zeros(2, dtype=torch.long))


def test_smooth_grad_on_the_cpu_refuses_cuda_graphs():
    with pytest.raises(ValueError, match="cuda_graphs"):
        sk.smooth_grad(tiny_resnet(), torch.rand(1, 3, 8, 8), n_samples=2, cuda_graphs=True)


@pytest.mark.cuda
@pytest.mark.parametrize("method", [Gradient(), InputXGradient()])
@pytest.mark.parametrize("compute_dtype", [None, torch.bfloat16])
def test_replayed_passes_equal_eager_passes(method, compute_dtype):
    model = tiny_resnet().cuda()
    graphs = GraphedPasses(model, compute_dtype)
    gen = torch.Generator(device="cuda").manual_seed(0)
    for rows_count in (6, 6, 4, 6):      # a repeated shape, a new one, the first again
        rows = torch.rand(rows_count, 3, 9, 11, device="cuda", generator=gen)
        target = torch.randint(0, 5, (rows_count,), device="cuda", generator=gen)
        got = graphs.attribute(method, rows, target).clone()
        with sk.precision.autocast(rows.device, compute_dtype):
            want = method.attribute(model, rows, target)
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert graphs.replays == 4 and graphs.disabled is None


@pytest.mark.cuda
def test_smooth_grad_with_graphs_equals_without():
    model = tiny_resnet().cuda()
    x = torch.rand(3, 3, 16, 16, device="cuda")
    kw = dict(n_samples=20, samples_per_pass=6, aggregate=["mean", "var"], seed=3)
    eager = sk.smooth_grad(model, x, **kw)
    graphed = sk.smooth_grad(model, x, cuda_graphs=True, **kw)
    for name in eager:
        torch.testing.assert_close(graphed[name], eager[name], rtol=1e-6, atol=1e-7)


class HostSync(nn.Module):
    """A forward that reads a value on the host: cannot be captured."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(12, 3)

    def forward(self, x):
        scale = float(x.abs().max().item()) + 1.0
        return self.fc(x.flatten(1)) / scale


@pytest.mark.cuda
def test_a_model_that_cannot_be_captured_runs_eagerly_with_one_warning():
    model = HostSync().cuda()
    graphs = GraphedPasses(model)
    rows = torch.rand(4, 12, device="cuda")
    target = torch.zeros(4, dtype=torch.long, device="cuda")
    with pytest.warns(RuntimeWarning, match="could not be captured"):
        first = graphs.attribute(Gradient(), rows, target)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = graphs.attribute(Gradient(), rows, target)
    torch.testing.assert_close(first, second)
    assert graphs.disabled is not None
