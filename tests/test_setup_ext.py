"""The build helper finds the real CUDA toolkit behind a wrapper nvcc, and the wheel headers."""

from __future__ import annotations

import importlib.util
import os
import stat
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def setup_ext():
    spec = importlib.util.spec_from_file_location("setup_ext", ROOT / "setup_ext.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_toolkit(folder: Path) -> Path:
    """A fake toolkit whose nvcc answers --dryrun with its TOP folder, as the real one does."""
    (folder / "bin").mkdir(parents=True)
    (folder / "include").mkdir()
    (folder / "include" / "cuda_runtime.h").write_text("")
    nvcc = folder / "bin" / "nvcc"
    nvcc.write_text(f'#!/bin/sh\necho "#$ TOP={folder}/bin/.." >&2\n')
    nvcc.chmod(nvcc.stat().st_mode | stat.S_IEXEC)
    return nvcc


def test_wrapper_nvcc_resolves_to_the_toolkit(setup_ext, tmp_path, monkeypatch):
    real = make_toolkit(tmp_path / "toolkit-9.9")
    wrappers = tmp_path / "wrappers" / "bin"
    wrappers.mkdir(parents=True)
    wrapper = wrappers / "nvcc"
    wrapper.write_text(f'#!/bin/sh\nexec {real} "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.setenv("PATH", f"{wrappers}{os.pathsep}{os.environ['PATH']}")
    assert setup_ext.find_cuda_home() == str((tmp_path / "toolkit-9.9").resolve())


def test_cuda_home_wins_when_it_is_a_toolkit(setup_ext, tmp_path, monkeypatch):
    make_toolkit(tmp_path / "tk")
    monkeypatch.setenv("CUDA_HOME", str(tmp_path / "tk"))
    assert setup_ext.find_cuda_home() == str((tmp_path / "tk").resolve())
    monkeypatch.setenv("CUDA_HOME", str(tmp_path / "not-a-toolkit"))
    assert setup_ext.find_cuda_home() != str(tmp_path / "not-a-toolkit")


def test_wheel_includes_found_on_sys_path(setup_ext, tmp_path, monkeypatch):
    good = tmp_path / "nvidia" / "cu13" / "include"
    good.mkdir(parents=True)
    (good / "cusparse.h").write_text("")
    (tmp_path / "nvidia" / "cudnn" / "include").mkdir(parents=True)  # no cusparse.h
    monkeypatch.syspath_prepend(str(tmp_path))
    found = setup_ext.nvidia_wheel_includes()
    assert str(good) in found
    assert all((Path(folder) / "cusparse.h").is_file() for folder in found)


def test_skip_switch(setup_ext, monkeypatch):
    monkeypatch.setenv("SMOOTHKERN_SKIP_EXT", "1")
    assert setup_ext.extensions() == ([], {})


def test_cuda_build_has_ptx_for_newer_gpus(setup_ext):
    # Without a GPU at build time: sm_80 and sm_90 machine code, plus PTX for what comes after.
    default = setup_ext.cuda_arch_list(None, gpu_visible=False)
    assert default == setup_ext.DEFAULT_ARCHS
    archs = default.split(";")
    assert archs[-1].endswith("+PTX")
    assert max(float(a.removesuffix("+PTX")) for a in archs) == float(
        archs[-1].removesuffix("+PTX"))
    # torch adds +PTX itself for the visible GPUs; a list the user gives wins.
    assert setup_ext.cuda_arch_list(None, gpu_visible=True) is None
    assert setup_ext.cuda_arch_list("8.9", gpu_visible=False) == "8.9"


def test_no_fused_multiply_add_on_any_backend(setup_ext):
    # nvcc contracts a*b + c into an fma by default; the CUDA Welford update must round like
    # the C++ op (-ffp-contract=off) and Triton (enable_fp_fusion=False).
    assert "--fmad=false" in setup_ext.NVCC_FLAGS
    assert "-ffp-contract=off" in setup_ext.CXX_FLAGS
    assert not any("fast-math" in flag or "fast_math" in flag
                   for flag in setup_ext.NVCC_FLAGS + setup_ext.CXX_FLAGS)
