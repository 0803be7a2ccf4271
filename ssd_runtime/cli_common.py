"""What the three thin CLIs share: a parser built from subcommand adders, and error handling.

Library code raises typed exceptions; only here are they turned into a short message and exit code 2.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from ssd_runtime.errors import ToolkitError

#: Errors a CLI reports as one line (exit 2) instead of a traceback.
USER_ERRORS = (ToolkitError, ValueError, FileNotFoundError, OSError)

CommandAdder = Callable[[argparse._SubParsersAction], None]


def build_parser(prog: str, description: str, commands: Sequence[CommandAdder]) -> argparse.ArgumentParser:
    """A parser with one subcommand per adder (each adder calls ``sub.add_parser`` and ``set_defaults(func=...)``)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in commands:
        add(sub)
    return parser


def run(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen subcommand; user errors become ``PROG COMMAND: error: ...`` and 2."""
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as exc:
        print(f"{parser.prog} {args.command}: error: {exc}", file=sys.stderr)
        return 2
