"""``python -m smoothkern.bench``: the memory subprocess (``--child``), else the ``smoothkern
bench`` command; and the named models' inputs the command benchmarks."""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .memory import child


def named_inputs(model_name: str, weights: str | os.PathLike | None = None, batch: int = 1,
                 input_shape: Sequence[int] | None = None, seed: int = 0
                 ) -> tuple[nn.Module, Tensor]:
    """A named model (``load_named_model``) and a batch for it: real digits for the digits
    models at their own size, otherwise uniform pixels in [0, 1] of ``input_shape``."""
    from ..models import load_named_model

    model, spec = load_named_model(model_name, weights)
    own = (spec.channels, spec.size, spec.size)
    shape = tuple(input_shape) if input_shape else own
    x = None
    if model_name.replace("-", "_").lower() in ("digits", "mnist", "mnist_cnn") and shape == own:
        try:
            from ..data import digit_examples

            images, _ = digit_examples(per_class=math.ceil(batch / 10))
            x = images[:batch].contiguous()
        except ImportError:  # scikit-learn missing: random pixels time the same
            x = None
    if x is None:
        x = torch.rand(batch, *shape, generator=torch.Generator().manual_seed(seed))
    try:
        with torch.no_grad():
            model(x[:1])
    except Exception as err:  # noqa: BLE001 - reported as a usage error
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ValueError(f"model {model_name!r} does not take inputs of shape "
                         f"{list(shape)}: {first}") from None
    return model, x


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m smoothkern.bench``: the memory subprocess (``--child``), else the command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        parser = argparse.ArgumentParser(prog="smoothkern.bench --child")
        parser.add_argument("--child", required=True)
        parser.add_argument("variant")
        args = parser.parse_args(argv)
        child(args.child, args.variant)
        return
    from ..cli import main as cli_main

    sys.exit(cli_main(["bench", *argv]))
