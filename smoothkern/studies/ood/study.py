"""The out-of-distribution study: clean and AugMix models, trained over several seeds, tested
on every shift of :data:`smoothkern.studies.shifts.SHIFTS` (or those named).

    data (digits or MNIST; MNIST-C files when present)
      → for each trial seed: a clean model and an AugMix model (training.py)
      → accuracy on each shifted test set → mean ± std over trials (StudyResult)
"""

from __future__ import annotations

import csv
import io
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from torch import Tensor, nn

from ...data import digits_split, load_mnist
from ...data.errors import DataError
from ..mnist_c import load_mnist_c, mnist_c_corruptions
from ..shifts import EXTRA_SHIFTS, MNIST_C_SHIFTS, SHIFTS, apply_shift, to_rgb
from ..train import accuracy
from .model import rgb_digits_cnn
from .training import OPTIMISER, TrainSettings, train_trial

MODEL_KINDS = ("clean", "AugMix")
DEFAULT_EPOCHS = {"digits": 20, "mnist": 3}
TRIAL_SEEDS = (0, 1, 2)


@dataclass
class StudyData:
    """Training data and one RGB test set per shift.

    Attributes:
        name: what the data are, for the tables ("bundled digits", "MNIST").
        size: the model size to use ("digits" or "mnist", see :func:`rgb_digits_cnn`).
        x_train (Tensor[N, 3, 28, 28]), y_train (LongTensor[N]): training set.
        x_test (Tensor[M, 1, 28, 28]), y_test (LongTensor[M]): the clean test set.
        tests: shift name → (images Tensor[M', 3, 28, 28], labels LongTensor[M']).
        sources: shift name → where its images come from.
    """

    name: str
    size: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    tests: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)


def load_study_data(mnist: str | os.PathLike | None = None,
                    mnist_c: str | os.PathLike | None = None, limit: int | None = None,
                    shift_seed: int = 0, shifts: Sequence[str] | None = None) -> StudyData:
    """The study's data: the bundled digits (75 % train / 25 % test) by default.

    Args:
        mnist: a local MNIST folder: train and test on real MNIST instead.
        mnist_c: a local MNIST-C folder: its motion blur, fog and zigzag test sets replace the
            synthetic ones (which are kept for a corruption the folder lacks); without
            ``mnist``, its ``identity/`` (plain MNIST) is the training and clean test set.
        limit: at most this many training and this many test images (a quick run).
        shift_seed: the seed of the synthetic shifts.
        shifts: the test sets, by name (:data:`~smoothkern.studies.shifts.SHIFTS` or
            :data:`~smoothkern.studies.shifts.EXTRA_SHIFTS`); default every one of ``SHIFTS``.

    Raises:
        DataError: missing or malformed files.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    shifts = list(SHIFTS if shifts is None else shifts)
    unknown = [s for s in shifts if s not in SHIFTS and s not in EXTRA_SHIFTS]
    if unknown or not shifts:
        raise ValueError(f"unknown shift {unknown[0]!r}; choose from "
                         f"{', '.join([*SHIFTS, *EXTRA_SHIFTS])}" if unknown
                         else "need at least one shift")
    present = mnist_c_corruptions(mnist_c) if mnist_c is not None else []
    if mnist is not None:
        name, size = "MNIST", "mnist"
        x_train, y_train = load_mnist(mnist, "train")
        x_test, y_test = load_mnist(mnist, "test")
    elif mnist_c is not None:
        if "identity" not in present:
            raise DataError(f"{mnist_c} has no identity/ folder (plain MNIST): pass --mnist "
                            "with the MNIST files to train on")
        name, size = "MNIST (MNIST-C identity)", "mnist"
        x_train, y_train = load_mnist_c(mnist_c, "identity", "train")
        x_test, y_test = load_mnist_c(mnist_c, "identity", "test")
    else:
        name, size = "bundled digits", "digits"
        x_train, y_train, x_test, y_test = digits_split()
    if limit is not None:
        x_train, y_train = x_train[:limit], y_train[:limit]
        x_test, y_test = x_test[:limit], y_test[:limit]
    data = StudyData(name, size, to_rgb(x_train), y_train, x_test, y_test)
    for shift in shifts:
        if shift in MNIST_C_SHIFTS and shift in present:
            x, y = load_mnist_c(mnist_c, shift, "test")
            if limit is not None:
                x, y = x[:limit], y[:limit]
            data.tests[shift] = (to_rgb(x), y)
            data.sources[shift] = "MNIST-C files"
        else:
            data.tests[shift] = (apply_shift(shift, x_test, shift_seed), y_test)
            data.sources[shift] = "synthetic" if shift != "original" else "test set"
    return data


@dataclass
class StudyResult:
    """Accuracies of every model kind on every shift, one per trial.

    Attributes:
        accuracy: (model kind, shift) → accuracies (fractions), one per trial seed.
        data, settings, augmentation: what was run; seconds: wall time of training + testing.
        stroke: optional (model kind or "stroke area", shift) → mean share of SmoothGrad's
            magnitude on the stroke (:func:`smoothkern.studies.ood.stroke.stroke_share_table`), with
            ``stroke_note`` saying how it was measured.
    """

    data_name: str
    train_size: int
    test_sizes: dict[str, int]
    sources: dict[str, str]
    settings: TrainSettings
    augmentation: str
    seeds: tuple[int, ...]
    accuracy: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    seconds: float = 0.0
    stroke: dict[tuple[str, str], float] = field(default_factory=dict)
    stroke_note: str = ""

    @property
    def shifts(self) -> list[str]:
        return list(self.test_sizes)

    def summary(self, kind: str, shift: str) -> tuple[float, float]:
        """(mean, std) in percent over trials; std is the sample standard deviation (n − 1),
        0 for one trial."""
        values = [100 * a for a in self.accuracy[(kind, shift)]]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        return statistics.fmean(values), spread

    def markdown(self) -> str:
        """The table: a row per shift, a column per model kind, "mean ± std" in percent."""
        head = (f"Accuracy (%), mean ± std over {len(self.seeds)} trial(s) (seeds "
                f"{', '.join(map(str, self.seeds))}); {self.data_name}: {self.train_size} "
                f"training images, {self.settings.epochs} epochs, Adam lr {self.settings.lr:g}, "
                f"batch {self.settings.batch_size}; AugMix model: {self.augmentation}.")
        lines = [head, "", "| shift | test images | source | clean | AugMix |",
                 "|---|---:|---|---:|---:|"]
        for shift in self.shifts:
            cells = [f"{m:.1f} ± {s:.1f}" for m, s in (self.summary(k, shift)
                                                         for k in MODEL_KINDS)]
            lines.append(f"| {shift} | {self.test_sizes[shift]} | {self.sources[shift]} | "
                         f"{cells[0]} | {cells[1]} |")
        if self.stroke:
            lines += ["", f"Share of |SmoothGrad| on the stroke (%), {self.stroke_note}; "
                      "stroke area: the share of the pixels (what an even map would get).", "",
                      "| shift | stroke area | clean | AugMix |", "|---|---:|---:|---:|"]
            for shift in self.shifts:
                cells = [f"{100 * self.stroke[(k, shift)]:.0f}"
                         for k in ("stroke area", *MODEL_KINDS)]
                lines.append(f"| {shift} | {' | '.join(cells)} |")
        return "\n".join(lines) + "\n"

    def csv(self) -> str:
        """One row per (model, shift): mean and std in percent, then each trial's accuracy."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["model", "shift", "source", "test_images", "trials", "mean_percent",
                         "std_percent"] + [f"seed_{s}" for s in self.seeds])
        for kind in MODEL_KINDS:
            for shift in self.shifts:
                mean, std = self.summary(kind, shift)
                writer.writerow([kind, shift, self.sources[shift], self.test_sizes[shift],
                                 len(self.seeds), f"{mean:.2f}", f"{std:.2f}"]
                                + [f"{100 * a:.2f}" for a in self.accuracy[(kind, shift)]])
        return out.getvalue()

    def stroke_csv(self) -> str:
        """One row per shift: the stroke's area and each model's stroke share, in percent."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["shift", "stroke_area_percent"]
                        + [f"{k.lower()}_share_percent" for k in MODEL_KINDS])
        for shift in self.shifts:
            writer.writerow([shift] + [f"{100 * self.stroke[(k, shift)]:.2f}"
                                       for k in ("stroke area", *MODEL_KINDS)])
        return out.getvalue()

    def write(self, folder: str | os.PathLike) -> list[Path]:
        """Writes ``ood_accuracy.md`` and ``ood_accuracy.csv`` (and ``ood_stroke_share.csv``
        when the stroke shares were measured) into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = [folder / "ood_accuracy.md", folder / "ood_accuracy.csv"]
        paths[0].write_text(self.markdown())
        paths[1].write_text(self.csv())
        if self.stroke:
            paths.append(folder / "ood_stroke_share.csv")
            paths[2].write_text(self.stroke_csv())
        return paths


def run_study(data: StudyData, settings: TrainSettings | None = None, *,
              seeds: tuple[int, ...] = TRIAL_SEEDS, augmentation: str = "augmix",
              progress: bool = False,
              report: Callable[[str], None] | None = None,
              ) -> tuple[StudyResult, dict[str, nn.Module]]:
    """Trains a clean and an AugMix model per seed and tests both on every shift.

    Args:
        data: from :func:`load_study_data`.
        settings: epochs, batch size, learning rate (its augmentation is ignored); default
            :data:`OPTIMISER` with the data's default epochs.
        seeds: one trial per seed (initial weights, batch order, AugMix draws).
        augmentation: the AugMix model's: "augmix" or "augmix-jsd".
        progress: tqdm bars per epoch.
        report: called with a line per trained model (e.g. ``print``).

    Returns:
        The result, and the first trial's models by kind (for the figure).
    """
    if augmentation not in ("augmix", "augmix-jsd"):
        raise ValueError(f"augmentation must be 'augmix' or 'augmix-jsd', got {augmentation!r}")
    if not seeds:
        raise ValueError("need at least one trial seed")
    if settings is None:
        settings = TrainSettings(epochs=DEFAULT_EPOCHS[data.size])
    result = StudyResult(data.name, len(data.x_train),
                         {s: len(y) for s, (_, y) in data.tests.items()}, dict(data.sources),
                         settings, augmentation, tuple(seeds))
    first: dict[str, nn.Module] = {}
    start = time.perf_counter()
    for trial, seed in enumerate(seeds, start=1):
        for kind in MODEL_KINDS:
            trained = TrainSettings(settings.epochs, settings.batch_size, settings.lr,
                                    "none" if kind == "clean" else augmentation,
                                    settings.jsd_weight)
            model = train_trial(lambda: rgb_digits_cnn(data.size), data.x_train, data.y_train,
                                trained, seed=seed, progress=progress,
                                desc=f"{kind} trial {trial}/{len(seeds)}")
            for shift, (x, y) in data.tests.items():
                result.accuracy.setdefault((kind, shift), []).append(accuracy(model, x, y))
            first.setdefault(kind, model)
            if report is not None:
                accs = ", ".join(f"{s} {100 * result.accuracy[(kind, s)][-1]:.1f}"
                                 for s in data.tests)
                report(f"{kind} trial {trial}/{len(seeds)} (seed {seed}): {accs}")
    result.seconds = time.perf_counter() - start
    return result, first


__all__ = ["DEFAULT_EPOCHS", "MODEL_KINDS", "OPTIMISER", "StudyData", "StudyResult",
           "TRIAL_SEEDS", "load_study_data", "run_study"]
