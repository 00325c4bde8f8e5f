#!/usr/bin/env bash
# The GPU check: run it from a fresh clone on a machine with an NVIDIA GPU (under ten minutes).
#
#   bash benchmarks/gpu_check.sh [--dry-run] [--install-only] [--no-install] [--pip-nvcc]
#                                [--logs DIR] [--python PY]
#
# 1. installs as the README says (pip install torch torchvision; pip install
#    --no-build-isolation -e ".[all,test]"), first fetching a CUDA compiler from NVIDIA's pip
#    wheels, matching torch's CUDA version, when the machine has no nvcc;
# 2. says LOUDLY when the CUDA op was not built (every backend="cuda" test would then skip);
# 3. runs the cuda-marked tests (python -m pytest -m cuda) and python -m benchmarks.gpu;
# 4. prints one summary and writes every step's log to a folder (gpu-check-logs/<time>/).
#
# --dry-run prints what would run, without installing or running anything (works on any
# machine: a check of the script itself). --install-only stops after the install and the CUDA
# op check, and needs no GPU (the build needs none). --no-install uses the environment as it
# is. --pip-nvcc takes the compiler from the wheels even where an nvcc is found (e.g. one whose
# CUDA version differs from torch's). Exit status: 0 when every step passed, 1 otherwise.

set -u -o pipefail

DRY_RUN=0
INSTALL=1
INSTALL_ONLY=0
PIP_NVCC=0
PYTHON=${PYTHON:-python}
LOGS="gpu-check-logs/$(date +%Y%m%d-%H%M%S)"
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY_RUN=1 ;;
        --no-install) INSTALL=0 ;;
        --install-only) INSTALL_ONLY=1 ;;
        --pip-nvcc) PIP_NVCC=1 ;;
        --logs) LOGS="$2"; shift ;;
        --python) PYTHON="$2"; shift ;;
        -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "gpu_check: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 2
mkdir -p "$LOGS"
LOGS="$(cd "$LOGS" && pwd)"
SUMMARY="$LOGS/summary.txt"
: > "$SUMMARY"
STATUS=0
NAMES=()
RESULTS=()

say() { echo "gpu_check: $*" | tee -a "$SUMMARY"; }

loud() {
    local line="########################################################################"
    printf '\n%s\n### %s\n%s\n\n' "$line" "$*" "$line" | tee -a "$SUMMARY" >&2
}

# step NAME SECONDS COMMAND...: runs COMMAND with a time limit, its output in $LOGS/NAME.log.
step() {
    local name="$1" limit="$2"
    shift 2
    if [ "$DRY_RUN" = 1 ]; then
        say "would run [$name, limit ${limit}s]: $*"
        NAMES+=("$name"); RESULTS+=("dry run")
        return 0
    fi
    say "running [$name]: $*"
    local start=$SECONDS
    timeout "$limit" "$@" > "$LOGS/$name.log" 2>&1
    local code=$?
    local took=$((SECONDS - start))
    local result="passed (${took}s)"
    if [ $code -eq 124 ]; then
        result="TIMED OUT after ${limit}s"; STATUS=1
    elif [ $code -ne 0 ]; then
        result="FAILED, exit $code (${took}s)"; STATUS=1
    fi
    NAMES+=("$name"); RESULTS+=("$result")
    say "  $name: $result; log $LOGS/$name.log"
    return $code
}

# ------------------------------------------------------------------------------ the machine
if [ "$DRY_RUN" = 0 ] && [ "$INSTALL_ONLY" = 0 ]; then
    if ! command -v nvidia-smi > /dev/null || ! nvidia-smi -L > "$LOGS/gpus.log" 2>&1; then
        echo "gpu_check: no NVIDIA GPU here (nvidia-smi -L failed); use --dry-run to check the" \
             "script itself" >&2
        exit 1
    fi
    say "GPUs: $(tr '\n' ';' < "$LOGS/gpus.log")"
fi
say "python: $(command -v "$PYTHON") ($("$PYTHON" --version 2>&1)); logs in $LOGS"

# ------------------------------------------------------------------------------ install
if [ "$INSTALL" = 1 ]; then
    step install-torch 600 "$PYTHON" -m pip install torch torchvision
fi

# torch's CUDA version ("13.0"), when torch is installed
torch_cuda() {
    "$PYTHON" -c "import torch; print(torch.version.cuda or '')" 2>/dev/null
}

# The pip packages of a CUDA compiler for CUDA X.Y: NVIDIA's wheels (nvcc, cicc, the crt and
# CCCL headers), named without a suffix from CUDA 13 and with "-cu12" for CUDA 12.
nvcc_wheels() {
    local version="$1" major="${1%%.*}"
    if [ "$major" -ge 13 ]; then
        echo "nvidia-cuda-nvcc==$version.* nvidia-nvvm==$version.* nvidia-cuda-crt==$version.*" \
             "nvidia-cuda-cccl==$version.*"
    else
        echo "nvidia-cuda-nvcc-cu$major==$version.* nvidia-cuda-cccl-cu$major==$version.*"
    fi
}

# The toolkit folder the wheels made: site-packages/nvidia/cu13 (CUDA 13) or
# site-packages/nvidia/cuda_nvcc (CUDA 12).
wheel_toolkit() {
    "$PYTHON" - <<'EOF'
import glob, os, site
for root in site.getsitepackages() + [site.getusersitepackages()]:
    for nvcc in sorted(glob.glob(os.path.join(root, "nvidia", "*", "bin", "nvcc"))):
        print(os.path.dirname(os.path.dirname(nvcc)))
        raise SystemExit(0)
EOF
}

if [ "$INSTALL" = 1 ]; then
    if [ "$PIP_NVCC" = 0 ] && { command -v nvcc > /dev/null \
            || [ -x "${CUDA_HOME:-/nonexistent}/bin/nvcc" ] || [ -x /usr/local/cuda/bin/nvcc ]; }
    then
        say "nvcc: $(command -v nvcc || echo "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc")"
    else
        VERSION="$(torch_cuda)"
        [ "$DRY_RUN" = 1 ] && [ -z "$VERSION" ] && VERSION="13.0"
        if [ -z "$VERSION" ]; then
            loud "torch is not a CUDA build: the CUDA op cannot be built"
            STATUS=1
        else
            say "installing NVIDIA's compiler wheels for CUDA $VERSION (no nvcc found, or --pip-nvcc)"
            # shellcheck disable=SC2046
            step install-nvcc 600 "$PYTHON" -m pip install $(nvcc_wheels "$VERSION")
            if [ "$DRY_RUN" = 0 ]; then
                TOOLKIT="$(wheel_toolkit)"
                if [ -n "$TOOLKIT" ]; then
                    export CUDA_HOME="$TOOLKIT" PATH="$TOOLKIT/bin:$PATH"
                    # The wheels ship libcudart.so.N only; the extension links -lcudart.
                    mkdir -p "$LOGS/cuda-lib"
                    for lib in "$TOOLKIT"/lib/libcudart.so.*; do
                        [ -e "$lib" ] && ln -sf "$lib" "$LOGS/cuda-lib/libcudart.so" && break
                    done
                    export LIBRARY_PATH="$LOGS/cuda-lib:$TOOLKIT/lib:${LIBRARY_PATH:-}"
                    say "CUDA_HOME=$CUDA_HOME ($(nvcc --version | tail -1))"
                else
                    loud "the nvcc wheels installed no nvcc: the CUDA op cannot be built"
                    STATUS=1
                fi
            else
                say "would set CUDA_HOME to the wheels' toolkit (site-packages/nvidia/cu13)"
            fi
        fi
    fi
    step install-smoothkern 1200 "$PYTHON" -m pip install --no-build-isolation -v -e ".[all,test]"
fi

# ------------------------------------------------------------------------------ the CUDA op
if [ "$DRY_RUN" = 0 ]; then
    OPS="$("$PYTHON" -c "
from smoothkern.ops import extension as e
print('C++ op:', 'built' if e.has_ops() else e.why_no_ops())
print('CUDA op:', 'built' if e.has_cuda_ops() else e.why_no_cuda_ops())
" 2>&1)"
    echo "$OPS" > "$LOGS/ops.log"
    say "$OPS"
    if ! echo "$OPS" | grep -q "^CUDA op: built"; then
        loud "THE CUDA OP WAS NOT BUILT: every backend=\"cuda\" test will skip." \
             "See $LOGS/install-smoothkern.log (look for 'smoothkern setup:')"
        STATUS=1
    fi
else
    say "would check that smoothkern.ops.extension.has_cuda_ops() is true (LOUD if not)"
fi

# ------------------------------------------------------------------------------ tests, benchmark
if [ "$INSTALL_ONLY" = 1 ]; then
    say "install only: the tests and the benchmark were not run"
    for i in "${!NAMES[@]}"; do say "  ${NAMES[$i]}: ${RESULTS[$i]}"; done
    exit "$STATUS"
fi
step cuda-tests 600 "$PYTHON" -m pytest -m cuda -q -rs -p no:cacheprovider tests
if [ "$DRY_RUN" = 0 ] && [ -f "$LOGS/cuda-tests.log" ]; then
    SKIPS="$(grep -c "^SKIPPED" "$LOGS/cuda-tests.log" || true)"
    say "  $(tail -1 "$LOGS/cuda-tests.log")"
    if [ "${SKIPS:-0}" -gt 0 ]; then
        loud "$SKIPS cuda-marked test(s) SKIPPED on a GPU machine: a skip here hides a failure" \
             "(see the SKIPPED lines in $LOGS/cuda-tests.log)"
    fi
fi
step benchmarks-gpu 600 "$PYTHON" -m benchmarks.gpu

# ------------------------------------------------------------------------------ summary
echo
say "summary:"
for i in "${!NAMES[@]}"; do
    say "  ${NAMES[$i]}: ${RESULTS[$i]}"
done
if [ "$DRY_RUN" = 1 ]; then
    say "dry run: nothing was installed or run"
elif [ "$STATUS" = 0 ]; then
    say "every step passed"
else
    say "SOME STEPS FAILED (see above and the logs in $LOGS)"
fi
exit "$STATUS"
