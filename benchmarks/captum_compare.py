"""smoothkern vs ``captum.attr.NoiseTunnel``: time and peak memory, one table.

    python -m benchmarks.captum_compare            # the full grid (long on a CPU)
    python -m benchmarks.captum_compare --quick    # MNIST only, B=1

Each measurement runs in a fresh subprocess with both libraries already imported. Memory is the
peak resident set size (``ru_maxrss``) after the first call minus the resident size just before
it (model, inputs and one clean forward already in memory): what the call itself added, as the
OS saw it (autograd's saved activations, noisy copies, allocator slack, first-call buffers).
Time is a second, warm call in the same process. Variants of one row run
interleaved (smoothkern, Captum chunked, Captum unchunked, then again), and each row reports
time ratios within that row, because other work shares the CPU.

Captum runs whose saved activations alone would exceed ``--max-gb`` (estimated from a one-row
probe) are not run and say so: on a CPU box they would swap or be killed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings

import torch

from smoothkern.planning import forward_measuring_saved_bytes

from .common import machine

N_SAMPLES = 50
CHUNK = 10
N_STEPS = 20
SIGMA = 0.15


def build(model_name: str, batch: int):
    torch.manual_seed(0)
    if model_name == "mnist":
        from smoothkern.models.mnist import MnistCNN

        model, shape = MnistCNN(), (1, 28, 28)
    else:
        from smoothkern.models.cifar import CifarResNet

        model, shape = CifarResNet(), (3, 32, 32)
    model.eval()
    x = torch.rand(batch, *shape, generator=torch.Generator().manual_seed(1))
    target = torch.arange(batch) % 10
    return model, x, target


def saved_mib_per_row(model, x) -> float:
    """Activations autograd saves per row (the engine's own probe: storages counted once)."""
    return forward_measuring_saved_bytes(model, x[:1])[1] / 2**20


def rows_per_pass(variant: str, method: str, batch: int) -> int:
    """Model rows Captum holds in one pass (for the memory estimate)."""
    samples = N_SAMPLES if variant == "captum" else CHUNK
    return samples * batch * (N_STEPS if method == "ig" else 1)


def run_one(model_name: str, method: str, batch: int, variant: str) -> dict:
    """Two calls in this process: the peak RSS the first one added (MiB), the time of the
    second (warm) one."""
    warnings.simplefilter("ignore")
    import captum.attr as ca

    import smoothkern.captum as skc

    model, x, target = build(model_name, batch)
    with torch.no_grad():
        model(x)
    # Both libraries (and smoothkern's compiled ops) are loaded before the baseline, so the
    # peak counts what the call allocates, not the code it imports.
    rss_before = _current_rss_mib()
    kwargs = {"target": target}
    if method == "ig":
        kwargs.update(n_steps=N_STEPS, method="gausslegendre")
    if variant == "smoothkern":
        base = skc.Saliency(model) if method == "saliency" else skc.IntegratedGradients(model)
        tunnel, extra = skc.NoiseTunnel(base), {}
    else:
        base = ca.Saliency(model) if method == "saliency" else ca.IntegratedGradients(model)
        chunk = CHUNK if variant == "captum_chunked" else None
        tunnel, extra = ca.NoiseTunnel(base), {"nt_samples_batch_size": chunk}

    def call():
        return tunnel.attribute(x, nt_samples=N_SAMPLES, stdevs=SIGMA, **extra, **kwargs)

    out = call()  # the cold call sets the memory peak (first-call allocations included)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    start = time.perf_counter()
    call()  # the warm call is timed: what a user running many maps sees
    seconds = time.perf_counter() - start
    assert out.shape == x.shape
    return {"seconds": seconds, "peak_mib": max(0.0, peak - rss_before)}


def _current_rss_mib() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(model_name: str, method: str, batch: int, variant: str) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.captum_compare", "--one",
           json.dumps([model_name, method, batch, variant])]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr else "failed"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="MNIST, B=1 only")
    parser.add_argument("--models", default="mnist,resnet18")
    parser.add_argument("--methods", default="saliency,ig")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--reps", type=int, default=2, help="repeats of rows with <= 2000 "
                        "model rows (heavier rows run once)")
    parser.add_argument("--max-gb", type=float, default=6.0,
                        help="skip Captum runs whose saved activations exceed this")
    parser.add_argument("--skip", default="", help="comma list of model:method:B rows to skip")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(*json.loads(args.one))))
        return
    models = ["mnist"] if args.quick else args.models.split(",")
    batches = [1] if args.quick else [int(b) for b in args.batches.split(",")]
    skip = set(filter(None, args.skip.split(",")))
    print(f"machine: {machine()}, {os.cpu_count()} cores visible, "
          f"threads {torch.get_num_threads()}; nt_samples={N_SAMPLES}, IG n_steps={N_STEPS}, "
          f"Captum chunk={CHUNK}")
    print("| model | method | B | smoothkern s | Captum chunked s | Captum unchunked s | "
          "speed-up vs chunked | vs unchunked | smoothkern MiB | Captum chunked MiB | "
          "Captum unchunked MiB | memory vs unchunked |")
    print("|" + "---|" * 12)
    for model_name in models:
        for method in args.methods.split(","):
            for batch in batches:
                if f"{model_name}:{method}:{batch}" in skip:
                    print(f"| {model_name} | {method} | {batch} | not run (--skip) |" + " |" * 8)
                    continue
                print(row(model_name, method, batch, args), flush=True)


def row(model_name: str, method: str, batch: int, args) -> str:
    model, x, _ = build(model_name, batch)
    per_row = saved_mib_per_row(model, x)
    variants = ["smoothkern", "captum_chunked", "captum"]
    runnable = {v: v == "smoothkern" or
                rows_per_pass(v, method, batch) * per_row / 1024 <= args.max_gb
                for v in variants}
    heavy = N_SAMPLES * batch * (N_STEPS if method == "ig" else 1) > 2000
    reps = 1 if heavy else args.reps
    results: dict[str, list[dict]] = {v: [] for v in variants}
    for rep in range(reps):
        order = variants if rep % 2 == 0 else variants[::-1]
        for v in order:
            if runnable[v]:
                results[v].append(measure(model_name, method, batch, v))

    def secs(v):
        good = [r["seconds"] for r in results[v] if "seconds" in r]
        return statistics.median(good) if good else None

    def mib(v):
        good = [r["peak_mib"] for r in results[v] if "peak_mib" in r]
        return max(good) if good else None

    def cell(v, value, fmt):
        if not runnable[v]:
            est = rows_per_pass(v, method, batch) * per_row / 1024
            return f"not run (est. {est:.0f} GB)"
        if value is None:
            return "error: " + results[v][0].get("error", "?")[:60]
        return fmt.format(value)

    s = {v: secs(v) for v in variants}
    m = {v: mib(v) for v in variants}

    def ratio(a, b):
        return f"{a / b:.2f}x" if a and b else "-"

    return (f"| {model_name} | {method} | {batch} | {cell('smoothkern', s['smoothkern'], '{:.2f}')}"
            f" | {cell('captum_chunked', s['captum_chunked'], '{:.2f}')}"
            f" | {cell('captum', s['captum'], '{:.2f}')}"
            f" | {ratio(s['captum_chunked'], s['smoothkern'])}"
            f" | {ratio(s['captum'], s['smoothkern'])}"
            f" | {cell('smoothkern', m['smoothkern'], '{:.0f}')}"
            f" | {cell('captum_chunked', m['captum_chunked'], '{:.0f}')}"
            f" | {cell('captum', m['captum'], '{:.0f}')}"
            f" | {ratio(m['smoothkern'], m['captum'])} |")


if __name__ == "__main__":
    main()
