"""Reproduces the bundled digits model: ``python -m smoothkern.studies.train_digits --out FILE``.

Trains the narrower MNIST CNN on the fixed 75 % training split of scikit-learn's digits
(resized to 28×28) and reports accuracy on the 25 % held out.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from ..data import digits_split
from ..models.zoo import BUNDLED_DIGITS_WEIGHTS, digits_cnn
from .train import accuracy, train


def train_digits(out: str | Path, epochs: int = 12, seed: int = 0,
                 progress: bool = True) -> dict[str, float]:
    """Trains, saves the network's state dict to ``out`` and returns the accuracies."""
    torch.manual_seed(seed)  # the initial weights
    x_train, y_train, x_test, y_test = digits_split()
    model = digits_cnn(weights=None)
    start = time.perf_counter()
    losses = train(model, x_train, y_train, epochs=epochs, seed=seed, progress=progress)
    seconds = time.perf_counter() - start
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Only the bare network (no Normalize), as published checkpoints store it; half precision
    # would halve the file but float32 keeps the bundled model bit-identical to training.
    torch.save(model.net.state_dict(), out)
    return {"train_accuracy": accuracy(model, x_train, y_train),
            "held_out_accuracy": accuracy(model, x_test, y_test), "final_loss": losses[-1],
            "seconds": seconds, "train_size": len(x_train), "held_out_size": len(x_test)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(BUNDLED_DIGITS_WEIGHTS),
                        help="where to write the state dict (default: the bundled file)")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    report = train_digits(args.out, epochs=args.epochs, seed=args.seed, progress=not args.quiet)
    print(f"digits CNN: {report['train_size']} training / {report['held_out_size']} held-out "
          f"images, {args.epochs} epochs in {report['seconds']:.1f} s; held-out accuracy "
          f"{report['held_out_accuracy']:.2%} (train {report['train_accuracy']:.2%}); "
          f"saved {args.out} ({Path(args.out).stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
