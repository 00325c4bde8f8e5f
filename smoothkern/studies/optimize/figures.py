"""The assignment's figures: fooling images in four columns, class visualisations in a grid.

Figures are ``matplotlib.figure.Figure`` objects drawn off-screen (no pyplot state); save them
with :func:`smoothkern.viz.save_figure`.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from .fooling import FoolingResult
from .visualization import ClassVisualization


def _display(image: Tensor, rescale: bool = False):
    """image (Tensor[C, H, W]) → an array for imshow (H×W or H×W×3) in [0, 1]."""
    image = image.detach().float().cpu()
    if rescale:  # the assignment's deprocess(rescale=True): min..max → 0..1
        low, high = image.min(), image.max()
        image = (image - low) / (high - low).clamp_min(1e-12)
    image = image.clamp(0, 1)
    return image[0].numpy() if image.shape[0] == 1 else image[:3].permute(1, 2, 0).numpy()


def _name(index: int, class_names: Sequence[str] | None) -> str:
    return str(index) if class_names is None else str(class_names[index])


def _show(ax, image: Tensor, rescale: bool = False) -> None:
    shown = _display(image, rescale)
    interpolation = "nearest" if image.shape[-1] <= 64 else "antialiased"
    ax.imshow(shown, cmap="gray" if shown.ndim == 2 else None, vmin=0, vmax=1,
              interpolation=interpolation)
    ax.set_xticks([])
    ax.set_yticks([])


def fooling_figure(result: FoolingResult, class_names: Sequence[str] | None = None,
                   cell_inches: float = 1.7, title: str | None = None):
    """The assignment's layout, one row per image: the image (titled with the model's class),
    the fooling image (the target and the steps it took), the difference and the magnified
    difference, both drawn around mid-gray (gray: unchanged; clipped to the display range).

    Args:
        result: from :func:`fooling_images`.
        class_names: names by class index (default: the indices).

    Returns:
        A ``matplotlib.figure.Figure``.
    """
    from matplotlib.figure import Figure

    rows = result.images.shape[0]
    header = 0.45 if title else 0.15
    figure = Figure(figsize=(4 * cell_inches, rows * (cell_inches + 0.25) + header),
                    layout="constrained")
    axes = figure.subplots(rows, 4, squeeze=False)
    factor = f"{result.magnification:g}"
    for r in range(rows):
        target = int(result.targets[r])
        outcome = f"{int(result.steps[r])} steps" if bool(result.success[r]) else \
            f"not fooled in {int(result.steps[r])}"
        before = _name(int(result.original_predictions[r]), class_names)
        cells = ((result.originals[r], before),
                 (result.images[r], f"→ {_name(target, class_names)} ({outcome})"),
                 (0.5 + result.difference[r], "difference"),
                 (0.5 + result.magnified[r], f"difference ×{factor}"))
        for c, (image, label) in enumerate(cells):
            _show(axes[r, c], image)
            axes[r, c].set_title(label, fontsize=8)
    if title:
        figure.suptitle(title, fontsize=10)
    return figure


def class_visualization_figure(result: ClassVisualization,
                               class_names: Sequence[str] | None = None, columns: int = 5,
                               rescale: bool = True, cell_inches: float = 1.6,
                               title: str | None = None):
    """The images of :func:`class_visualization` in a grid, each titled with its class, its
    final raw score and (when it differs) the model's predicted class.

    Args:
        result: from :func:`class_visualization`.
        class_names: names by class index (default: the indices).
        columns: images per row.
        rescale: stretch each image's min..max to the display range, as the assignment's
            ``deprocess`` does.

    Returns:
        A ``matplotlib.figure.Figure``.
    """
    from matplotlib.figure import Figure

    if isinstance(columns, bool) or not isinstance(columns, int) or columns < 1:
        raise ValueError(f"columns must be a positive int, got {columns!r}")
    count = result.images.shape[0]
    columns = min(columns, count)
    rows = -(-count // columns)
    header = 0.45 if title else 0.15
    figure = Figure(figsize=(columns * cell_inches, rows * (cell_inches + 0.3) + header),
                    layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k >= count:
            ax.set_axis_off()
            continue
        _show(ax, result.images[k], rescale)
        target, predicted = int(result.targets[k]), int(result.predictions[k])
        label = f"{_name(target, class_names)}: {float(result.final_scores[k]):.3g}"
        if predicted != target:
            label += f"\n(predicted {_name(predicted, class_names)})"
        ax.set_title(label, fontsize=8)
    if title:
        figure.suptitle(title, fontsize=10)
    return figure
