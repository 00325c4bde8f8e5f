"""smoothkern vs ``captum.attr.NoiseTunnel``: time and peak memory, one table.

    python -m benchmarks.captum_compare            # the full grid (long on a CPU)
    python -m benchmarks.captum_compare --quick    # MNIST only, B=1

Time: all variants of one row (smoothkern, Captum chunked, Captum unchunked) run in one
process, interleaved with the order rotated every repeat, after one warm-up call each; the
table gives the median, and ratios within the row, because other work shares the CPU.

Memory: each variant's first call in a fresh subprocess with both libraries already imported.
It is the peak resident set size during the call (``VmHWM``, reset just before it) minus the
resident size just before it (model and inputs in memory, one forward and backward of one row
already run, so torch's one-time set-up is not counted): what the call itself added, as the OS
saw it (autograd's saved activations, noisy copies, allocator slack).

Captum runs whose saved activations alone would exceed ``--max-gb`` (estimated from a one-row
probe) are not run and say so: on a CPU box they would swap or be killed.

Timing, the memory measurement and the machine line are the installed package's harness
(``smoothkern.bench``); ``smoothkern bench`` compares the same libraries on one model of your
choice. This script keeps the drop-in (``smoothkern.captum``) grid of the results file.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings

import torch

from smoothkern.bench import peak_rss_of_call, run_child, warm_model
from smoothkern.core.planning import forward_measuring_saved_bytes

from .common import interleaved_medians, machine

N_SAMPLES = 50
CHUNK = 10
N_STEPS = 20
SIGMA = 0.15
ROW_SECONDS = 10.0


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


def make_call(model_name: str, method: str, batch: int, variant: str):
    """A no-argument call of one variant on its own model and inputs."""
    warnings.simplefilter("ignore")
    import captum.attr as ca

    import smoothkern.captum as skc

    model, x, target = build(model_name, batch)
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
        out = tunnel.attribute(x, nt_samples=N_SAMPLES, stdevs=SIGMA, **extra, **kwargs)
        assert out.shape == x.shape

    return model, x, call


def peak_of_first_call(model_name: str, method: str, batch: int, variant: str) -> dict:
    """Peak RSS (MiB) the first call adds in this fresh process (``smoothkern.bench``'s
    measurement: VmHWM reset just before the call, minus the resident size before it)."""
    model, x, call = make_call(model_name, method, batch, variant)
    # Both libraries (and smoothkern's compiled ops) are loaded, and the model has run one
    # forward and backward (torch's one-time buffers: thread pool, oneDNN primitives) before
    # the baseline, so the peak counts what the call allocates, not what the process sets up once.
    return peak_rss_of_call(call, warm=lambda: warm_model(model, x))


def warm_times(model_name: str, method: str, batch: int, variants: list[str],
               repeats: int) -> tuple[dict[str, float], int]:
    """Median seconds of each variant's warm calls, interleaved in this process, and the
    repeats run (``repeats=0``: enough for about ROW_SECONDS of the slowest variant)."""
    calls = {v: make_call(model_name, method, batch, v)[2] for v in variants}
    slowest = 0.0
    for call in calls.values():  # the warm-up calls, timed only to choose the repeats
        start = time.perf_counter()
        call()
        slowest = max(slowest, time.perf_counter() - start)
    repeats = repeats or max(5, min(25, round(ROW_SECONDS / max(slowest, 1e-3))))
    return interleaved_medians(calls, repeats, warm_up=False), repeats


def measure(model_name: str, method: str, batch: int, variant: str) -> dict:
    return run_child([sys.executable, "-m", "benchmarks.captum_compare", "--one",
                      json.dumps([model_name, method, batch, variant])])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="MNIST, B=1 only")
    parser.add_argument("--models", default="mnist,resnet18")
    parser.add_argument("--methods", default="saliency,ig")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--reps", type=int, default=0, help="timed repeats per variant (0: "
                        "enough for about ROW_SECONDS of the slowest variant, 5 to 25)")
    parser.add_argument("--max-gb", type=float, default=6.0,
                        help="skip Captum runs whose saved activations exceed this")
    parser.add_argument("--skip", default="", help="comma list of model:method:B rows to skip")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(peak_of_first_call(*json.loads(args.one))))
        return
    models = ["mnist"] if args.quick else args.models.split(",")
    batches = [1] if args.quick else [int(b) for b in args.batches.split(",")]
    skip = set(filter(None, args.skip.split(",")))
    print(f"machine: {machine()}; nt_samples={N_SAMPLES}, IG n_steps={N_STEPS}, "
          f"Captum chunk={CHUNK}")
    print("| model | method | B | repeats | smoothkern s | Captum chunked s | Captum unchunked s | "
          "speed-up vs chunked | vs unchunked | smoothkern MiB | Captum chunked MiB | "
          "Captum unchunked MiB | memory vs unchunked |")
    print("|" + "---|" * 13)
    for model_name in models:
        for method in args.methods.split(","):
            for batch in batches:
                if f"{model_name}:{method}:{batch}" in skip:
                    print(f"| {model_name} | {method} | {batch} | | not run (--skip) |" + " |" * 8)
                    continue
                print(row(model_name, method, batch, args), flush=True)


def row(model_name: str, method: str, batch: int, args) -> str:
    model, x, _ = build(model_name, batch)
    per_row = saved_mib_per_row(model, x)
    variants = ["smoothkern", "captum_chunked", "captum"]
    runnable = {v: v == "smoothkern" or
                rows_per_pass(v, method, batch) * per_row / 1024 <= args.max_gb
                for v in variants}
    timed = [v for v in variants if runnable[v]]
    times, repeats = warm_times(model_name, method, batch, timed, args.reps)
    peaks = {v: measure(model_name, method, batch, v) for v in timed}

    def cell(v, value, fmt):
        if not runnable[v]:
            est = rows_per_pass(v, method, batch) * per_row / 1024
            return f"not run (est. {est:.0f} GB)"
        if value is None:
            return "error: " + peaks[v].get("error", "?")[:60]
        return fmt.format(value)

    s = {v: times.get(v) for v in variants}
    m = {v: peaks.get(v, {}).get("peak_mib") for v in variants}

    def ratio(a, b):
        return f"{a / b:.2f}x" if a and b else "-"

    return (f"| {model_name} | {method} | {batch} | {repeats} "
            f"| {cell('smoothkern', s['smoothkern'], '{:.3f}')}"
            f" | {cell('captum_chunked', s['captum_chunked'], '{:.3f}')}"
            f" | {cell('captum', s['captum'], '{:.3f}')}"
            f" | {ratio(s['captum_chunked'], s['smoothkern'])}"
            f" | {ratio(s['captum'], s['smoothkern'])}"
            f" | {cell('smoothkern', m['smoothkern'], '{:.0f}')}"
            f" | {cell('captum_chunked', m['captum_chunked'], '{:.0f}')}"
            f" | {cell('captum', m['captum'], '{:.0f}')}"
            f" | {ratio(m['smoothkern'], m['captum'])} |")


if __name__ == "__main__":
    main()
