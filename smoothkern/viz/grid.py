"""The figure layout of the SmoothGrad paper: rows = images, columns = image then heatmaps."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from torch import Tensor

from .heatmap import PERCENTILE, heatmap


def _image_for_display(image: Tensor):
    """image (Tensor[C, H, W]) in [0, 1] → an array imshow understands (H×W or H×W×3)."""
    image = image.detach().float().cpu().clamp(0, 1)
    return image[0].numpy() if image.shape[0] == 1 else image[:3].permute(1, 2, 0).numpy()


def attribution_grid(images: Tensor, columns: Sequence[Tensor], column_titles: Sequence[str],
                     row_labels: Sequence[str] | None = None, title: str | None = None,
                     signed: bool = False, percentile: float = PERCENTILE,
                     cell_inches: float = 1.6):
    """Draws images and their heatmaps in a grid.

    Args:
        images (Tensor[B, C, H, W]): the inputs, pixels in [0, 1].
        columns: one attribution Tensor[B, C, H, W] per heatmap column.
        column_titles: a title per heatmap column.
        row_labels: a label per image (under the image), e.g. the class explained.
        title: the figure title.
        signed: diverging signed heatmaps instead of the magnitude.
        percentile: heatmap saturation percentile.

    Returns:
        A ``matplotlib.figure.Figure`` (not registered with pyplot: no window, no global state).
    """
    from matplotlib.figure import Figure

    if len(columns) != len(column_titles):
        raise ValueError(f"{len(columns)} columns but {len(column_titles)} titles")
    rows, cols = images.shape[0], len(columns) + 1
    maps = [heatmap(c, signed=signed, percentile=percentile) for c in columns]
    header = 0.45 if title else 0.2
    figure = Figure(figsize=(cols * cell_inches, rows * cell_inches + header + 0.3),
                    layout="constrained")
    axes = figure.subplots(rows, cols, squeeze=False)
    cmap, vmin = ("RdBu_r", -1.0) if signed else ("gray", 0.0)
    # Small inputs (digits) show their pixels; large ones are downsampled smoothly, not aliased.
    interpolation = "nearest" if images.shape[-1] <= 64 else "antialiased"
    for r in range(rows):
        shown = _image_for_display(images[r])
        axes[r, 0].imshow(shown, cmap="gray" if shown.ndim == 2 else None, vmin=0, vmax=1,
                          interpolation=interpolation)
        if row_labels is not None:
            axes[r, 0].set_ylabel(row_labels[r], fontsize=8)
        for c, m in enumerate(maps, start=1):
            axes[r, c].imshow(m[r].numpy(), cmap=cmap, vmin=vmin, vmax=1.0,
                              interpolation=interpolation)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].set_title("input", fontsize=9)
    for c, text in enumerate(column_titles, start=1):
        axes[0, c].set_title(text, fontsize=9)
    if title:
        figure.suptitle(title, fontsize=10)
    return figure


def save_figure(figure, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Writes a figure as PNG (creating the folder), returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=dpi, format="png")
    return path
