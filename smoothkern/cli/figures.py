"""``smoothkern demo`` and ``smoothkern figure``: the study's figures on bundled models, and a
SmoothGrad figure for the caller's model and images."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .args import MAP_AGGREGATES, CliError, fraction, method_option, positive


def cmd_demo(args: argparse.Namespace) -> int:
    from ..studies import demo

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


FIGURE_KINDS = ("noise-levels", "samples", "noise-kinds", "aggregates")


def cmd_figure(args: argparse.Namespace) -> int:
    from .. import viz
    from ..data import load_images
    from ..models import load_named_model

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
        from ..studies.demo import sample_counts

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


def register(sub) -> None:
    """Adds ``demo`` and ``figure`` to the ``smoothkern`` subparsers."""
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


def _bar(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="fig")
