"""pytest-benchmark suite of the engine (not part of the test suite).

    pytest benchmarks/test_bench_engine.py --benchmark-columns=median,iqr

Groups compare the loop, each backend and the limit on the same row.
"""

import pytest
import torch

import smoothkern as sk
from smoothkern.core.stats import AGGREGATES

from .common import make_model, plain_passes
from .engine_table import engine_variants

ROWS = [("mnist_cnn", 1), ("mnist_cnn", 8), ("cifar_resnet18", 1), ("cifar_resnet18", 8)]
M = 50


@pytest.fixture(scope="module", params=ROWS, ids=lambda r: f"{r[0]}-B{r[1]}")
def row(request):
    name, batch = request.param
    model, shape = make_model(name)
    x = torch.rand(batch, *shape)
    return name, batch, model, x, model(x).argmax(1).detach()


@pytest.mark.parametrize("backend", ["loop"] + engine_variants("cpu"))
def test_engine(benchmark, row, backend):
    name, batch, model, x, target = row
    benchmark.group = f"{name} B={batch} m={M}"
    benchmark.pedantic(sk.smooth_grad, args=(model, x, target),
                       kwargs=dict(n_samples=M, aggregate=AGGREGATES, backend=backend),
                       rounds=3, warmup_rounds=1)


def test_limit(benchmark, row):
    name, batch, model, x, target = row
    benchmark.group = f"{name} B={batch} m={M}"
    benchmark.pedantic(plain_passes, args=(model, x, target, M, max(1, 48 // batch)),
                       rounds=3, warmup_rounds=1)
