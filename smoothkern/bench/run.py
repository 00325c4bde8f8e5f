"""The benchmark harness: time, peak memory and map error of SmoothGrad implementations.

    smoothkern bench                                     # bundled digits CNN, B=1, m=50
    smoothkern bench --model cifar10_resnet18 --batch 8 --json result.json
    smoothkern bench --quick                             # m=10, one repeat: a smoke run

    from smoothkern.bench import benchmark
    result = benchmark(model, x, n_samples=50)           # your model, your inputs
    print(result.table()); result.to_json()

Rows (variants), all on the same model, inputs, targets and noise σ:

- ``loop``: ``smooth_grad(backend="loop")``, m forward/backward passes one after another;
- ``smoothkern``: ``smooth_grad`` defaults in float32, the reference map;
- ``smoothkern-bf16``, ``smoothkern-fp16``: ``compute_dtype=torch.bfloat16 / torch.float16``;
- ``captum``, ``captum-bs10``: ``captum.attr.NoiseTunnel`` with its default
  ``nt_samples_batch_size`` (all samples in one pass) and with 10, if captum is installed.

Time: one warm-up call of each variant, then interleaved repeats (order rotated every repeat)
in this process; the median. Memory: the peak resident set size a variant's first call adds, in
a fresh subprocess per variant (Linux ``VmHWM``, reset just before the call, minus the resident
size before it; the model has already run one forward/backward there); on a GPU, torch's peak
allocated bytes. Error: relative L2 distance of each map to smoothkern's float32 map of the same
seed; Captum draws other noise, so its distance is Monte-Carlo error, comparable with the
distance between two smoothkern seeds (``monte_carlo_rel_l2``), not a precision error.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from . import variants as V
from .machine import machine_info
from .memory import peak_cuda_of_call, rss_measurable, subprocess_peaks
from .names import CAPTUM_CHUNK, LABELS, VARIANTS
from .report import BenchResult, Row, rel_l2
from .timing import interleaved_medians

MIN_REPEATS, MAX_REPEATS = 3, 25  # automatic repeats: about `seconds` of the slowest variant


def benchmark(model: nn.Module, inputs: Tensor, target: int | Sequence[int] | Tensor | None = None,
              *, n_samples: int = 50, method: str = "gradient",
              aggregate: str | Sequence[str] = "mean", noise_level: float = 0.15, seed: int = 0,
              variants: Sequence[str] | None = None, backends: Sequence[str] = (),
              extra: dict[str, Callable[[], object]] | None = None,
              repeats: int | None = None, seconds: float = 3.0, memory: bool = True,
              errors: bool = True, max_gb: float = 6.0, model_name: str | None = None,
              weights: str | os.PathLike | None = None, progress: bool = False,
              **method_options: Any) -> BenchResult:
    """Times, takes the peak memory of, and compares the maps of SmoothGrad implementations.

    Args:
        model: a classifier returning logits ``[B, classes]``, in eval mode.
        inputs (Tensor[B, ...]): the inputs, on the device to benchmark.
        target: the class per example; None: the class the model predicts.
        n_samples: noise samples m. method, aggregate, **method_options: as in
            ``smooth_grad`` (Captum rows need a method and aggregate it has).
        noise_level: σ = noise_level · (max − min of ``inputs``), one absolute σ that every
            variant gets (Captum's ``stdevs`` takes no per-example σ).
        seed: the noise seed (smoothkern) and ``torch.manual_seed`` before Captum's calls.
        variants: rows to run, from :data:`VARIANTS` (default: all of them).
        backends: extra smoothkern rows with ``backend=`` each name (e.g. ``("torch", "cpp")``).
        extra: more no-argument calls to time in the same interleaved repeats (time only).
        repeats: timed repeats; None: enough for about ``seconds`` of the slowest variant
            (3 to 25).
        memory: take each variant's peak memory (a subprocess per variant on a CPU).
        errors: compare the maps with smoothkern's fp32 map (and a second seed's).
        max_gb: Captum runs whose saved activations alone would exceed this are not run.
        model_name, weights: if the model came from ``load_named_model(model_name, weights)``,
            the memory subprocesses rebuild it so instead of unpickling it.
        progress: report the steps on stderr.

    Returns:
        a :class:`BenchResult`: ``.rows`` (one :class:`Row` per variant, skipped ones say why),
        ``.table()``, ``.to_json()``.
    """
    from ..methods import resolve_method

    say = (lambda text: print(text, file=sys.stderr, flush=True)) if progress else (lambda _: None)
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive int, got {n_samples!r}")
    if repeats is not None and (not isinstance(repeats, int) or repeats < 1):
        raise ValueError(f"repeats must be a positive int or None, got {repeats!r}")
    if not isinstance(inputs, Tensor) or not inputs.is_floating_point() or inputs.dim() < 2:
        raise ValueError("inputs must be a floating-point Tensor [B, ...]")
    if not (isinstance(noise_level, (int, float)) and math.isfinite(noise_level)
            and noise_level >= 0):
        raise ValueError(f"noise_level must be a finite number >= 0, got {noise_level!r}")
    chosen = list(VARIANTS if variants is None else variants)
    for name in chosen:
        if name not in VARIANTS:
            raise ValueError(f"unknown benchmark variant {name!r}; choose from {VARIANTS}")
    resolve_method(method, **method_options)  # unknown names and options fail here, in one line
    device = inputs.device
    if target is None:
        with torch.no_grad():
            out = model(inputs)
        if not isinstance(out, Tensor) or out.dim() != 2:
            raise ValueError("target=None needs a model returning logits [B, classes]")
        target = out.argmax(1)
    target = torch.as_tensor(target, device=device).long()
    if target.dim() == 0:
        target = target.expand(inputs.shape[0]).clone()
    elif target.shape != (inputs.shape[0],):
        raise ValueError(f"target must be an int or one class per example ({inputs.shape[0]}), "
                         f"got shape {list(target.shape)}")
    sigma = float(noise_level) * float(inputs.max() - inputs.min())
    cfg = {"n_samples": n_samples, "method": method, "aggregate": aggregate, "sigma": sigma,
           "seed": seed, "method_options": dict(method_options)}

    rows = {name: Row(name, LABELS[name]) for name in chosen}
    for name in backends:
        rows[f"backend={name}"] = Row(f"backend={name}", f"smoothkern backend={name}")
    notes: list[str] = []
    captum_rows = [name for name in ("captum", "captum-bs10") if name in rows]
    reason = V.captum_reason(method, aggregate, method_options) if captum_rows else None
    if reason:
        for name in captum_rows:
            rows[name].skipped = reason
    elif "captum" in rows:
        estimate = V.captum_estimate_gb(model, inputs, n_samples, method, method_options)
        if estimate > max_gb:
            rows["captum"].skipped = (f"saved activations of one pass est. {estimate:.1f} GB > "
                                      f"max_gb={max_gb:g}")

    calls: dict[str, Callable[[], object]] = {}
    for name, row in rows.items():
        if not row.skipped:
            calls[name] = V.make_call(name, model, inputs, target, cfg)
    for name, fn in (extra or {}).items():
        rows[name] = Row(name, name, error_kind="none", note="timed only")
        calls[name] = fn
    if not calls:
        raise ValueError("nothing to benchmark: every variant was skipped")

    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    # Warm-up: each variant's first call. Its map is the one compared, its time picks the
    # repeats; on a GPU it is also where the peak memory is taken (torch counts it exactly).
    maps: dict[str, Tensor] = {}
    first_times: dict[str, float] = {}
    cuda_peaks: dict[str, float] = {}
    order = sorted(calls, key=lambda n: n != "smoothkern")  # the reference first, unguarded
    for name in order:
        say(f"warm-up: {rows[name].label}")
        start = time.perf_counter()
        try:
            if device.type == "cuda" and memory and name not in (extra or {}):
                holder: list[object] = []
                cuda_peaks[name] = peak_cuda_of_call(lambda h=holder, f=calls[name]: h.append(f()),
                                                     device)["peak_mib"]
                out = holder[0]
            else:
                out = calls[name]()
            sync()
        except Exception as err:  # noqa: BLE001 - a failing row is reported, not fatal
            if name == "smoothkern":
                raise
            rows[name].skipped = "failed: " + (str(err).strip().splitlines() or [""])[0][:160]
            del calls[name]
            continue
        first_times[name] = time.perf_counter() - start
        if isinstance(out, Tensor):
            maps[name] = out.detach()

    if repeats is None:
        slowest = max(first_times.values(), default=1.0)
        repeats = max(MIN_REPEATS, min(MAX_REPEATS, math.ceil(seconds / max(slowest, 1e-3))))
    say(f"timing: {len(calls)} variants, {repeats} interleaved repeats")
    times = interleaved_medians(calls, repeats, sync, warm_up=False)
    for name, t in times.items():
        rows[name].time_s = t
    loop = times.get("loop")
    for name, t in times.items():
        rows[name].speedup_vs_loop = loop / t if loop else None

    monte_carlo = None
    if errors and "smoothkern" in maps:
        ref = maps["smoothkern"]
        for name, out in maps.items():
            if name in (extra or {}):
                continue
            rows[name].rel_l2 = rel_l2(out, ref)
            rows[name].error_kind = ("reference" if name == "smoothkern" else
                                     "precision" if name in V.PRECISIONS else
                                     "Monte-Carlo" if name.startswith("captum") else "same seed")
        say("Monte-Carlo yardstick: a second seed")
        other = V.smoothkern_call(model, inputs, target, {**cfg, "seed": seed + 1})()
        monte_carlo = rel_l2(other, ref)
        for name in V.PRECISIONS:
            r = rows.get(name)
            if r is not None and r.rel_l2 is not None and monte_carlo > 0:
                ok = r.rel_l2 <= monte_carlo / 4
                r.note = (f"{r.rel_l2 / monte_carlo:.2f} of the seed-to-seed difference "
                          f"({'within' if ok else 'OUTSIDE'} the ≤ 1/4 contract)")
        for name in captum_rows:
            if rows[name].rel_l2 is not None:
                rows[name].note = "other noise: compare with the Monte-Carlo yardstick"

    if memory:
        measured = [n for n in calls if n not in (extra or {})]
        if device.type == "cuda":
            for name in measured:
                rows[name].peak_mib, rows[name].memory = cuda_peaks.get(name), "cuda allocator"
        elif not rss_measurable():
            notes.append("peak memory not taken: it needs Linux's /proc/self (VmHWM)")
        else:
            subprocess_peaks(rows, measured, model, inputs, target, cfg, model_name, weights,
                             say)

    config = {"model": _describe(model, model_name, weights), "input_shape": list(inputs.shape),
              "device": str(device), "target": target.tolist(), "n_samples": n_samples,
              "method": method if isinstance(method, str) else repr(method),
              "method_options": {k: _jsonable(v) for k, v in method_options.items()},
              "aggregate": aggregate if isinstance(aggregate, str) else list(aggregate),
              "noise_level": noise_level, "sigma": sigma, "seed": seed, "repeats": repeats,
              "captum_chunk": CAPTUM_CHUNK}
    return BenchResult(machine_info(), config, list(rows.values()), monte_carlo, notes)


def _describe(model: nn.Module, name: str | None, weights) -> str:
    if name is None:
        return type(model).__name__
    source = Path(weights).name if weights else ("bundled weights" if name == "digits"
                                                 else "random weights")
    return f"{name} ({source})"


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except TypeError:
        return repr(value)
    return value
