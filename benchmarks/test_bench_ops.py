"""pytest-benchmark suite of the kernel ops on the CPU (not part of the test suite).

    pytest benchmarks/test_bench_ops.py --benchmark-columns=median,iqr --benchmark-group-by=group

Each group holds the pure-torch reference and the C++ op on the same inputs (m = 50).
"""

import pytest
import torch

from smoothkern.core.stats import StreamingStats
from smoothkern.ops import accumulate, extension, perturb
from smoothkern.ops.accumulate import accumulate_reference
from smoothkern.ops.perturb import perturb_reference

pytestmark = pytest.mark.skipif(not extension.has_ops(),
                                reason=f"C++ op: {extension.why_no_ops()}")
SHAPES = [(1, 32), (8, 32), (1, 224)]
M = 50


@pytest.mark.parametrize("impl", ["torch", "cpp"])
@pytest.mark.parametrize("batch,hw", SHAPES, ids=lambda v: str(v))
def test_perturb(benchmark, impl, batch, hw):
    benchmark.group = f"perturb B={batch} 3x{hw}x{hw}"
    x = torch.rand(batch, 3, hw, hw)
    sigma = torch.full((1, batch), 0.15)
    fn = perturb_reference if impl == "torch" else perturb.perturb
    out = benchmark(fn, x, sigma, 1, 0, M, "gaussian")
    assert out.shape == (M * batch, 3, hw, hw)


@pytest.mark.parametrize("impl", ["torch", "cpp"])
@pytest.mark.parametrize("batch,hw", SHAPES, ids=lambda v: str(v))
def test_accumulate(benchmark, impl, batch, hw):
    benchmark.group = f"accumulate B={batch} 3x{hw}x{hw}"
    n = batch * 3 * hw * hw
    chunk = torch.randn(M, n)
    state = StreamingStats.empty(n)
    fn = accumulate_reference if impl == "torch" else accumulate.accumulate
    benchmark(fn, state, chunk)
    assert state.count % M == 0 and state.count > 0
