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
import struct
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
from smoothkern.noise.sampling import Sampling
from smoothkern.ops.triton import accumulate, perturb, sampling as strata

target = GPUTarget("cuda", 90, 32)
options = {"num_warps": 4, "enable_fp_fusion": False}
out = {}
for dtype, gaussian, per_element, has_index, sampling in (
        ("fp32", False, False, False, Sampling.IID), ("bf16", True, True, True, Sampling.IID),
        ("fp16", True, False, False, Sampling.IID),
        ("fp32", True, False, True, Sampling.ANTITHETIC),
        ("fp32", True, True, True, Sampling.STRATIFIED),
        ("bf16", False, False, False, Sampling.STRATIFIED)):
    sig = {"x_ptr": f"*{dtype}", "sigma_ptr": "*fp32",
           "index_ptr": "*i64" if has_index else "*fp32", "out_ptr": f"*{dtype}", "n": "i32",
           "batch": "i32", "levels": "i32", "rows": "i32", "seed": "u64", "start": "i32",
           "BLOCK": "constexpr", "NOISE": "constexpr", "PER_ELEMENT": "constexpr",
           "HAS_INDEX": "constexpr", "SAMPLING": "constexpr"}
    noise = (NoiseKind.GAUSSIAN if gaussian else NoiseKind.UNIFORM).code
    src = ASTSource(fn=perturb._perturb_kernel, signature=sig,
                    constexprs={"BLOCK": 1024, "NOISE": noise, "PER_ELEMENT": per_element,
                                "HAS_INDEX": has_index, "SAMPLING": sampling.code})
    name = f"perturb_{dtype}_{gaussian}"
    if sampling is not Sampling.IID:
        name += f"_{sampling.value}"
    out[name] = triton.compile(src, target=target, options=options).asm["ptx"]
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
sig = {"example_ptr": "*i64", "sample_ptr": "*i64", "element_ptr": "*i64", "out_ptr": "*i64",
       "total": "i32", "seed": "u64", "steps": "i32", "BLOCK": "constexpr"}
src = ASTSource(fn=strata._stratified_words_kernel, signature=sig, constexprs={"BLOCK": 256})
out["stratified_words"] = triton.compile(src, target=target, options=options).asm["ptx"]
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
    assert len(ptx) == 11 and all(".entry" in text for text in ptx.values())


def test_perturb_does_not_fuse_or_approximate(ptx):
    # x + sigma * z must not become a fused multiply-add (uniform has no transcendental, so any
    # fma would be that one); the Gaussian's square root is correctly rounded, as in C++/CUDA.
    assert "fma.rn" not in ptx["perturb_fp32_False"]
    for name in ("perturb_bf16_True", "perturb_fp16_True"):
        assert "sqrt.approx" not in ptx[name] and "sqrt.rn.f32" in ptx[name]


def test_perturb_draws_the_designs_without_fusing_or_approximating(ptx):
    # Antithetic: the i.i.d. Box-Muller path (correctly rounded square root), one negation.
    antithetic = ptx["perturb_fp32_True_antithetic"]
    assert "sqrt.approx" not in antithetic and "sqrt.rn.f32" in antithetic
    assert "fma.rn.f32" not in antithetic
    for name in ("perturb_fp32_True_stratified", "perturb_bf16_False_stratified"):
        text = ptx[name]
        assert "fma.rn.f32" not in text                   # x + sigma * z, rounded twice
        assert "mul.hi.u32" in text                       # swap-or-not's 64-bit product
        # No float32 value enters the float64 math (cvt.f64.f32 would widen one); z is
        # rounded to float32 once, at the end.
        assert "cvt.f64.f32" not in text and "cvt.rn.f32.f64" in text
    # The Gaussian: the float64 square root correctly rounded, the float64 log the accurate
    # libdevice one (no float32 lg2.approx), Acklam's coefficients exact float64 immediates
    # (a coefficient rounded to float32 would show other bits), multiplied and added unfused
    # in Horner's order as csrc/sampling.h.
    gauss = ptx["perturb_fp32_True_stratified"]
    assert "sqrt.rn.f64" in gauss and "sqrt.approx" not in gauss and "lg2.approx" not in gauss
    assert "div.rn.f64" in gauss
    assert _f64_hex(0.02425) in gauss                     # the branch point
    from smoothkern.ops.triton import sampling as strata

    polynomials = [p.value for p in (strata.TAIL_P, strata.TAIL_R, strata.MID_A, strata.MID_B)]
    for position, value in ((k, c) for poly in polynomials for k, c in enumerate(poly)):
        if value == 1.0:                                  # exact in float32 too; libdevice's
            continue
        lines = [line.split() for line in gauss.splitlines() if _f64_hex(value) in line]
        want = "mul.rn.f64" if position == 0 else "add.rn.f64"
        assert lines and all(line[0] == want for line in lines), (value, lines)
    uniform = ptx["perturb_bf16_False_stratified"]
    assert _f64_hex(1.7320508075688772) in uniform        # sqrt(3) in float64
    assert "sqrt" not in uniform and "lg2" not in uniform


def _f64_hex(value: float) -> str:
    """A float64 immediate as PTX writes it."""
    return "0d" + struct.pack(">d", value).hex().upper()


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
