"""Deletion curves (pixel flipping): smoothkern's batched passes vs Quantus's PixelFlipping.

    python -m benchmarks.metrics_faithfulness               # digits CNN, 8 digits, 1 pixel/step
    python -m benchmarks.metrics_faithfulness --repeats 5 --features-per-step 4

The bundled digits CNN (28×28 held-out digits), SmoothGrad attributions (m = 50), the "black"
baseline and softmax scores: Quantus's defaults. All variants run in one process, interleaved
with the order rotated every repeat, after one warm-up call each; the table gives medians and
ratios within the run, because other work may share the CPU. It also checks that the curves are
equal (smoothkern's ``scores[:, 1:]`` is Quantus's curve).

Variants: Quantus (one forward of B rows per step); smoothkern as it runs by default (steps
that change no pixel, black pixels set to black, are copied rather than recomputed; the model
prepared as ``smooth_grad`` prepares it: channels_last here); with every step evaluated
(``skip_unchanged=False``); without the prepared copy (``prepare=False``).
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import torch

from smoothkern import smooth_grad
from smoothkern.data import digit_examples
from smoothkern.metrics.faithfulness import deletion_curve
from smoothkern.models import digits_cnn

from .common import interleaved_medians, machine


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8, help="digits (at most 10)")
    parser.add_argument("--features-per-step", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    model = digits_cnn().eval()
    x, y = digit_examples()
    x, y = x[:args.batch], y[:args.batch]
    a = smooth_grad(model, x, y, n_samples=50, seed=0)
    step = args.features_per_step
    variants = {
        "smoothkern": lambda: deletion_curve(model, x, a, y, features_per_step=step),
        "smoothkern, every step": lambda: deletion_curve(model, x, a, y, features_per_step=step,
                                                         skip_unchanged=False),
        "smoothkern, not prepared": lambda: deletion_curve(model, x, a, y,
                                                           features_per_step=step, prepare=False),
    }
    try:
        import quantus
    except ImportError:
        quantus = None
        print("quantus is not installed: smoothkern only")
    if quantus is not None:
        metric = quantus.PixelFlipping(features_in_step=step, disable_warnings=True)
        x_np, y_np, a_np = x.numpy(), y.numpy(), a.numpy()

        def run_quantus():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return np.array(metric(model=model, x_batch=x_np, y_batch=y_np, a_batch=a_np,
                                       device="cpu"))
        variants["quantus PixelFlipping"] = run_quantus

    print(machine())
    ours = deletion_curve(model, x, a, y, features_per_step=step)
    print(f"digits CNN, B = {args.batch}, {step} feature(s) per step: "
          f"{ours.scores.shape[1] - 1} steps, {ours.forward_rows} of "
          f"{ours.scores.numel()} rows evaluated")
    if quantus is not None:
        difference = np.abs(ours.scores[:, 1:].numpy() - run_quantus()).max()
        print(f"max |smoothkern - quantus| over the curves: {difference:.2e}")
    times = interleaved_medians(variants, repeats=args.repeats)
    slowest = max(times.values())
    print(f"{'variant':<26}{'median s':>10}{'speed-up':>10}")
    for name, seconds in times.items():
        print(f"{name:<26}{seconds:>10.3f}{slowest / seconds:>9.1f}x")


if __name__ == "__main__":
    main()
