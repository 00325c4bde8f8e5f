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
- ``smoothkern-bf16``, ``smoothkern-fp16``: ``compute_dtype=torch.bfloat16 / torch.float16``,
  when ``smooth_grad`` takes that keyword (otherwise the rows say they were skipped);
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

import argparse
import dataclasses
import inspect
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

VARIANTS = ("loop", "smoothkern", "smoothkern-bf16", "smoothkern-fp16", "captum", "captum-bs10")
LABELS = {"loop": "loop (m sequential passes)", "smoothkern": "smoothkern fp32",
          "smoothkern-bf16": "smoothkern bf16", "smoothkern-fp16": "smoothkern fp16",
          "captum": "Captum NoiseTunnel (default)", "captum-bs10": "Captum NoiseTunnel bs=10"}
PRECISIONS = {"smoothkern-bf16": torch.bfloat16, "smoothkern-fp16": torch.float16}
CAPTUM_CHUNK = 10  # nt_samples_batch_size of the "best-chunked" Captum row (issue 10's tables)
# smoothkern aggregate -> Captum nt_type; the other aggregates have no Captum counterpart.
CAPTUM_NT_TYPES = {"mean": "smoothgrad", "sq": "smoothgrad_sq", "var": "vargrad"}
# smoothkern method -> (captum.attr class, attribute() keywords fixed by the method).
CAPTUM_METHODS = {"gradient": ("Saliency", {"abs": False}), "saliency": ("Saliency", {}),
                  "input_x_gradient": ("InputXGradient", {}),
                  "integrated_gradients": ("IntegratedGradients", {}),
                  "guided_backprop": ("GuidedBackprop", {})}
# Method options with a Captum attribute() keyword of another name (or the same).
CAPTUM_OPTIONS = {"abs": "abs", "n_steps": "n_steps", "integration": "method"}
MIN_REPEATS, MAX_REPEATS = 3, 25  # automatic repeats: about `seconds` of the slowest variant


# ----------------------------------------------------------------------------------------------
# the machine


def machine_info() -> dict[str, Any]:
    """The machine a benchmark ran on: CPU model, cores, threads, GPU, library versions."""
    from . import __version__

    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {"cpu": cpu or platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "threads": torch.get_num_threads(), "gpu": gpu, "torch": torch.__version__,
            "python": platform.python_version(), "smoothkern": __version__,
            "captum": _captum_version(), "platform": platform.platform()}


def machine_line(info: dict[str, Any] | None = None) -> str:
    """One line naming the CPU (and GPU if any), cores, threads and versions."""
    info = info or machine_info()
    gpu = f", GPU {info['gpu']}" if info.get("gpu") else ""
    return (f"{info['cpu']}, {info['cores']} cores, {info['threads']} threads{gpu}, "
            f"torch {info['torch']}, Python {info['python']}")


def _captum_version() -> str | None:
    try:
        import captum
    except ImportError:
        return None
    return getattr(captum, "__version__", "unknown")


def supports_compute_dtype() -> bool:
    """Whether this smoothkern's ``smooth_grad`` takes ``compute_dtype`` (reduced precision)."""
    from .api import smooth_grad

    return "compute_dtype" in inspect.signature(smooth_grad).parameters


# ----------------------------------------------------------------------------------------------
# timing


def interleaved_medians(variants: dict[str, Callable[[], object]], repeats: int,
                        sync: Callable[[], None] = lambda: None,
                        warm_up: bool = True) -> dict[str, float]:
    """Median wall time of each variant, running them in turn within each repeat.

    Interleaving makes a slow phase of a noisy machine hit every variant alike, so ratios
    inside one run are trustworthy even when absolute times drift.

    Args:
        warm_up: call every variant once, untimed, first (allocator, lazy init, kernel builds).
    """
    times: dict[str, list[float]] = {name: [] for name in variants}
    if warm_up:
        for fn in variants.values():
            fn()
        sync()
    names = list(variants)
    for r in range(repeats):
        # Rotate the order each repeat: a variant's cost can leak into the next one (allocator,
        # caches, thread pools), so no variant should always follow the same neighbour.
        for name in names[r % len(names):] + names[:r % len(names)]:
            fn = variants[name]
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


# ----------------------------------------------------------------------------------------------
# peak memory


def status_mib(field: str) -> float:
    """A ``/proc/self/status`` size in MiB (Linux). VmHWM (peak RSS) belongs to this process's
    own address space; ``ru_maxrss`` would also carry the parent's peak across fork + exec."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise OSError(f"no {field} in /proc/self/status")


def reset_peak_rss() -> None:
    """Sets VmHWM to the current RSS (Linux >= 4.0), so the next peak is the caller's own."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def rss_measurable() -> bool:
    """Whether this process can read and reset its peak RSS (Linux /proc)."""
    try:
        status_mib("VmHWM")
        reset_peak_rss()
    except OSError:
        return False
    return True


def warm_model(model: nn.Module, x: Tensor) -> None:
    """One forward and backward of one row: torch's one-time buffers (thread pool, oneDNN
    primitives) are then allocated before a memory baseline is taken."""
    one = x[:1].detach().clone().requires_grad_(True)
    out = model(one)
    out = out if isinstance(out, Tensor) else next(iter(out.values() if isinstance(out, dict)
                                                        else out))
    torch.autograd.grad(out.float().sum(), one)


def peak_rss_of_call(call: Callable[[], object],
                     warm: Callable[[], object] | None = None) -> dict[str, float]:
    """Peak RSS (MiB) that ``call`` adds over the resident size just before it.

    Meant for the first call in a fresh process (freed memory a process keeps would hide a
    later call's allocations); ``warm`` runs first, outside the measurement.
    """
    if warm is not None:
        warm()
    before = status_mib("VmRSS")
    reset_peak_rss()
    call()
    return {"peak_mib": max(0.0, status_mib("VmHWM") - before)}


def peak_cuda_of_call(call: Callable[[], object], device: torch.device) -> dict[str, float]:
    """Peak bytes (MiB) torch's CUDA allocator handed out during ``call``, over those before."""
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    call()
    torch.cuda.synchronize(device)
    return {"peak_mib": max(0, torch.cuda.max_memory_allocated(device) - before) / 2**20}


def run_child(cmd: Sequence[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Runs a measuring subprocess that prints one JSON object on its last stdout line.

    Returns that object, or ``{"error": the last stderr line}``.
    """
    done = subprocess.run(list(cmd), capture_output=True, text=True, check=False, env=env)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        err = done.stderr.strip().splitlines()
        return {"error": err[-1] if err else f"exit status {done.returncode}"}
    try:
        return json.loads(lines[-1])
    except json.JSONDecodeError:
        return {"error": f"unreadable child output: {lines[-1][:80]}"}


# ----------------------------------------------------------------------------------------------
# results


@dataclasses.dataclass
class Row:
    """One variant's measurements. None: not measured (``skipped`` or ``note`` says why)."""

    variant: str
    label: str
    time_s: float | None = None
    speedup_vs_loop: float | None = None
    peak_mib: float | None = None
    memory: str | None = None          # how the peak was taken
    rel_l2: float | None = None        # ‖map − smoothkern fp32 map‖ / ‖smoothkern fp32 map‖
    error_kind: str | None = None      # reference | same seed | precision | Monte-Carlo | none
    skipped: str | None = None
    note: str | None = None


@dataclasses.dataclass
class BenchResult:
    """What :func:`benchmark` measured: the machine, the settings, one row per variant."""

    machine: dict[str, Any]
    config: dict[str, Any]
    rows: list[Row]
    monte_carlo_rel_l2: float | None = None
    notes: list[str] = dataclasses.field(default_factory=list)

    def row(self, variant: str) -> Row:
        for row in self.rows:
            if row.variant == variant:
                return row
        raise KeyError(variant)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchResult:
        data = dict(data)
        data["rows"] = [Row(**row) for row in data["rows"]]
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> BenchResult:
        return cls.from_dict(json.loads(text))

    def table(self) -> str:
        """The machine, the settings and a Markdown table of the rows."""
        c = self.config
        lines = [f"machine: {machine_line(self.machine)}",
                 f"model: {c['model']}, inputs {c['input_shape']} ({c['device']}), method "
                 f"{c['method']}, aggregate {c['aggregate']}, m = {c['n_samples']}, "
                 f"σ = {c['noise_level']} × input range = {c['sigma']:.4g}, seed {c['seed']}, "
                 f"median of {c['repeats']} interleaved repeats after a warm-up"]
        if self.monte_carlo_rel_l2 is not None:
            lines.append(f"Monte-Carlo yardstick: two smoothkern fp32 seeds differ by "
                         f"{_percent(self.monte_carlo_rel_l2)} (rel. L2) at this m")
        lines += ["", "| variant | time (s) | speed-up vs loop | peak memory added (MiB) | "
                  "rel. L2 vs smoothkern fp32 | note |", "|---|---|---|---|---|---|"]
        for r in self.rows:
            if r.skipped:
                lines.append(f"| {r.label} | - | - | - | - | skipped: {r.skipped} |")
                continue
            error = "-" if r.rel_l2 is None else f"{_percent(r.rel_l2)} ({r.error_kind})"
            lines.append(f"| {r.label} | {_num(r.time_s, '{:.4f}')} | "
                         f"{_num(r.speedup_vs_loop, '{:.2f}x')} | {_num(r.peak_mib, '{:.1f}')} | "
                         f"{error} | {r.note or ''} |")
        if self.notes:
            lines += [""] + [f"- {note}" for note in self.notes]
        return "\n".join(lines)


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def _percent(value: float) -> str:
    return "0 %" if value == 0 else f"{100 * value:.3g} %"


def rel_l2(a: Tensor, ref: Tensor) -> float:
    """‖a − ref‖₂ / ‖ref‖₂ in float64 (0 when both are zero)."""
    a, ref = a.detach().double().cpu(), ref.detach().double().cpu()
    denom = ref.norm().item()
    diff = (a - ref).norm().item()
    return diff / denom if denom > 0 else (0.0 if diff == 0 else math.inf)


# ----------------------------------------------------------------------------------------------
# the variants


def _first(aggregate: str | Sequence[str]) -> str:
    return aggregate if isinstance(aggregate, str) else tuple(aggregate)[0]


def _captum_reason(method: Any, aggregate: str | Sequence[str],
                   options: dict[str, Any]) -> str | None:
    """Why Captum's NoiseTunnel cannot run this configuration here, or None."""
    if _captum_version() is None:
        return "captum is not installed (pip install captum)"
    if not isinstance(method, str) or method not in CAPTUM_METHODS:
        return f"no Captum counterpart wired for method {method!r} here"
    if _first(aggregate) not in CAPTUM_NT_TYPES:
        return f"Captum's NoiseTunnel has no aggregate {_first(aggregate)!r}"
    unknown = sorted(set(options) - set(CAPTUM_OPTIONS))
    if unknown:
        return f"method options {unknown} have no Captum mapping here"
    return None


def _smoothkern_call(model, x, target, cfg, **extra) -> Callable[[], Tensor]:
    from .api import smooth_grad

    aggregate = cfg["aggregate"]

    def call() -> Tensor:
        out = smooth_grad(model, x, target, n_samples=cfg["n_samples"], stdevs=cfg["sigma"],
                          aggregate=aggregate, method=cfg["method"], seed=cfg["seed"],
                          **cfg["method_options"], **extra)
        return out[_first(aggregate)] if isinstance(out, dict) else out

    return call


def _captum_call(model, x, target, cfg, chunk: int | None) -> Callable[[], Tensor]:
    import captum.attr as ca

    name, fixed = CAPTUM_METHODS[cfg["method"]]
    tunnel = ca.NoiseTunnel(getattr(ca, name)(model))
    kwargs = dict(fixed)
    for key, value in cfg["method_options"].items():
        kwargs[CAPTUM_OPTIONS[key]] = value
    if name == "IntegratedGradients":
        kwargs.setdefault("method", "gausslegendre")  # smoothkern's default rule too

    def call() -> Tensor:
        torch.manual_seed(cfg["seed"])  # Captum draws from the global generator
        return tunnel.attribute(x, nt_type=CAPTUM_NT_TYPES[_first(cfg["aggregate"])],
                                nt_samples=cfg["n_samples"], stdevs=cfg["sigma"],
                                nt_samples_batch_size=chunk, target=target, **kwargs)

    return call


def make_call(variant: str, model: nn.Module, x: Tensor, target: Tensor,
              cfg: dict[str, Any]) -> Callable[[], Tensor]:
    """A no-argument call of one variant, returning its map (the first aggregate)."""
    if variant == "loop":
        return _smoothkern_call(model, x, target, cfg, backend="loop")
    if variant == "smoothkern":
        return _smoothkern_call(model, x, target, cfg)
    if variant in PRECISIONS:
        return _smoothkern_call(model, x, target, cfg, compute_dtype=PRECISIONS[variant])
    if variant.startswith("backend="):
        return _smoothkern_call(model, x, target, cfg, backend=variant.split("=", 1)[1])
    if variant == "captum":
        return _captum_call(model, x, target, cfg, None)
    if variant == "captum-bs10":
        return _captum_call(model, x, target, cfg, CAPTUM_CHUNK)
    raise ValueError(f"unknown benchmark variant {variant!r}; choose from {VARIANTS}")


# ----------------------------------------------------------------------------------------------
# the harness


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
    from .methods import resolve_method

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
    if any(name in PRECISIONS for name in chosen) and not supports_compute_dtype():
        for name in PRECISIONS:
            if name in rows:
                rows[name].skipped = "this smooth_grad has no compute_dtype keyword"
        notes.append("reduced-precision rows skipped: smoothkern.smooth_grad takes no "
                     "compute_dtype here (a newer smoothkern does)")
    captum_rows = [name for name in ("captum", "captum-bs10") if name in rows]
    reason = _captum_reason(method, aggregate, method_options) if captum_rows else None
    if reason:
        for name in captum_rows:
            rows[name].skipped = reason
    elif "captum" in rows:
        estimate = _captum_estimate_gb(model, inputs, n_samples, method, method_options)
        if estimate > max_gb:
            rows["captum"].skipped = (f"saved activations of one pass est. {estimate:.1f} GB > "
                                      f"max_gb={max_gb:g}")

    calls: dict[str, Callable[[], object]] = {}
    for name, row in rows.items():
        if not row.skipped:
            calls[name] = make_call(name, model, inputs, target, cfg)
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
                                     "precision" if name in PRECISIONS else
                                     "Monte-Carlo" if name.startswith("captum") else "same seed")
        say("Monte-Carlo yardstick: a second seed")
        other = _smoothkern_call(model, inputs, target, {**cfg, "seed": seed + 1})()
        monte_carlo = rel_l2(other, ref)
        for name in PRECISIONS:
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
            _subprocess_peaks(rows, measured, model, inputs, target, cfg, model_name, weights,
                              say)

    config = {"model": _describe(model, model_name, weights), "input_shape": list(inputs.shape),
              "device": str(device), "target": target.tolist(), "n_samples": n_samples,
              "method": method if isinstance(method, str) else repr(method),
              "method_options": {k: _jsonable(v) for k, v in method_options.items()},
              "aggregate": aggregate if isinstance(aggregate, str) else list(aggregate),
              "noise_level": noise_level, "sigma": sigma, "seed": seed, "repeats": repeats,
              "captum_chunk": CAPTUM_CHUNK, "compute_dtype_supported": supports_compute_dtype()}
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


def _captum_estimate_gb(model, inputs, n_samples, method, options) -> float:
    """Saved activations of Captum's unchunked pass (all m·B rows, × n_steps for IG)."""
    from .planning import forward_measuring_saved_bytes

    try:
        per_row = forward_measuring_saved_bytes(model, inputs[:1])[1]
    except Exception:  # noqa: BLE001 - the estimate is advisory; smooth_grad reports real errors
        return 0.0
    steps = options.get("n_steps", 50) if method == "integrated_gradients" else 1
    return per_row * n_samples * inputs.shape[0] * steps / 2**30


def _subprocess_peaks(rows, names, model, inputs, target, cfg, model_name, weights, say):
    """Each variant's first call in a fresh interpreter (``python -m smoothkern.bench``)."""
    with tempfile.TemporaryDirectory(prefix="smoothkern-bench-") as folder:
        payload = Path(folder) / "payload.pt"
        data = {"model": None if model_name else model, "model_name": model_name,
                "weights": None if weights is None else str(weights), "inputs": inputs.cpu(),
                "target": target.cpu(), "cfg": cfg}
        try:
            torch.save(data, payload)
        except Exception as err:  # noqa: BLE001 - e.g. a model that cannot be pickled
            for name in names:
                rows[name].memory = f"not taken: the model cannot be saved ({err})"[:120]
            return
        env = dict(os.environ)
        # The child must find what the parent imports (a model class in the caller's modules).
        env["PYTHONPATH"] = os.pathsep.join([p for p in sys.path if p] +
                                            [env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        for name in names:
            say(f"memory: {rows[name].label} in a fresh process")
            got = run_child([sys.executable, "-m", "smoothkern.bench", "--child", str(payload),
                             name], env)
            if "peak_mib" in got:
                rows[name].peak_mib, rows[name].memory = got["peak_mib"], "subprocess VmHWM"
            else:
                rows[name].memory = f"not taken: {got.get('error', '?')}"[:160]


def _child(payload: str, variant: str) -> None:
    """The memory subprocess: rebuild the inputs, warm the model, measure one call."""
    import warnings

    warnings.simplefilter("ignore")
    data = torch.load(payload, weights_only=False)
    model = data["model"]
    if model is None:
        from .models import load_named_model

        model = load_named_model(data["model_name"], data["weights"])[0]
    x, target = data["inputs"], data["target"]
    call = make_call(variant, model, x, target, data["cfg"])
    print(json.dumps(peak_rss_of_call(call, warm=lambda: warm_model(model, x))))


# ----------------------------------------------------------------------------------------------
# named models (the command line)


def named_inputs(model_name: str, weights: str | os.PathLike | None = None, batch: int = 1,
                 input_shape: Sequence[int] | None = None, seed: int = 0
                 ) -> tuple[nn.Module, Tensor]:
    """A named model (``load_named_model``) and a batch for it: real digits for the digits
    models at their own size, otherwise uniform pixels in [0, 1] of ``input_shape``."""
    from .models import load_named_model

    model, spec = load_named_model(model_name, weights)
    own = (spec.channels, spec.size, spec.size)
    shape = tuple(input_shape) if input_shape else own
    x = None
    if model_name.replace("-", "_").lower() in ("digits", "mnist", "mnist_cnn") and shape == own:
        try:
            from .data import digit_examples

            images, _ = digit_examples(per_class=math.ceil(batch / 10))
            x = images[:batch].contiguous()
        except ImportError:  # scikit-learn missing: random pixels time the same
            x = None
    if x is None:
        x = torch.rand(batch, *shape, generator=torch.Generator().manual_seed(seed))
    try:
        with torch.no_grad():
            model(x[:1])
    except Exception as err:  # noqa: BLE001 - reported as a usage error
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ValueError(f"model {model_name!r} does not take inputs of shape "
                         f"{list(shape)}: {first}") from None
    return model, x


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m smoothkern.bench``: the memory subprocess (``--child``), else the command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        parser = argparse.ArgumentParser(prog="smoothkern.bench --child")
        parser.add_argument("--child", required=True)
        parser.add_argument("variant")
        args = parser.parse_args(argv)
        _child(args.child, args.variant)
        return
    from .cli import main as cli_main

    sys.exit(cli_main(["bench", *argv]))


if __name__ == "__main__":
    main()
