"""The `smoothkern` subcommands of this package (registered by :mod:`smoothkern.cli`)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Adds this package's subcommands to the `smoothkern` parser."""
