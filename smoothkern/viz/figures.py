"""The assignment's figures: compute with one ``smooth_grad`` call each, then draw the grid.

Each function returns a matplotlib Figure; pass ``out=`` to also write a PNG.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..api import smooth_grad
from ..noise.kinds import NOISE_KIND_NAMES
from .grid import attribution_grid, save_figure

NOISE_LEVELS = (0.0, 0.05, 0.10, 0.20, 0.30, 0.50)  # the SmoothGrad paper's Figure 3
SAMPLE_COUNTS = (3, 5, 10, 20, 50)
NOISE_KINDS = NOISE_KIND_NAMES  # every input noise kind, side by side
AGGREGATES = ("mean", "abs", "sq", "var", "geomean")
AGGREGATE_TITLES = {"mean": "SmoothGrad", "abs": "mean |g|", "sq": "SmoothGrad²",
                    "var": "VarGrad", "geomean": "geomean |g|"}


def _finish(figure, out: str | os.PathLike | None):
    if out is not None:
        save_figure(figure, out)
    return figure


def noise_level_figure(model: nn.Module, images: Tensor, target=None, *,
                       noise_levels: Sequence[float] = NOISE_LEVELS, n_samples: int = 50,
                       row_labels: Sequence[str] | None = None, title: str | None = None,
                       signed: bool = False, out: str | os.PathLike | None = None,
                       **options):
    """Figure 3 of the SmoothGrad paper: one column per noise level, all from one sweep.

    Args:
        model: classifier taking ``images``.
        images (Tensor[B, C, H, W]): pixels in [0, 1].
        target: class per image (None: the predicted class).
        noise_levels: σ as fractions of each image's range; 0 is the plain gradient.
        n_samples: m.
        options: further ``smooth_grad`` arguments (method, noise, aggregate, seed, progress,
            backend, ...).
    """
    levels = tuple(float(v) for v in noise_levels)
    maps = smooth_grad(model, images, target, n_samples=n_samples, noise_level=levels,
                       **options)                             # [S, B, C, H, W]
    figure = attribution_grid(images, list(maps), noise_level_titles(levels), row_labels, title,
                              signed)
    return _finish(figure, out)


def noise_level_titles(levels: Sequence[float]) -> list[str]:
    """Column titles of the noise-level figure: '0% (gradient)', 'σ = 5%', ..."""
    return [f"σ = {v:.0%}" if v else "σ = 0 (no noise)" for v in levels]


def sample_count_figure(model: nn.Module, images: Tensor, target=None, *,
                        counts: Sequence[int] = SAMPLE_COUNTS, noise_level: float = 0.15,
                        row_labels: Sequence[str] | None = None, title: str | None = None,
                        signed: bool = False, out: str | os.PathLike | None = None, **options):
    """One column per sample count m, all snapshots of a single pass over max(counts) samples."""
    counts = tuple(sorted(int(c) for c in counts))
    maps = smooth_grad(model, images, target, n_samples=counts[-1], noise_level=noise_level,
                       snapshots=counts, **options)           # [P, B, C, H, W]
    figure = attribution_grid(images, list(maps), [f"m = {c}" for c in counts], row_labels,
                              title, signed)
    return _finish(figure, out)


def noise_kind_figure(model: nn.Module, images: Tensor, target=None, *,
                      kinds: Sequence[str] = NOISE_KINDS, noise_levels: Sequence[float] = (
                          0.10, 0.20), n_samples: int = 50,
                      row_labels: Sequence[str] | None = None, title: str | None = None,
                      signed: bool = False, out: str | os.PathLike | None = None, **options):
    """Gaussian and uniform noise (same standard deviation) side by side, at a few levels."""
    levels = tuple(float(v) for v in noise_levels)
    columns, titles = [], []
    for kind in kinds:
        maps = smooth_grad(model, images, target, n_samples=n_samples, noise_level=levels,
                           noise=kind, **options)             # [S, B, C, H, W]
        columns += list(maps)
        titles += [f"{kind} {v:.0%}" for v in levels]
    figure = attribution_grid(images, columns, titles, row_labels, title, signed)
    return _finish(figure, out)


def aggregate_figure(model: nn.Module, images: Tensor, target=None, *,
                     aggregates: Sequence[str] = AGGREGATES, noise_level: float = 0.15,
                     n_samples: int = 50, row_labels: Sequence[str] | None = None,
                     title: str | None = None, signed: bool = False,
                     out: str | os.PathLike | None = None, **options):
    """The aggregates (mean, abs, sq, var, geomean) of the same samples side by side."""
    maps = smooth_grad(model, images, target, n_samples=n_samples, noise_level=noise_level,
                       aggregate=tuple(aggregates), **options)   # {name: [B, C, H, W]}
    titles = [AGGREGATE_TITLES.get(a, a) for a in aggregates]
    figure = attribution_grid(images, [maps[a] for a in aggregates], titles, row_labels, title,
                              signed)
    return _finish(figure, out)


def predicted_labels(model: nn.Module, images: Tensor,
                     classes: Sequence[str] | None = None) -> list[str]:
    """'pred <class> (<prob>)' per image, for row labels."""
    with torch.no_grad():
        probs = model(images).softmax(1)
    conf, pred = probs.max(1)
    name = (lambda i: classes[i]) if classes else str
    return [f"pred {name(p)} ({c:.0%})" if c >= 0.01 else f"pred {name(p)} ({c:.1%})"
            for p, c in zip(pred.tolist(), conf.tolist())]
