"""The study's figure: SmoothGrad maps of the same digits under every shift, for each model.

Rows come in groups, one per digit: the shifted inputs, then one row of maps per model. Each map
carries the outline of the digit's stroke (where it lies in the shifted image), so the question
"does the model still look at the stroke?" is answered at a glance.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from ...api import smooth_grad
from ...viz.heatmap import heatmap
from .stroke import stroke_masks, stroke_share


def smoothgrad_maps(models: Mapping[str, nn.Module], shifted: Mapping[str, Tensor],
                    labels: Tensor, *, n_samples: int = 50, noise_level: float = 0.15,
                    seed: int = 0) -> dict[tuple[str, str], Tensor]:
    """SmoothGrad of the true class for every (model, shift).

    Args:
        models: name → model. shifted: shift → images Tensor[K, 3, H, W].
        labels (LongTensor[K]): the classes explained.

    Returns:
        (model, shift) → Tensor[K, 3, H, W].
    """
    return {(name, shift): smooth_grad(model, x, labels, n_samples=n_samples,
                                       noise_level=noise_level, seed=seed)
            for name, model in models.items() for shift, x in shifted.items()}


def shift_maps_figure(models: Mapping[str, nn.Module], clean: Tensor,
                      shifted: Mapping[str, Tensor], labels: Tensor, example_index: Tensor, *,
                      shift_seed: int = 0, n_samples: int = 50, noise_level: float = 0.15,
                      seed: int = 0, title: str | None = None):
    """Draws inputs and SmoothGrad maps: columns = shifts, rows = (input, a map per model) per
    digit; titles say each model's prediction and the share of the map on the stroke.

    Args:
        models: name → model (e.g. {"clean": ..., "AugMix": ...}).
        clean (Tensor[K, 1, H, W]): the unshifted digits (for the stroke outlines).
        shifted: shift → Tensor[K, 3, H, W], the same digits as each test set shows them.
        labels (LongTensor[K]): their classes (the class explained).
        example_index (LongTensor[K]): their indices in the test set (the shifts' draws).
        shift_seed: the seed the test sets were shifted with.
        n_samples, noise_level, seed: SmoothGrad's settings.
        title: the figure's title.

    Returns:
        A ``matplotlib.figure.Figure``.
    """
    from matplotlib.figure import Figure

    maps = smoothgrad_maps(models, shifted, labels, n_samples=n_samples,
                           noise_level=noise_level, seed=seed)
    names, shifts = list(models), list(shifted)
    rows_per_digit = 1 + len(names)
    rows, cols = len(labels) * rows_per_digit, len(shifts)
    figure = Figure(figsize=(1.45 * cols + 0.6, 1.55 * rows + 0.7), layout="constrained")
    axes = figure.subplots(rows, cols, squeeze=False)
    with torch.no_grad():
        predictions = {(n, s): models[n](shifted[s]).argmax(1) for n in names for s in shifts}
    for c, shift in enumerate(shifts):
        masks = stroke_masks(clean, shift, shift_seed, example_index)
        heat = {n: heatmap(maps[(n, shift)]) for n in names}
        for k in range(len(labels)):
            top = k * rows_per_digit
            image = shifted[shift][k].detach().clamp(0, 1).permute(1, 2, 0).numpy()
            axes[top, c].imshow(image, interpolation="nearest")
            if k == 0:
                axes[top, c].set_title(shift.replace("_", " "), fontsize=10)
            for r, name in enumerate(names, start=1):
                ax = axes[top + r, c]
                ax.imshow(heat[name][k].numpy(), cmap="gray", vmin=0, vmax=1,
                          interpolation="nearest")
                ax.contour(masks[k].float().numpy(), levels=[0.5], colors="#00c8ff",
                           linewidths=0.7)
                predicted = int(predictions[(name, shift)][k])
                share = float(stroke_share(maps[(name, shift)][k:k + 1], masks[k:k + 1])[0])
                mark = "✓" if predicted == int(labels[k]) else "✗"
                ax.set_title(f"{predicted} {mark}  {share:.0%} on stroke", fontsize=7,
                             color="black" if mark == "✓" else "#c00000")
    for k in range(len(labels)):
        top = k * rows_per_digit
        area = float(stroke_masks(clean[k:k + 1], "original", shift_seed,
                                  example_index[k:k + 1]).float().mean())
        axes[top, 0].set_ylabel(f"digit {int(labels[k])}\n(stroke: {area:.0%} of pixels)",
                                fontsize=8)
        for r, name in enumerate(names, start=1):
            axes[top + r, 0].set_ylabel(name, fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    figure.suptitle(title or f"SmoothGrad of the true class (m = {n_samples}, "
                    f"{noise_level:.0%} noise); blue: the stroke; titles: prediction, share "
                    "of |map| on the stroke", fontsize=10)
    return figure
