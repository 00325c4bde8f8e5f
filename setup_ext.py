"""The optional C++/CUDA extension of smoothkern, for setup.py.

* ``smoothkern._C``: schemas and CPU kernels, built whenever a C++ compiler is found.
* ``smoothkern._C_cuda``: CUDA kernels, built when torch is a CUDA build and a CUDA toolkit
  (nvcc) is found; no GPU is needed to build it.
* ``SMOOTHKERN_SKIP_EXT=1`` builds neither (pure Python install); ``SMOOTHKERN_SKIP_CUDA=1``
  builds the CPU op only (a quicker rebuild while working on it).

Environment: ``CUDA_HOME`` (the toolkit folder; found from nvcc otherwise, also when the nvcc on
PATH is a wrapper script elsewhere), ``TORCH_CUDA_ARCH_LIST`` (default ``DEFAULT_ARCHS`` when no
GPU is visible), ``MAX_JOBS`` (parallel compile jobs).
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import warnings

ROOT = os.path.dirname(os.path.abspath(__file__))
# With no GPU visible at build time: machine code for Ampere (sm_80, runs on every 8.x GPU) and
# Hopper (sm_90), plus compute_90 PTX that the driver compiles for newer GPUs (Blackwell, ...);
# two archs keep the build near a minute on 2 cores. Older GPUs (< 8.0) are not covered.
DEFAULT_ARCHS = "8.0;9.0+PTX"
# No errno and no FP traps, so GCC if-converts and vectorises log_f32's special cases (10x, see
# benchmarks/RESULTS.md "Kernel constants"); no fused multiply-adds: the reference's rounding.
CXX_FLAGS = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off"]
# at::parallel_for is a header template over OpenMP: without -fopenmp the CPU ops run on one thread.
OPENMP_FLAGS = [] if sys.platform == "darwin" else ["-fopenmp"]
# --fmad=false: no contraction into fused multiply-adds (nvcc contracts by default), so the
# Welford updates round like the C++ op (-ffp-contract=off) and Triton (enable_fp_fusion=False).
# Division and sqrt stay IEEE (nvcc's defaults, -prec-div=true -prec-sqrt=true).
NVCC_FLAGS = ["-O3", "--expt-relaxed-constexpr", "--fmad=false"]


def _say(message: str) -> None:
    print(f"smoothkern setup: {message}", file=sys.stderr)


def skip_requested() -> bool:
    return os.environ.get("SMOOTHKERN_SKIP_EXT", "0").lower() in ("1", "true", "yes", "on")


def find_cxx() -> str | None:
    """The C++ compiler setuptools will use (``CXX`` or the one Python was built with)."""
    candidates = [os.environ.get("CXX"), sysconfig.get_config_var("CXX"), "c++", "g++", "clang++"]
    for name in candidates:
        if name and shutil.which(name.split()[0]):
            return name
    return None


def _is_toolkit(folder: str | None) -> bool:
    return bool(folder) and os.path.isfile(os.path.join(folder, "bin", "nvcc")) and (
        os.path.isfile(os.path.join(folder, "include", "cuda_runtime.h"))
        or bool(glob.glob(os.path.join(folder, "targets", "*", "include", "cuda_runtime.h"))))


def _toolkit_of_nvcc(nvcc: str) -> str | None:
    """The toolkit folder an ``nvcc`` command really runs from (it may be a wrapper script).

    ``nvcc --dryrun`` prints the ``TOP`` folder of the real driver, whatever called it.
    """
    try:
        out = subprocess.run([nvcc, "--dryrun", "--version"], capture_output=True, text=True,
                             timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"TOP=(\S+)", out.stdout + out.stderr)
    if match:
        top = os.path.realpath(match.group(1).strip('"'))
        if _is_toolkit(top):
            return top
    real = os.path.realpath(nvcc)  # a symlink into the toolkit
    top = os.path.dirname(os.path.dirname(real))
    return top if _is_toolkit(top) else None


def find_cuda_home() -> str | None:
    """The CUDA toolkit: CUDA_HOME/CUDA_PATH, else the nvcc on PATH, else standard places."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if _is_toolkit(os.environ.get(var)):
            return os.path.realpath(os.environ[var])
    nvcc = shutil.which("nvcc")
    if nvcc:
        home = _toolkit_of_nvcc(nvcc)
        if home:
            return home
    standard = ["/usr/local/cuda", "/opt/cuda"] + sorted(glob.glob("/usr/local/cuda-*"),
                                                         reverse=True)
    return next((os.path.realpath(p) for p in standard if _is_toolkit(p)), None)


def cuda_arch_list(requested: str | None, gpu_visible: bool) -> str | None:
    """The TORCH_CUDA_ARCH_LIST to build with; None leaves torch's choice.

    The user's list wins (a list without "+PTX" runs only on those GPU families). Unset with a
    GPU visible, torch builds for the visible GPUs and adds PTX for the newest itself. Unset with
    no GPU, :data:`DEFAULT_ARCHS` (sm_80, sm_90 and compute_90 PTX).
    """
    if requested:
        return requested
    return None if gpu_visible else DEFAULT_ARCHS


def nvidia_wheel_includes() -> list[str]:
    """``nvidia/cu<major>/include`` folders of the NVIDIA pip wheels (cusparse.h and friends)."""
    import site

    roots = list(dict.fromkeys(site.getsitepackages() + [site.getusersitepackages()] + sys.path))
    found = []
    for root in roots:
        for folder in sorted(glob.glob(os.path.join(root, "nvidia", "cu*", "include"))):
            if os.path.isfile(os.path.join(folder, "cusparse.h")) and folder not in found:
                found.append(folder)
    return found


def _sources(*patterns: str) -> list[str]:
    files = []
    for pattern in patterns:
        files += sorted(glob.glob(os.path.join("csrc", pattern)))
    return files


def extensions() -> tuple[list, dict]:
    """``(ext_modules, cmdclass)`` for setup(); empty when nothing can or should be built."""
    if skip_requested():
        _say("SMOOTHKERN_SKIP_EXT=1: installing pure Python")
        return [], {}
    cxx = find_cxx()
    if cxx is None:
        _say("no C++ compiler found: installing pure Python (backends cpp/cuda unavailable)")
        return [], {}
    cuda_home = find_cuda_home()
    if cuda_home:
        # torch.utils.cpp_extension reads CUDA_HOME once, at import.
        os.environ["CUDA_HOME"] = cuda_home
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError:
        _say("torch is not importable (use pip install --no-build-isolation): pure Python")
        return [], {}
    if cuda_home:
        cpp_extension.CUDA_HOME = cuda_home

    ext_modules = [cpp_extension.CppExtension(
        "smoothkern._C", _sources("smoothkern.cpp", "cpu/*.cpp"),
        extra_compile_args={"cxx": CXX_FLAGS + OPENMP_FLAGS}, extra_link_args=OPENMP_FLAGS)]
    if torch.version.cuda is None:
        _say("torch is a CPU build: building the CPU op only")
    elif os.environ.get("SMOOTHKERN_SKIP_CUDA", "0").lower() in ("1", "true", "yes", "on"):
        _say("SMOOTHKERN_SKIP_CUDA=1: building the CPU op only")
    elif cuda_home is None:
        _say("no CUDA toolkit (nvcc) found: building the CPU op only")
    else:
        archs = cuda_arch_list(os.environ.get("TORCH_CUDA_ARCH_LIST"),
                               torch.cuda.is_available())
        if archs is not None:
            os.environ["TORCH_CUDA_ARCH_LIST"] = archs
        _say(f"building the CUDA op with the toolkit in {cuda_home} for "
             f"{os.environ.get('TORCH_CUDA_ARCH_LIST', 'the visible GPU')}")
        # The wheels' headers (cusparse.h, ...) only fill gaps: searched after the toolkit's own,
        # whose cuda_runtime.h must match nvcc (13.2 wheel headers next to nvcc 13.0 fail).
        wheel_includes = nvidia_wheel_includes()
        after = [arg for folder in wheel_includes for arg in ("-idirafter", folder)]
        nvcc_after = [f"-Xcompiler=-idirafter,{folder}" for folder in wheel_includes]
        ext_modules.append(cpp_extension.CUDAExtension(
            "smoothkern._C_cuda", _sources("cuda/*.cpp", "cuda/*.cu"),
            include_dirs=[os.path.join(ROOT, "csrc")],
            extra_compile_args={"cxx": CXX_FLAGS + after, "nvcc": NVCC_FLAGS + nvcc_after}))
    return ext_modules, {"build_ext": _optional_cuda_build(cpp_extension.BuildExtension)}


def _optional_cuda_build(base: type) -> type:
    """BuildExtension that installs without the CUDA op when only that one fails to build."""

    class BuildExtension(base):
        def build_extension(self, ext) -> None:
            if not ext.name.endswith("_C_cuda"):
                return super().build_extension(ext)
            try:
                return super().build_extension(ext)
            except Exception as err:  # noqa: BLE001 - any toolchain failure: CPU op still ships
                # Leave it out of the copy to the source tree / wheel.
                self.extensions = [e for e in self.extensions if e is not ext]
                warnings.warn(f"smoothkern: the CUDA op failed to build ({err}); installing "
                              "without it (backend 'cuda' unavailable)", stacklevel=1)
                _say(f"CUDA op failed to build: {err}")

    return BuildExtension.with_options(use_ninja=shutil.which("ninja") is not None)
