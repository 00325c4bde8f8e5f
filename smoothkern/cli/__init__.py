"""The ``smoothkern`` command: ``demo``, ``figure`` and ``bench``.

Errors a user can cause (paths, image files, model names, options) end in one line on stderr
and exit status 2; ``SMOOTHKERN_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .cli_args import fraction, method_option, positive

EXIT_USAGE = 2
# The aggregates that are maps (smoothkern.stats.AGGREGATES + "sem"; "count" is a number per
# example), spelled out so that --help does not import torch.
MAP_AGGREGATES = ("mean", "abs", "sq", "var", "geomean", "sem")
BENCH_SAMPLES = 50
# smoothkern.bench.VARIANTS, spelled out so that --help does not import torch.
BENCH_VARIANTS = ("loop", "smoothkern", "smoothkern-bf16", "smoothkern-fp16", "captum",
                  "captum-bs10")


class CliError(Exception):
    """An error to report in one line, without a traceback."""


# ----------------------------------------------------------------------------------------------
# demo


def cmd_demo(args: argparse.Namespace) -> int:
    from .studies import demo

    out = Path(args.out)
    progress = not args.quiet
    start = time.perf_counter()
    steps = demo.digits_figures(out, args.samples, progress)
    photo = None if args.no_photos else demo.photo_figure(out, args.photo_samples, progress)
    if photo is not None:
        steps.append(photo)
    bar = _bar(len(steps), "figures", progress)
    for names, draw in steps:
        if bar:
            bar.set_postfix_str(names[0])
        draw()
        if bar:
            bar.update(1)
    if bar:
        bar.close()
    for names, _ in steps:
        for name in names:
            print(f"wrote {out / name}")
    if photo is None and not args.no_photos:
        print("photos skipped: torchvision is not installed (pip install 'smoothkern[vision]')")
    print(demo.benchmark_line(args.samples))
    print(f"demo finished in {time.perf_counter() - start:.1f} s")
    return 0


# ----------------------------------------------------------------------------------------------
# figure

FIGURE_KINDS = ("noise-levels", "samples", "noise-kinds", "aggregates")


def cmd_figure(args: argparse.Namespace) -> int:
    from . import viz
    from .data import load_images
    from .models import load_named_model

    model, spec = load_named_model(args.model, args.weights)
    images = load_images(args.images, channels=spec.channels, size=spec.size)
    labels = viz.predicted_labels(model, images, spec.classes)
    rows = [f"{Path(p).name}\n{label}" for p, label in zip(args.images, labels)]
    target = args.target
    if target is not None and len(target) == 1:
        target = target[0]
    elif target is not None and len(target) != len(images):
        raise CliError(f"--target needs 1 or {len(images)} classes, got {len(target)}")
    weights = args.weights or ("bundled" if args.model == "digits" else "random weights")
    title = args.title or f"{args.model} ({Path(weights).name}), {args.method}"
    options = dict(row_labels=rows, title=title, signed=args.signed, method=args.method,
                   seed=args.seed, progress=not args.quiet, backend=args.backend,
                   **dict(args.option))
    m, levels = args.samples, args.noise_levels
    if args.kind == "noise-levels":
        figure = viz.noise_level_figure(model, images, target,
                                        noise_levels=levels or viz.NOISE_LEVELS,
                                        n_samples=m, noise=args.noise,
                                        aggregate=args.aggregate, **options)
    elif args.kind == "samples":
        from .studies.demo import sample_counts

        figure = viz.sample_count_figure(model, images, target, counts=sample_counts(m),
                                         noise_level=levels[-1] if levels else 0.15,
                                         noise=args.noise,
                                         aggregate=args.aggregate, **options)
    elif args.kind == "noise-kinds":
        figure = viz.noise_kind_figure(model, images, target,
                                       noise_levels=levels or (0.10, 0.20),
                                       n_samples=m, aggregate=args.aggregate, **options)
    else:
        figure = viz.aggregate_figure(model, images, target,
                                      noise_level=levels[-1] if levels else 0.15,
                                      n_samples=m, noise=args.noise, **options)
    path = viz.save_figure(figure, args.out)
    print(f"wrote {path}")
    return 0


# ----------------------------------------------------------------------------------------------
# bench


def cmd_bench(args: argparse.Namespace) -> int:
    from . import bench

    n_samples, repeats = args.samples, args.repeats
    if args.quick:  # a smoke run: explicit --samples/--repeats still win
        n_samples = 10 if args.samples == BENCH_SAMPLES else args.samples
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
    if args.json == "-":
        print(result.to_json())
        return 0
    print(result.table())
    if args.json:
        path = Path(args.json)
        try:
            path.write_text(result.to_json() + "\n")
        except OSError as err:
            raise CliError(f"cannot write {path}: {err.strerror or err}") from None
        print(f"wrote {path}")
    return 0


# ----------------------------------------------------------------------------------------------
# parser and entry point


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smoothkern", description="Fast SmoothGrad: figures, demo and benchmarks.")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"smoothkern {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = sub.add_parser("demo", help="the assignment's figures on bundled models and data",
                          description="Writes the SmoothGrad figures (noise levels, sample "
                          "counts, noise kinds, aggregates) for the bundled digits CNN on real "
                          "digits, and photos through a random-weight ResNet18 if torchvision "
                          "is installed; prints a loop-vs-batched timing.")
    demo.add_argument("--out", default="smoothkern-demo", help="output folder (default: "
                      "./smoothkern-demo)")
    demo.add_argument("--samples", type=positive, default=50, help="noise samples m for the "
                      "digits figures (default 50)")
    demo.add_argument("--photo-samples", type=positive, default=8, help="m for the photo "
                      "figure (default 8: a 224×224 ResNet18 is slow on a CPU)")
    demo.add_argument("--no-photos", action="store_true", help="skip the ImageNet-size figure")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=cmd_demo)

    fig = sub.add_parser("figure", help="a SmoothGrad figure for your model and images",
                         description="Draws rows = images, columns = the image then one "
                         "heatmap per setting, and writes it as PNG.")
    fig.add_argument("--model", required=True, help="digits, mnist, cifar10_resnet18, or a "
                     "torchvision architecture (resnet18, resnet50, squeezenet1_1, vgg16, ...)")
    fig.add_argument("--weights", help="local state dict file (optional for digits: bundled; "
                     "without it other models have random weights)")
    fig.add_argument("--images", nargs="+", required=True, metavar="FILE",
                     help="image files (resized and centre-cropped to the model's input)")
    fig.add_argument("--out", required=True, metavar="FILE.png", help="output PNG")
    fig.add_argument("--kind", choices=FIGURE_KINDS, default="noise-levels",
                     help="columns: noise levels (default), sample counts, Gaussian vs "
                     "uniform, or aggregates")
    fig.add_argument("--noise-levels", type=fraction, nargs="+", metavar="LEVEL",
                     help="σ as fractions of the pixel range, or percentages (10%%); default "
                     "0 .05 .1 .2 .3 .5 for noise-levels, .1 .2 for noise-kinds, .15 for "
                     "samples and aggregates (which use the last level given)")
    fig.add_argument("--samples", type=positive, default=50, help="noise samples m (default 50)")
    fig.add_argument("--method", default="gradient", help="base attribution method (default "
                     "gradient)")
    fig.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                     type=method_option, help="a keyword option of the method, repeatable, "
                     "e.g. --option layer=net.features.8 --option upsample=True (grad_cam)")
    fig.add_argument("--aggregate", default="mean", choices=MAP_AGGREGATES)
    fig.add_argument("--noise", default="gaussian", choices=("gaussian", "uniform"))
    fig.add_argument("--target", type=int, nargs="+", help="class to explain (one, or one per "
                     "image; default: the predicted class)")
    fig.add_argument("--signed", action="store_true", help="diverging signed heatmaps")
    fig.add_argument("--seed", type=int, default=0)
    fig.add_argument("--backend", default="auto")
    fig.add_argument("--title")
    fig.add_argument("--quiet", action="store_true", help="no progress bars")
    fig.set_defaults(func=cmd_figure)

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
    bench.add_argument("--samples", type=positive, default=BENCH_SAMPLES,
                       help=f"noise samples m (default {BENCH_SAMPLES}; 10 with --quick)")
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
    bench.add_argument("--variants", nargs="+", metavar="NAME", choices=BENCH_VARIANTS,
                       help="rows to run (default all): " + ", ".join(BENCH_VARIANTS))
    bench.add_argument("--no-captum", action="store_true", help="leave out Captum's rows")
    bench.add_argument("--no-memory", action="store_true", help="skip the peak-memory "
                       "subprocesses")
    bench.add_argument("--quick", action="store_true", help="m = 10 (unless --samples), one "
                       "repeat: a smoke run")
    bench.add_argument("--json", nargs="?", const="-", metavar="FILE", help="write the result "
                       "as JSON to FILE, or alone: JSON on stdout instead of the table")
    bench.add_argument("--device", help="cpu or cuda[:N] (default: cuda if available)")
    bench.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    bench.set_defaults(func=cmd_bench)

    # Commands of their own packages (imports there stay light: heavy ones happen when run).
    from .dataset.command import register as register_dataset_commands
    from .studies.ood.command import register as register_ood_command

    register_dataset_commands(sub)
    register_ood_command(sub)
    return parser


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()








def _bar(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="fig")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``smoothkern`` and ``python -m smoothkern``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if os.environ.get("SMOOTHKERN_DEBUG"):
        return args.func(args)
    # Pillow logs what it finds wrong in a damaged file (e.g. a TIFF's samples per pixel) before
    # raising; with no logging set up, Python prints that record as a second stderr line.
    logging.getLogger("PIL").addHandler(logging.NullHandler())
    from .data import DataError
    from .dataset.distributed import RankFailed
    from .models import WeightsError

    try:
        return args.func(args)
    except (CliError, DataError, WeightsError, RankFailed, ValueError, TypeError, ImportError,
            OSError) as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"smoothkern {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
