"""Command line entry point ``manifold-ps`` with one sub-command per long job.

Each sub-command lives in its own module exposing ``add_parser(subparsers)`` (which registers
the sub-command and sets ``func``) so that the dispatcher stays small.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

__all__ = ["main", "build_parser"]

_COMMANDS = ("train_prior", "train_flow")


def build_parser() -> argparse.ArgumentParser:
    """The ``manifold-ps`` argument parser with every available sub-command."""
    parser = argparse.ArgumentParser(prog="manifold-ps", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in _COMMANDS:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as err:  # a sub-command whose module is not installed
            if err.name != f"{__name__}.{name}":
                raise
            continue
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)
