"""``smoothkern ood``: the out-of-distribution study (registered by :mod:`smoothkern.cli`).

Only argparse is imported here: torch, torchvision and matplotlib load when the command runs.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ...cli.args import positive

FIGURE_DIGITS = (0, 3, 7)  # the classes shown in the figure (one test digit each)
DIGITS_EPOCHS, MNIST_EPOCHS = 20, 3  # also in study.DEFAULT_EPOCHS
SHARE_SAMPLES = 20  # SmoothGrad samples for the stroke-share table (100 digits × 7 shifts × 2)


def register(sub: argparse._SubParsersAction) -> None:
    """Adds ``ood`` to the ``smoothkern`` parser."""
    ood = sub.add_parser(
        "ood", help="out-of-distribution study on digits: clean vs AugMix models under shifts",
        description="Trains the MNIST CNN (RGB input) without and with AugMix over several "
        "seeds on the bundled digits (or real MNIST), tests it on the original, coloured, "
        "weighted-grayscale and randomly resized-cropped test sets (the course tutorial's "
        "gen_colored, gen_weighted_grayscale and rr) and on MNIST-C's motion blur, fog and zigzag, "
        "and writes the accuracy table (mean ± std; Markdown and CSV), the share of "
        "SmoothGrad's magnitude on the digits' strokes, and a figure of SmoothGrad maps of "
        "the same digits under each shift for both models.")
    ood.add_argument("--out", required=True, help="output folder")
    ood.add_argument("--mnist", metavar="DIR", help="a local MNIST folder (IDX files): train "
                     "and test on real MNIST instead of the bundled digits")
    ood.add_argument("--mnist-c", metavar="DIR", help="a local MNIST-C folder (per-corruption "
                     ".npy files): its motion blur, fog and zigzag test sets replace the "
                     "synthetic ones; alone, its identity/ set is the training data")
    ood.add_argument("--trials", type=positive, default=3, help="trials (seeds 0..N-1, "
                     "default 3)")
    ood.add_argument("--epochs", type=positive, help=f"training epochs (default "
                     f"{DIGITS_EPOCHS} on the digits, {MNIST_EPOCHS} on MNIST)")
    ood.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate (default "
                     "1e-3)")
    ood.add_argument("--batch-size", type=positive, default=64, help="default 64")
    ood.add_argument("--jsd", action="store_true", help="train the AugMix model with the "
                     "paper's Jensen-Shannon consistency loss (two AugMix views per image)")
    ood.add_argument("--limit", type=positive, metavar="N", help="use at most N training and "
                     "N test images (a quick run)")
    ood.add_argument("--samples", type=positive, default=50, help="SmoothGrad noise samples "
                     "for the figure (default 50)")
    ood.add_argument("--share-examples", type=int, default=100, metavar="N", help="measure "
                     "the share of SmoothGrad's magnitude on the stroke over the first N test "
                     "digits per shift and model (default 100, m = 20; 0 skips it)")
    ood.add_argument("--shift-seed", type=int, default=0, help="seed of the synthetic shifts")
    ood.add_argument("--shifts", nargs="+", metavar="NAME", help="the test sets (default: "
                     "original coloured weighted_grayscale random_resized_crop motion_blur fog "
                     "zigzag; extras: coloured_grayscale rotated, the study's earlier readings)")
    ood.add_argument("--threads", type=positive, help="torch CPU threads (default: torch's "
                     "choice; 1 is fastest on a busy machine)")
    ood.add_argument("--quiet", action="store_true", help="no progress bars or trial lines")
    ood.set_defaults(func=run_command)


def run_command(args: argparse.Namespace) -> int:
    import torch

    from ...viz.grid import save_figure
    from . import study
    from .figure import shift_maps_figure
    from .stroke import stroke_share_table
    from .training import TrainSettings

    if args.shift_seed < 0:
        raise ValueError(f"--shift-seed must be >= 0, got {args.shift_seed}")
    if args.share_examples < 0:
        raise ValueError(f"--share-examples must be >= 0, got {args.share_examples}")
    if not args.lr > 0:
        raise ValueError(f"--lr must be > 0, got {args.lr}")
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    start = time.perf_counter()
    data = study.load_study_data(args.mnist, args.mnist_c, args.limit, args.shift_seed,
                                 args.shifts)
    epochs = args.epochs or (DIGITS_EPOCHS if data.size == "digits" else MNIST_EPOCHS)
    settings = TrainSettings(epochs=epochs, batch_size=args.batch_size, lr=args.lr)
    report = None if args.quiet else _report
    result, models = study.run_study(
        data, settings, seeds=tuple(range(args.trials)),
        augmentation="augmix-jsd" if args.jsd else "augmix", progress=not args.quiet,
        report=report)
    if args.share_examples:
        result.stroke = stroke_share_table(models, data.x_test, data.tests,
                                           examples=args.share_examples,
                                           shift_seed=args.shift_seed, n_samples=SHARE_SAMPLES)
        count = min(args.share_examples, len(data.y_test))
        result.stroke_note = (f"trial 1's models, the first {count} test digits, SmoothGrad of "
                              f"the true class (m = {SHARE_SAMPLES}, 15 % noise)")
    paths = result.write(out)
    index = _figure_digits(data.y_test)
    shifted = {shift: x[index] for shift, (x, _) in data.tests.items()
               if data.sources[shift] != "MNIST-C files" or len(x) == len(data.y_test)}
    figure = shift_maps_figure(models, data.x_test[index], shifted, data.y_test[index], index,
                               shift_seed=args.shift_seed, n_samples=args.samples,
                               title=f"{data.name}: SmoothGrad of the true class (m = "
                               f"{args.samples}, 15 % noise), trial 1's models; blue: the "
                               "stroke; titles: prediction, share of |map| on the stroke")
    paths.append(save_figure(figure, out / "ood_maps.png"))
    print(result.markdown())
    for path in paths:
        print(f"wrote {path}")
    print(f"ood finished in {time.perf_counter() - start:.1f} s")
    return 0


def _figure_digits(labels):
    """Test-set indices of one digit per class in FIGURE_DIGITS (the first of each present;
    any first digits when a limited run lacks them)."""
    import torch

    picks = [int((labels == d).nonzero()[0]) for d in FIGURE_DIGITS if (labels == d).any()]
    if len(picks) < len(FIGURE_DIGITS):
        picks = list(range(min(len(FIGURE_DIGITS), len(labels))))
    return torch.tensor(picks)


def _report(line: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(line)

