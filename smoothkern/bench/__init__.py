"""The benchmark harness: time, peak memory and map error of SmoothGrad implementations.

    smoothkern bench                                     # bundled digits CNN, B=1, m=50
    from smoothkern.bench import benchmark
    result = benchmark(model, x, n_samples=50)           # your model, your inputs
    print(result.table()); result.to_json()

One module per concern: :mod:`.machine` (what it ran on), :mod:`.timing` (interleaved
medians), :mod:`.memory` (peak RSS in a fresh process, or CUDA's peak), :mod:`.variants` (the
rows' calls), :mod:`.report` (rows, result, table, JSON), :mod:`.run` (:func:`benchmark`) and
:mod:`.command` (``python -m smoothkern.bench``), :mod:`.samples_saved` (the samples each
sampling design needs for i.i.d.'s error). :mod:`.names` holds the row names without
torch, for the command line's ``--help``.

Names load on first use, so that building the command-line parser stays light.
"""

from __future__ import annotations

from ..lazy import lazy_exports

_EXPORTS = {
    "CAPTUM_CHUNK": "names", "DEFAULT_SAMPLES": "names", "LABELS": "names", "VARIANTS": "names",
    "machine_info": "machine", "machine_line": "machine", "captum_version": "machine",
    "interleaved_medians": "timing",
    "peak_cuda_of_call": "memory", "peak_rss_of_call": "memory", "reset_peak_rss": "memory",
    "rss_measurable": "memory", "run_child": "memory", "status_mib": "memory",
    "warm_model": "memory",
    "CAPTUM_METHODS": "variants", "CAPTUM_NT_TYPES": "variants", "CAPTUM_OPTIONS": "variants",
    "PRECISIONS": "variants", "make_call": "variants",
    "BenchResult": "report", "Row": "report", "rel_l2": "report",
    "MAX_REPEATS": "run", "MIN_REPEATS": "run", "benchmark": "run",
    "main": "command", "named_inputs": "command",
}
_MODULES = ("command", "machine", "memory", "names", "report", "run", "samples_saved", "timing",
            "variants")

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS, _MODULES)
