"""Draws the figures of docs/optimize.md on the bundled digits CNN and digits, and prints the
step counts and times: ``python -m smoothkern.optimize.make_figures [OUT_DIR]``."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ...data import digit_examples
from ...models import digits_cnn
from ...viz import save_figure
from .figures import class_visualization_figure, fooling_figure
from .fooling import fooling_images
from .visualization import DIGITS_RECIPE, class_visualization


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", nargs="?", default="docs/figures", help="folder for the PNGs")
    out = Path(parser.parse_args(argv).out)
    model = digits_cnn()
    images, labels = digit_examples(per_class=1)
    targets = (labels + 3) % 10  # every digit to another class, all ten at once

    start = time.perf_counter()
    fooled = fooling_images(model, images, targets)
    seconds = time.perf_counter() - start
    print(f"fooling: {int(fooled.success.sum())}/{len(targets)} fooled, steps "
          f"{fooled.steps.tolist()}, {seconds:.2f} s for the batch")
    figure = fooling_figure(fooled.select([0, 1, 4, 7]), title="Fooling images: bundled digits CNN")
    save_figure(figure, out / "optimize_fooling_digits.png")

    for name, recipe in (("cs231n", {}), ("digits", DIGITS_RECIPE)):
        start = time.perf_counter()
        result = class_visualization(model, range(10), image_shape=(1, 28, 28), **recipe)
        seconds = time.perf_counter() - start
        print(f"class visualisation ({name} settings): {seconds:.2f} s for 10 classes; "
              f"scores {[round(s, 1) for s in result.initial_scores.tolist()]} → "
              f"{[round(s, 1) for s in result.final_scores.tolist()]}; predicted "
              f"{result.predictions.tolist()}")
        title = ("the assignment's defaults" if name == "cs231n" else "DIGITS_RECIPE")
        save_figure(class_visualization_figure(result, title=f"Class visualisation, {title}",
                                               rescale=name == "cs231n"),
                    out / f"optimize_classes_{name}.png")


if __name__ == "__main__":
    main()
