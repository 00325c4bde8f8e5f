"""Launch grids at CUDA's limits, without a GPU: the Triton launchers' pure-Python arithmetic
(smoothkern/ops/triton/launch.py) and the CUDA launchers' host C++ (csrc/cuda/grid.h, compiled
here with the host compiler)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from smoothkern.ops.triton import launch

ROOT = Path(__file__).resolve().parents[1]


def test_perturb_grid_keeps_y_within_65535():
    assert launch.perturb_grid(1, 1, 1024) == (1, 1)
    assert launch.perturb_grid(70_000, 3072, 1024) == (3, 65535)    # rows strided along y
    assert launch.perturb_grid(65535, 1025, 1024) == (2, 65535)
    # The largest example the ops accept (2**32 elements): blocks along x, far below its limit.
    assert launch.perturb_grid(1, 2**32, 1024) == (2**22, 1)
    assert launch.perturb_grid(10**9, 2**32 - 2, 2) == (2**31 - 1, 65535)
    with pytest.raises(ValueError, match="limit"):
        launch.perturb_grid(1, 2**32, 1)
    with pytest.raises(ValueError):
        launch.perturb_grid(0, 5, 1024)


def test_accumulate_grid_within_limits():
    assert launch.accumulate_grid(3072, 512) == (6,)
    assert launch.accumulate_grid((2**31 - 1) * 512, 512) == (2**31 - 1,)
    with pytest.raises(ValueError, match="limit"):
        launch.accumulate_grid((2**31 - 1) * 512 + 1, 512)


def test_device_context_only_for_gpu_tensors():
    ctx = launch.on_device_of(torch.zeros(1))
    with ctx:
        pass
    assert not isinstance(ctx, torch.cuda.device)


GRID_TEST = r"""
#include <cstdio>
#include "cuda/grid.h"
using namespace smoothkern;
int main() {
  // {k, threads_x, sms} -> check slices <= 65535, rows covered, >= 8 rows per slice when split.
  const long long cases[][3] = {
      {50, 768, 132}, {300, 768, 132}, {1, 768, 132}, {0, 768, 132},
      {1LL << 30, 1, 132},              // tiny N, huge k: used to ask for 270336 slices
      {1LL << 40, 1, 1000},
      {50, 1LL << 20, 132},             // N fills the GPU: no split
      {7, 1, 132}, {8, 1, 132}, {1000, 3, 0}};
  for (const auto& c : cases) {
    const RowSlices r = accumulate_row_slices(c[0], c[1], c[2]);
    const long long k = c[0] < 1 ? 1 : c[0];
    if (r.slices < 1 || r.slices > kMaxGridY) return 1;
    if (r.rows_per_slice * r.slices < k) return 2;                  // every row covered
    if ((r.slices - 1) * r.rows_per_slice >= k) return 3;           // no empty slice
    if (r.slices > 1 && r.rows_per_slice < kMinRowsPerSlice) return 4;
    if (c[1] >= (c[2] < 1 ? 1 : c[2]) * kTargetThreadsPerSm && r.slices != 1) return 5;
    std::printf("%lld %lld %lld -> %lld x %lld\n", c[0], c[1], c[2], (long long)r.slices,
                (long long)r.rows_per_slice);
  }
  if (perturb_grid_y(1LL << 40) != kMaxGridY || perturb_grid_y(3) != 3) return 6;
  if (accumulate_row_slices(1LL << 30, 1, 132).slices < 60000) return 7;  // near the cap
  if (accumulate_row_slices(300, 768, 132).rows_per_slice != 9) return 8;  // >= 8 rows each
  if (accumulate_row_slices(50, 300000, 132).slices != 1) return 9;   // grid already full
  return 0;
}
"""


@pytest.mark.skipif(shutil.which("c++") is None, reason="no host C++ compiler")
def test_cuda_grid_arithmetic_at_the_limits(tmp_path):
    src = tmp_path / "grid_test.cpp"
    src.write_text(GRID_TEST)
    exe = tmp_path / "grid_test"
    subprocess.run(["c++", "-std=c++17", "-O1", f"-I{ROOT / 'csrc'}", str(src), "-o", str(exe)],
                   check=True, capture_output=True, text=True, timeout=120)
    out = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, (out.returncode, out.stdout)


FMA_TEST = r"""
#include "cuda/moments.cuh"
using namespace smoothkern;
template <typename T>
__global__ void step(T* x, const T* y, int64_t n_a, int64_t n_b) {
  Moments<T> a{x[0], x[1], x[2], x[3]};
  welford_add(a, y[0], y[1]);
  const Moments<T> b{y[2], y[3], y[4], y[5]};
  merge(a, n_a, b, n_b);
  x[0] = a.mean; x[1] = a.m2; x[2] = a.abs_sum; x[3] = a.log_sum;
}
template __global__ void step<float>(float*, const float*, int64_t, int64_t);
template __global__ void step<double>(double*, const double*, int64_t, int64_t);
"""


def _setup_ext():
    import importlib.util

    spec = importlib.util.spec_from_file_location("setup_ext", ROOT / "setup_ext.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cuda_welford_and_merge_have_no_fused_multiply_add(tmp_path):
    # nvcc contracts a * b + c into fma by default; with setup_ext's flags the CUDA accumulate's
    # arithmetic must round like the C++ op (-ffp-contract=off) and Triton (no fp fusion).
    setup_ext = _setup_ext()
    home = setup_ext.find_cuda_home()
    if home is None:
        pytest.skip("no CUDA toolkit (nvcc)")
    src = tmp_path / "moments_test.cu"
    src.write_text(FMA_TEST)

    def ptx(flags: list[str]) -> str:
        out = tmp_path / "out.ptx"
        subprocess.run([str(Path(home) / "bin" / "nvcc"), "-ptx", "-arch=compute_90",
                        "-std=c++17", f"-I{ROOT / 'csrc'}", *flags, str(src), "-o", str(out)],
                       check=True, capture_output=True, text=True, timeout=300)
        return out.read_text()

    assert "fma.rn" not in ptx(setup_ext.NVCC_FLAGS)
    # The check can fail: without --fmad=false nvcc does fuse this code.
    assert "fma.rn" in ptx([f for f in setup_ext.NVCC_FLAGS if f != "--fmad=false"])
