"""The Triton kernels compile for a GPU (sm_90 PTX) on this machine, without a GPU.

The rest of the suite runs them under the interpreter, which accepts code the GPU compiler
rejects (plain globals in jit code, for one) and passes Python floats through at float64 where
a GPU sees float32; these tests read the compiled PTX instead. They run in a subprocess because
the interpreter switch (set in conftest) must be off when triton is imported.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                reason="triton not importable")

COMPILE = r'''
import json, re
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from smoothkern.noise import NoiseKind
from smoothkern.ops.triton import accumulate, perturb

target = GPUTarget("cuda", 90, 32)
options = {"num_warps": 4, "enable_fp_fusion": False}
out = {}
for dtype, gaussian, per_element, has_index in (("fp32", False, False, False),
                                                ("bf16", True, True, True),
                                                ("fp16", True, False, False)):
    sig = {"x_ptr": f"*{dtype}", "sigma_ptr": "*fp32",
           "index_ptr": "*i64" if has_index else "*fp32", "out_ptr": f"*{dtype}", "n": "i32",
           "batch": "i32", "levels": "i32", "rows": "i32", "seed": "u64", "start": "i32",
           "BLOCK": "constexpr", "NOISE": "constexpr", "PER_ELEMENT": "constexpr",
           "HAS_INDEX": "constexpr"}
    noise = (NoiseKind.GAUSSIAN if gaussian else NoiseKind.UNIFORM).code
    src = ASTSource(fn=perturb._perturb_kernel, signature=sig,
                    constexprs={"BLOCK": 1024, "NOISE": noise, "PER_ELEMENT": per_element,
                                "HAS_INDEX": has_index})
    out[f"perturb_{dtype}_{gaussian}"] = triton.compile(src, target=target,
                                                        options=options).asm["ptx"]
for acc, chunk in (("fp32", "fp16"), ("fp64", "fp64"), ("fp64", "fp32")):
    sig = {"chunk_ptr": f"*{chunk}", "mean_ptr": f"*{acc}", "m2_ptr": f"*{acc}",
           "abs_ptr": f"*{acc}", "log_ptr": f"*{acc}", "k": "i32", "n": "i32", "seen": "i64",
           "eps_bits": "i64" if acc == "fp64" else "i32", "BLOCK": "constexpr",
           "ACC64": "constexpr"}
    src = ASTSource(fn=accumulate._accumulate_kernel, signature=sig,
                    constexprs={"BLOCK": 512, "ACC64": acc == "fp64"})
    out[f"accumulate_{acc}_{chunk}"] = triton.compile(src, target=target,
                                                      options=options).asm["ptx"]
sig = {"example_ptr": "*i64", "sample_ptr": "*i64", "element_ptr": "*i64", "out_ptr": "*i64",
       "total": "i32", "seed": "u64", "BLOCK": "constexpr"}
src = ASTSource(fn=perturb._philox_bits_kernel, signature=sig, constexprs={"BLOCK": 1024})
out["philox_bits"] = triton.compile(src, target=target, options=options).asm["ptx"]
print(json.dumps(out))
'''


@pytest.fixture(scope="module")
def ptx() -> dict[str, str]:
    env = dict(os.environ, TRITON_INTERPRET="0", TRITON_DEFAULT_FP_FUSION="0")
    out = subprocess.run([sys.executable, "-c", COMPILE], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_triton_kernels_compile_for_sm90(ptx):
    assert len(ptx) == 7 and all(".entry" in text for text in ptx.values())


def test_perturb_does_not_fuse_or_approximate(ptx):
    # x + sigma * z must not become a fused multiply-add (uniform has no transcendental, so any
    # fma would be that one); the Gaussian's square root is correctly rounded, as in C++/CUDA.
    assert "fma.rn" not in ptx["perturb_fp32_False"]
    for name in ("perturb_bf16_True", "perturb_fp16_True"):
        assert "sqrt.approx" not in ptx[name] and "sqrt.rn.f32" in ptx[name]


def test_float64_state_never_rounds_to_float32(ptx):
    # Chan's weights and eps used to be Python floats, which Triton types fp32: the old kernel
    # converted them with cvt.f64.f32. A float64 state with a float64 chunk has no f32 at all.
    assert ".f32" not in ptx["accumulate_fp64_fp64"]
    assert "div.rn.f64" in ptx["accumulate_fp64_fp64"]
    # A float32 chunk is only widened.
    f32 = {op for op in ptx["accumulate_fp64_fp32"].split() if ".f32" in op}
    assert f32 <= {"cvt.f64.f32"}, f32


def test_float32_accumulate_divides_correctly_rounded(ptx):
    # 1 / (r + 1) as the C++/CUDA kernels: IEEE division, not div.full/div.approx.
    text = ptx["accumulate_fp32_fp16"]
    assert "div.rn.f32" in text
    assert "div.full.f32" not in text and "div.approx.f32" not in text


def test_changing_arguments_are_not_specialised():
    # Specialising start/seed/k on their value (== 1, % 16) recompiles mid-run as chunks move.
    code = ("import json; from smoothkern.ops.triton import accumulate, perturb\n"
            "print(json.dumps({f.fn.__name__: [p.name for p in f.params if p.do_not_specialize]"
            " for f in (perturb._perturb_kernel, accumulate._accumulate_kernel, "
            "perturb._philox_bits_kernel)}))")
    env = dict(os.environ, TRITON_INTERPRET="0")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    fixed = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"n", "batch", "levels", "rows", "seed", "start"} <= set(fixed["_perturb_kernel"])
    assert {"k", "n", "seen", "eps_bits"} <= set(fixed["_accumulate_kernel"])
    assert {"total", "seed"} <= set(fixed["_philox_bits_kernel"])
