"""What the ``smoothkern`` subcommands share: argument types (argparse ``type=`` callables), the
one-line error and its exit status, and the map aggregates' names."""

from __future__ import annotations

import argparse
import ast

EXIT_USAGE = 2
# The aggregates that are maps (smoothkern.core.stats.AGGREGATES + "sem"; "count" is a number per
# example), spelled out so that --help does not import torch.
MAP_AGGREGATES = ("mean", "abs", "sq", "var", "geomean", "sem")


class CliError(Exception):
    """An error to report in one line, without a traceback."""


def positive(text: str) -> int:
    """An integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def fraction(text: str) -> float:
    """A noise level: a fraction >= 0 (below 10), or a percentage such as ``10%``."""
    try:
        value = float(text.rstrip("%")) / (100 if text.endswith("%") else 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value < 10:
        raise argparse.ArgumentTypeError(f"noise level must be a fraction >= 0, got {text}")
    return value


def method_option(text: str) -> tuple[str, object]:
    """``KEY=VALUE``: numbers, booleans and tuples are parsed, anything else stays a string
    (e.g. a layer path)."""
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value
