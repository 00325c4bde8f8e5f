"""The demo behind ``smoothkern demo``: the assignment's figures on bundled models and data."""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from ..api import smooth_grad
from ..ops.backends import resolve

DEMO_DIGITS = (0, 2, 3, 5, 7, 9)
DEMO_PHOTOS = ("coffee", "astronaut")  # two: a 224×224 ResNet18 is slow on 2 CPU cores
PHOTO_MODEL = "resnet18"
# (file names written, a thunk that draws them)
Step = tuple[tuple[str, ...], Callable[[], object]]


def digits_inputs() -> tuple[nn.Module, Tensor, Tensor, list[str]]:
    """The bundled digits CNN, one held-out digit per class in DEMO_DIGITS, row labels."""
    from ..data import digit_examples
    from ..models import digits_cnn
    from ..viz import predicted_labels

    model = digits_cnn()
    images, labels = digit_examples()
    images, labels = images[list(DEMO_DIGITS)], labels[list(DEMO_DIGITS)]
    rows = [f"digit {d}, {p}" for d, p in zip(labels.tolist(), predicted_labels(model, images))]
    return model, images, labels, rows


def sample_counts(n_samples: int) -> tuple[int, ...]:
    """The paper's m ∈ {3, 5, 10, 20, 50}, cut at ``n_samples`` (which is always included)."""
    from ..viz import SAMPLE_COUNTS

    return tuple(c for c in SAMPLE_COUNTS if c < n_samples) + (n_samples,)


def digits_figures(out: Path, n_samples: int, progress: bool) -> list[Step]:
    """(file names, thunk) per digits figure; a thunk draws and writes its PNG files."""
    from .. import viz
    from ..models.zoo import BUNDLED_DIGITS_ACCURACY

    model, images, labels, rows = digits_inputs()
    common = dict(row_labels=rows, n_samples=n_samples, progress=progress)
    name = f"digits CNN ({BUNDLED_DIGITS_ACCURACY:.1%} held-out accuracy)"
    return [
        (("digits_noise_levels.png", "digits_noise_levels_signed.png"), lambda: _both_signs(
            model, images, labels, rows, n_samples, progress, out, name)),
        (("digits_sample_counts.png",), lambda: viz.sample_count_figure(
            model, images, labels, counts=sample_counts(n_samples), row_labels=rows,
            progress=progress, out=out / "digits_sample_counts.png",
            title=f"SmoothGrad vs sample count m (σ = 15 %), one pass: {name}")),
        (("digits_noise_kinds.png",), lambda: viz.noise_kind_figure(
            model, images, labels, out=out / "digits_noise_kinds.png", **common,
            title=f"Gaussian vs uniform noise (same σ), m = {n_samples}: {name}")),
        (("digits_aggregates.png",), lambda: viz.aggregate_figure(
            model, images, labels, out=out / "digits_aggregates.png", **common,
            title=f"aggregates of the same samples (σ = 15 %), m = {n_samples}: {name}")),
    ]


def _both_signs(model, images, labels, rows, n_samples, progress, out, name) -> None:
    """The noise-level figure as magnitude and as signed map, from one sweep."""
    from .. import viz

    levels = viz.NOISE_LEVELS
    maps = list(smooth_grad(model, images, labels, n_samples=n_samples, noise_level=levels,
                            progress=progress))               # S × Tensor[B, 1, 28, 28]
    titles = viz.noise_level_titles(levels)
    for signed, suffix, what in ((False, "", "SmoothGrad"),
                                 (True, "_signed", "signed SmoothGrad (red +, blue −)")):
        figure = viz.attribution_grid(images, maps, titles, rows, signed=signed, title=(
            f"{what} vs noise level (σ / pixel range), m = {n_samples}: {name}"))
        viz.save_figure(figure, out / f"digits_noise_levels{suffix}.png")


def photo_figure(out: Path, n_samples: int, progress: bool) -> Step | None:
    """The photos through a randomly initialised ResNet18; None without torchvision."""
    if importlib.util.find_spec("torchvision") is None:
        return None
    from .. import viz
    from ..data import load_photos
    from ..models import imagenet_model

    torch.manual_seed(0)  # the random weights, so the figure is reproducible
    model = imagenet_model(PHOTO_MODEL)
    images = load_photos(DEMO_PHOTOS)
    title = (f"{PHOTO_MODEL} with RANDOM weights (no pretrained weights offline: a sanity "
             f"check, not an explanation), m = {n_samples}")
    path = out / "photos_noise_levels.png"
    return (("photos_noise_levels.png",), lambda: viz.noise_level_figure(
        model, images, None, n_samples=n_samples, progress=progress, out=path, title=title,
        row_labels=list(DEMO_PHOTOS)))


def benchmark_line(n_samples: int) -> str:
    """Times the naive loop against the batched engine on the demo digits, same inputs."""
    model, images, labels, _ = digits_inputs()
    run = lambda backend: smooth_grad(model, images, labels, n_samples=n_samples,  # noqa: E731
                                      backend=backend)
    run("auto")  # warm-up: first-call allocations would count against whichever runs first
    times = {"loop": float("inf"), "auto": float("inf")}
    for _ in range(2):  # best of two, interleaved: robust to other load on the machine
        for backend in times:
            start = time.perf_counter()
            run(backend)
            times[backend] = min(times[backend], time.perf_counter() - start)
    chosen = resolve("auto", images.device).name
    return (f"benchmark (digits CNN, {len(images)} images, m = {n_samples}, "
            f"{torch.get_num_threads()} threads): loop {times['loop']:.3f} s, batched "
            f"(auto → {chosen}) {times['auto']:.3f} s, {times['loop'] / times['auto']:.1f}x")
