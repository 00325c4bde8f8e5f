"""smooth_grad through the kernel backends equals the naive loop; availability is reported."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from helpers import assert_close_results, tiny_resnet

import smoothkern as sk
from smoothkern.core.stats import AGGREGATES
from smoothkern.ops import backends as registry
from smoothkern.ops import extension

needs_ext = pytest.mark.skipif(not extension.has_ops(),
                               reason=f"C++ op: {extension.why_no_ops()}")
TRITON_REASON = registry.status("cpu").get("triton")
needs_triton = pytest.mark.skipif(TRITON_REASON != "available",
                                  reason=f"triton on cpu: {TRITON_REASON}")


@pytest.mark.parametrize("backend", [pytest.param("cpp", marks=needs_ext),
                                     pytest.param("triton", marks=needs_triton)])
@pytest.mark.parametrize("noise", ["gaussian", "uniform"])
def test_kernel_backend_equals_loop_on_bn_cnn(backend, noise):
    model = tiny_resnet(seed=1)                     # BatchNorm CNN in eval mode
    x = torch.rand(2, 3, 9, 7)
    kwargs = dict(n_samples=7, aggregate=AGGREGATES, noise=noise, seed=2**63 + 3,
                  noise_level=(0.1, 0.2))           # a sweep: S = 2
    want = sk.smooth_grad(model, x, backend="loop", **kwargs)
    got = sk.smooth_grad(model, x, backend=backend, samples_per_pass=3, **kwargs)
    assert_close_results(got, want)
    assert not model.training


@needs_ext
def test_auto_picks_cpp_on_cpu():
    assert registry.resolve("auto", "cpu").name == "cpp"


def test_triton_is_never_auto_on_cpu():
    assert registry.resolve("auto", "cpu").name != "triton"


def test_status_gives_one_line_reasons():
    status = sk.backend_status("cpu")
    for name in ("cpp", "cuda", "triton"):
        assert status[name] == "available" or ("\n" not in status[name] and status[name])
    assert status["cuda"] != "available"            # never on a CPU device


def test_import_does_not_import_triton():
    # Triton costs ~75 ms to import and can be broken: only a Triton backend in use imports it,
    # not import smoothkern nor backend_status.
    code = ("import sys, smoothkern as sk; assert 'triton' not in sys.modules; "
            "sk.backend_status('cpu'); sk.backend_status('cuda'); "
            "assert 'triton' not in sys.modules, 'backend_status imported triton'")
    for interpret in ("0", "1"):
        env = dict(os.environ, TRITON_INTERPRET=interpret)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True)
        assert out.returncode == 0, out.stderr[-2000:]


@needs_triton
def test_triton_is_imported_on_first_use():
    code = ("import sys, torch, smoothkern; from smoothkern.ops import backends as registry; "
            "b = registry.resolve('triton', 'cpu'); assert 'triton' not in sys.modules; "
            "b.perturb(torch.zeros(1, 3), torch.ones(1, 1), 0, 0, 1, 'uniform'); "
            "assert 'triton' in sys.modules")
    env = dict(os.environ, TRITON_INTERPRET="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]


@pytest.mark.cuda
def test_gpu_tests_run_compiled_triton():
    # conftest interprets Triton only without a GPU: here the cuda-marked tests must compile.
    assert os.environ.get("TRITON_INTERPRET", "0") != "1"


def test_skip_ext_reports_reason_and_falls_back_to_torch():
    code = ("import smoothkern as sk; from smoothkern.ops import backends as registry; "
            "print(sk.backend_status('cpu')['cpp']); print(registry.resolve('auto', 'cpu').name)")
    env = dict(os.environ, SMOOTHKERN_SKIP_EXT="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out == ["extension not built (SMOOTHKERN_SKIP_EXT=1)", "torch"]
    with pytest.raises(subprocess.CalledProcessError) as info:
        subprocess.run([sys.executable, "-c", "import torch, smoothkern as sk; "
                        "sk.smooth_grad(torch.nn.Linear(3, 2).eval(), torch.rand(1, 3), "
                        "backend='cpp')"], env=env, capture_output=True, text=True, check=True)
    assert "SMOOTHKERN_SKIP_EXT=1" in info.value.stderr
