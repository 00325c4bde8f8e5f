"""The Triton kernels compile for a GPU (sm_90 PTX) on this machine, without a GPU.

The rest of the suite runs them under the interpreter, which accepts code the GPU compiler
rejects (plain globals in jit code, for one); this catches that in CI. Runs in a subprocess
because the interpreter switch (set in conftest) must be off when triton is imported.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                reason="triton not importable")

COMPILE = r'''
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from smoothkern.kernels import accumulate, perturb

target = GPUTarget("cuda", 90, 32)
options = {"num_warps": 4, "enable_fp_fusion": False}
for dtype, gaussian in (("fp32", False), ("bf16", True)):
    sig = {"x_ptr": f"*{dtype}", "sigma_ptr": "*fp32", "out_ptr": f"*{dtype}", "n": "i32",
           "batch": "i32", "levels": "i32", "seed": "u64", "start": "i32",
           "BLOCK": "constexpr", "GAUSSIAN": "constexpr"}
    src = ASTSource(fn=perturb._perturb_kernel, signature=sig,
                    constexprs={"BLOCK": 1024, "GAUSSIAN": gaussian})
    ptx = triton.compile(src, target=target, options=options).asm["ptx"]
    assert "fma.rn.f32" not in ptx or gaussian, "x + sigma * z must not be fused"
sig = {"chunk_ptr": "*fp16", "mean_ptr": "*fp32", "m2_ptr": "*fp32", "abs_ptr": "*fp32",
       "log_ptr": "*fp32", "k": "i32", "n": "i32", "w_mean": "fp32", "w_m2": "fp32",
       "eps": "fp32", "BLOCK": "constexpr"}
src = ASTSource(fn=accumulate._accumulate_kernel, signature=sig, constexprs={"BLOCK": 512})
triton.compile(src, target=target, options=options)
sig = {"example_ptr": "*i64", "sample_ptr": "*i64", "element_ptr": "*i64", "out_ptr": "*i64",
       "total": "i32", "seed": "u64", "BLOCK": "constexpr"}
src = ASTSource(fn=perturb._philox_bits_kernel, signature=sig, constexprs={"BLOCK": 1024})
triton.compile(src, target=target, options=options)
print("compiled")
'''


def test_triton_kernels_compile_for_sm90():
    env = dict(os.environ, TRITON_INTERPRET="0", TRITON_DEFAULT_FP_FUSION="0")
    out = subprocess.run([sys.executable, "-c", COMPILE], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("compiled")
