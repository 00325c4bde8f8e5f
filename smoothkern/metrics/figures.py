"""Figures of the faithfulness metrics and sanity checks (matplotlib, drawn off-screen).

Each function returns a matplotlib Figure; pass ``out=`` to also write a PNG.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from torch import Tensor

from ..viz.grid import attribution_grid, save_figure
from .faithfulness import PerturbationCurve
from .randomization import RandomizationResult

MEASURE_TITLES = {"spearman": "Spearman rank correlation", "ssim": "SSIM",
                  "top_k": "top-k overlap"}


def _finish(figure, out: str | os.PathLike | None):
    if out is not None:
        save_figure(figure, out)
    return figure


def perturbation_curve_figure(curves: Mapping[str, PerturbationCurve | Sequence[PerturbationCurve]],
                              *,
                              title: str | None = None, score_label: str | None = None,
                              out: str | os.PathLike | None = None):
    """Mean deletion and/or insertion curves of several explanations, one panel per mode.

    Each line is the mean over examples with a band of ± one standard error; the legend gives
    the mean area under the curve.

    Args:
        curves: {label: a PerturbationCurve or several}, e.g. a deletion and an insertion
            curve per explanation method.
        title: the figure title.
        score_label: the y axis label (default: the target's probability).
    """
    from matplotlib.figure import Figure

    pairs = [(label, c) for label, value in curves.items()
             for c in ([value] if isinstance(value, PerturbationCurve) else value)]
    if not pairs:
        raise ValueError("no curves to draw")
    modes = [m for m in ("deletion", "insertion") if any(c.mode == m for _, c in pairs)]
    figure = Figure(figsize=(4.2 * len(modes), 3.4), layout="constrained")
    axes = figure.subplots(1, len(modes), squeeze=False)[0]
    for ax, mode in zip(axes, modes):
        for label, curve in pairs:
            if curve.mode != mode:
                continue
            scores = curve.scores.detach().double().cpu()
            x = curve.fraction.detach().double().cpu().numpy()
            mean = scores.mean(0).numpy()
            sem = (scores.std(0) / scores.shape[0] ** 0.5).nan_to_num().numpy() \
                if scores.shape[0] > 1 else 0 * mean
            line, = ax.plot(x, mean, label=f"{label} (AUC {curve.auc.double().mean():.3f})")
            ax.fill_between(x, mean - sem, mean + sem, color=line.get_color(), alpha=0.2,
                            linewidth=0)
        removed = "removed" if mode == "deletion" else "inserted"
        ax.set_xlabel(f"fraction of features {removed}")
        ax.set_ylabel(score_label or "probability of the explained class")
        ax.set_title(f"{mode} ({'lower' if mode == 'deletion' else 'higher'} AUC is better)",
                     fontsize=10)
        ax.set_xlim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        figure.suptitle(title, fontsize=11)
    return _finish(figure, out)


def randomization_figure(result: RandomizationResult, images: Tensor, *,
                         signed: bool = False, row_labels: Sequence[str] | None = None,
                         title: str | None = None, out: str | os.PathLike | None = None):
    """Adebayo et al.'s layout: rows = examples; columns = the input, the original map, then the
    map after each randomisation step, from the top layer down.

    Args:
        result: a ``model_randomization`` result with its maps kept.
        images (Tensor[B, C, H, W]): the inputs, pixels in [0, 1].
        signed: diverging signed heatmaps instead of magnitudes.
        row_labels: a label per example.
    """
    if result.maps is None:
        raise ValueError("the result has no maps: run model_randomization with keep_maps=True")
    if images.shape[0] != result.original.shape[0]:
        raise ValueError(f"{images.shape[0]} images for {result.original.shape[0]} maps")
    mark = "+ " if result.mode == "cascading" else "only "
    titles = ["original"] + [mark + _short(name) for name in result.layers]
    columns = [result.original] + list(result.maps)
    title = title or (f"{result.mode.capitalize()} randomisation, from the top layer down "
                      "(columns left to right)")
    figure = attribution_grid(images, columns, titles, row_labels, title, signed)
    return _finish(figure, out)


def randomization_similarity_figure(result: RandomizationResult, *, title: str | None = None,
                                    out: str | os.PathLike | None = None):
    """Similarity to the original map per randomisation step, one panel per measure (mean
    over examples with ± one standard error; solid: absolute values, dashed: signed)."""
    from matplotlib.figure import Figure

    measures = [m for m in MEASURE_TITLES if m in result.similarity]
    figure = Figure(figsize=(3.6 * len(measures), 3.4), layout="constrained")
    axes = figure.subplots(1, len(measures), squeeze=False)[0]
    steps = range(len(result.layers))
    for ax, measure in zip(axes, measures):
        for key, style, label in ((measure + "_abs", "-o", "absolute"),
                                  (measure, "--s", "signed")):
            values = result.similarity[key].double()
            mean = values.nanmean(1).numpy()
            count = (~values.isnan()).sum(1).clamp(min=1)
            centred = (values - values.nanmean(1, keepdim=True)).nan_to_num()
            sem = (centred.square().sum(1) / count.clamp(min=2).sub(1) / count).sqrt().numpy()
            ax.errorbar(list(steps), mean, yerr=sem, fmt=style, ms=4, capsize=2, label=label)
        ax.axhline(0, color="gray", lw=0.8)
        ax.set_xticks(list(steps), [_short(n) for n in result.layers], rotation=45, ha="right",
                      fontsize=8)
        ax.set_title(MEASURE_TITLES[measure], fontsize=10)
        ax.set_ylim(min(-0.2, ax.get_ylim()[0]), 1.05)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    figure.suptitle(title or f"{result.mode.capitalize()} randomisation: similarity to the "
                    "original map", fontsize=11)
    return _finish(figure, out)


def _short(name: str, parts: int = 2) -> str:
    """The last ``parts`` components of a dotted name ("(model)" for the root)."""
    return ".".join(name.split(".")[-parts:]) if name else "(model)"


def main(out_dir: str | os.PathLike = "docs/figures") -> None:
    """Writes the documentation's figures for the bundled digits CNN into ``out_dir``."""
    from pathlib import Path

    import torch

    from ..api import smooth_grad
    from ..data import digit_examples
    from ..models import digits_cnn
    from ..viz import predicted_labels
    from .faithfulness import deletion_curve, insertion_curve
    from .randomization import model_randomization

    out = Path(out_dir)
    model = digits_cnn().eval()
    images, labels = digit_examples()                                   # 10 held-out digits
    explanations = {
        "SmoothGrad (m = 50)": smooth_grad(model, images, labels, seed=0),
        "gradient": smooth_grad(model, images, labels, n_samples=1, noise_level=0.0),
        "input × gradient": smooth_grad(model, images, labels, n_samples=1, noise_level=0.0,
                                        method="input_x_gradient"),
        "random order": torch.rand(images.shape, generator=torch.Generator().manual_seed(0)),
    }
    curves = {name: (deletion_curve(model, images, maps, labels),
                     insertion_curve(model, images, maps, labels))
              for name, maps in explanations.items()}
    perturbation_curve_figure(curves, title="Pixel flipping on the digits CNN: 10 held-out "
                              "digits, one pixel per step, black baseline",
                              out=out / "deletion_digits.png")
    shown = images[:5]
    result = model_randomization(model, shown, labels[:5], mode="cascading", seed=0)
    randomization_figure(result, shown, row_labels=predicted_labels(model, shown),
                         title="Cascading randomisation of the digits CNN: SmoothGrad "
                         "(m = 50), layers re-initialised from the top",
                         out=out / "randomization_digits.png")
    everything = model_randomization(model, images, labels, mode="cascading", seed=0,
                                     keep_maps=False)
    randomization_similarity_figure(everything, out=out / "randomization_digits_similarity.png")


if __name__ == "__main__":
    import sys

    main(*sys.argv[1:2])
