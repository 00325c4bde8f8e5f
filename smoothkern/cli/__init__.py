"""The ``smoothkern`` command: ``demo``, ``figure``, ``bench``, the data-set commands and ``ood``.

Errors a user can cause (paths, image files, model names, options) end in one line on stderr
and exit status 2; ``SMOOTHKERN_DEBUG=1`` shows the traceback instead. Each subcommand group
registers itself (:mod:`.figures`, :mod:`.bench`, :mod:`smoothkern.dataset.command`,
:mod:`smoothkern.studies.ood.command`); their imports stay light until a command runs.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from .args import EXIT_USAGE, CliError

__all__ = ["EXIT_USAGE", "CliError", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``smoothkern`` parser with every subcommand."""
    from .. import __version__
    from ..dataset.command import register as register_dataset_commands
    from ..studies.ood.command import register as register_ood_command
    from .bench import register as register_bench_command
    from .figures import register as register_figure_commands

    parser = argparse.ArgumentParser(
        prog="smoothkern", description="Fast SmoothGrad: figures, demo and benchmarks.")
    parser.add_argument("--version", action="version", version=f"smoothkern {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    register_figure_commands(sub)
    register_bench_command(sub)
    register_dataset_commands(sub)
    register_ood_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``smoothkern`` and ``python -m smoothkern``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if os.environ.get("SMOOTHKERN_DEBUG"):
        return args.func(args)
    # Pillow logs what it finds wrong in a damaged file (e.g. a TIFF's samples per pixel) before
    # raising; with no logging set up, Python prints that record as a second stderr line.
    logging.getLogger("PIL").addHandler(logging.NullHandler())
    from ..data import DataError
    from ..dataset.distributed import RankFailed
    from ..models import WeightsError

    try:
        return args.func(args)
    except (CliError, DataError, WeightsError, RankFailed, ValueError, TypeError, ImportError,
            OSError) as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"smoothkern {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
