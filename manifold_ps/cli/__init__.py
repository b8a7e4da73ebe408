"""Command line entry point ``manifold-ps`` with one sub-command per long job.

Each sub-command lives in its own module exposing ``add_parser(subparsers)`` (which registers
the sub-command and sets ``func``) so that the dispatcher stays small. :func:`main` raises the
errors of a run (for callers and tests); :func:`console_main`, the installed ``manifold-ps``
script, prints them as one line naming the problem and exits with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["main", "console_main", "build_parser"]

_COMMANDS = ("train_prior", "train_flow", "sample")


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
    """Run the command line; returns the exit status (errors of the run propagate)."""
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


def console_main(argv: Sequence[str] | None = None) -> int:
    """:func:`main` for a terminal: an error in the user's input (a file, a setting, the device,
    the output folder) is printed as ``manifold-ps <command>: error: ...`` with exit status 2,
    not as a traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return main(argv)
    except (ValueError, FileNotFoundError, ModuleNotFoundError, PermissionError) as err:
        command = next((a for a in argv if not a.startswith("-")), "")
        print(f"manifold-ps {command}: error: {err}", file=sys.stderr)
        return 2
