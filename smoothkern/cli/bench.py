"""``smoothkern bench``: the benchmark harness (:mod:`smoothkern.bench`) on a named model."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path

from .args import MAP_AGGREGATES, CliError, fraction, method_option, positive


def cmd_bench(args: argparse.Namespace) -> int:
    from .. import bench

    if args.json not in (None, "-"):
        check_writable(args.json)  # before the benchmark, not after minutes of it
    n_samples, repeats = args.samples, args.repeats
    if n_samples is None:
        n_samples = 10 if args.quick else bench.DEFAULT_SAMPLES
    if args.quick:  # a smoke run: explicit --samples/--repeats still win
        repeats = repeats or 1
    model, x = bench.named_inputs(args.model, args.weights, args.batch, args.input_shape,
                                  args.seed)
    device = args.device or ("cuda" if _cuda_available() else "cpu")
    if device.split(":")[0] not in ("cpu", "cuda"):
        raise CliError(f"--device must be cpu or cuda[:N], got {device!r}")
    if device.startswith("cuda") and not _cuda_available():
        raise CliError(f"--device {device}: torch sees no CUDA device here")
    model, x = model.to(device), x.to(device)
    variants = [v for v in args.variants or bench.VARIANTS
                if not (args.no_captum and v.startswith("captum"))]
    result = bench.benchmark(model, x, n_samples=n_samples, method=args.method,
                             aggregate=args.aggregate, noise_level=args.noise_level,
                             seed=args.seed, variants=variants, repeats=repeats,
                             memory=not args.no_memory, model_name=args.model,
                             weights=args.weights, progress=not args.quiet,
                             **dict(args.option))
    text = result.to_json()
    if args.samples_saved:
        from ..bench.samples_saved import format_savings, samples_saved

        savings = samples_saved(model, x, n_samples=n_samples, method=args.method,
                                noise_level=args.noise_level, **dict(args.option))
        text = json.dumps({**json.loads(text), "samples_saved": [
            dataclasses.asdict(s) for s in savings]}, indent=2)
    if args.json == "-":
        print(text)
        return 0
    print(result.table())
    if args.samples_saved:
        print(format_savings(savings, n_samples))
    if args.json:
        path = Path(args.json)
        try:
            path.write_text(text + "\n")
        except OSError as err:
            raise CliError(f"cannot write {path}: {err.strerror or err}") from None
        print(f"wrote {path}")
    return 0


def register(sub) -> None:
    """Adds ``bench`` to the ``smoothkern`` subparsers."""
    from ..bench.names import DEFAULT_SAMPLES, VARIANTS

    bench = sub.add_parser(
        "bench", help="time and compare SmoothGrad implementations on a model",
        description="Times (interleaved repeats, medians, after a warm-up) and takes the peak "
        "memory (a fresh process per variant) of the naive loop, smoothkern in fp32 and in "
        "reduced precision, and Captum's NoiseTunnel (default and nt_samples_batch_size=10) "
        "if installed, on a named model; reports each map's relative L2 difference from "
        "smoothkern's fp32 map of the same seed. Table on stdout, JSON with --json.")
    bench.add_argument("--model", default="digits", help="digits (the bundled CNN, default), "
                       "mnist, cifar10_resnet18, or a torchvision architecture (resnet18, ...)")
    bench.add_argument("--weights", help="local state dict file (default: bundled for digits, "
                       "random weights otherwise; speed does not depend on them)")
    bench.add_argument("--input-shape", type=positive, nargs="+", metavar="N",
                       help="one input's shape, e.g. 3 224 224 (default: the model's own)")
    bench.add_argument("--batch", type=positive, default=1, help="examples B (default 1)")
    bench.add_argument("--samples", type=positive,
                       help=f"noise samples m (default {DEFAULT_SAMPLES}; 10 with --quick)")
    bench.add_argument("--method", default="gradient", help="base attribution method "
                       "(default gradient)")
    bench.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                       type=method_option, help="a keyword option of the method, repeatable "
                       "(e.g. --option n_steps=20)")
    bench.add_argument("--aggregate", default="mean", choices=MAP_AGGREGATES)
    bench.add_argument("--noise-level", type=fraction, default=0.15, metavar="LEVEL",
                       help="σ as a fraction of the inputs' range (default 0.15)")
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument("--repeats", type=positive, help="timed repeats (default: enough for "
                       "about 3 s of the slowest variant, 3 to 25)")
    bench.add_argument("--variants", nargs="+", metavar="NAME", choices=VARIANTS,
                       help="rows to run (default all): " + ", ".join(VARIANTS))
    bench.add_argument("--no-captum", action="store_true", help="leave out Captum's rows")
    bench.add_argument("--no-memory", action="store_true", help="skip the peak-memory "
                       "subprocesses")
    bench.add_argument("--quick", action="store_true", help="m = 10 (unless --samples), one "
                       "repeat: a smoke run")
    bench.add_argument("--json", nargs="?", const="-", metavar="FILE", help="write the result "
                       "as JSON to FILE, or alone: JSON on stdout instead of the table")
    bench.add_argument("--samples-saved", action="store_true", help="also measure the samples "
                       "each sampling design (iid, antithetic, stratified) needs to reach the "
                       "error of i.i.d. at m, and the time that saves (several extra calls)")
    bench.add_argument("--device", help="cpu or cuda[:N] (default: cuda if available)")
    bench.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    bench.set_defaults(func=cmd_bench)


def check_writable(path: str) -> None:
    """Raises :class:`CliError` unless a file can be written at ``path`` (its folder exists and
    is writable, and the path is not a folder)."""
    target = Path(path)
    folder = target.parent
    if target.is_dir():
        raise CliError(f"cannot write {path}: it is a folder")
    if not folder.is_dir():
        raise CliError(f"cannot write {path}: no folder {folder}")
    if not os.access(folder, os.W_OK):
        raise CliError(f"cannot write {path}: folder {folder} is not writable")


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()
