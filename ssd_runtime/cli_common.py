"""What the three thin CLIs share: a parser built from subcommand adders, and error handling.

Their options (one flag per idea, the old spellings, the device grammar) are :mod:`ssd_runtime.options`.

Library code raises typed exceptions; only here are they turned into a short message and exit code 2.
An error raised inside a DataLoader worker reaches the CLI re-raised by torch with the worker's
traceback as its message; :func:`worker_error_message` recovers the original message, so the user
reads the toolkit's own one-line error (naming the file) instead of a traceback.
"""
from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence

from ssd_runtime.errors import ToolkitError
from ssd_runtime.options import Parser

#: Errors a CLI reports as one line (exit 2) instead of a traceback.
USER_ERRORS = (ToolkitError, ValueError, FileNotFoundError, OSError)

CommandAdder = Callable[[argparse._SubParsersAction], None]

_TRACEBACK_HEADER = "Traceback (most recent call last):"
# "ExcType: " or "package.module.ExcType: " at the start of a traceback's last line
_EXCEPTION_NAME = re.compile(r"[A-Za-z_][\w.]*(?:: |:$|$)")


def build_parser(prog: str, description: str, commands: Sequence[CommandAdder]) -> argparse.ArgumentParser:
    """A parser with one subcommand per adder (each adder calls ``sub.add_parser`` and ``set_defaults(func=...)``)."""
    parser = Parser(prog=prog, description=description)  # its subcommands' parsers are of the same class
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in commands:
        add(sub)
    return parser


def worker_error_message(text: str) -> str | None:
    """The original message inside torch's re-raised worker error text, or None if ``text`` is not one.

    torch re-raises an exception from a DataLoader worker (or its pin-memory thread) as the same type
    with the message ``Caught <Type> <where>.\nOriginal Traceback (most recent call last):\n...``,
    the worker's formatted traceback, whose last block ends with ``package.Type: message`` (the message
    may span several lines). Parsed from text only: no torch import.
    """
    if not text.startswith("Caught ") or f"\nOriginal {_TRACEBACK_HEADER}" not in text:
        return None
    lines = text.rstrip().splitlines()
    last_block = max(i for i, line in enumerate(lines) if line.endswith(_TRACEBACK_HEADER))
    # the block's frames ("  File ...", source lines, carets) are indented; the exception line is not
    tail = lines[last_block + 1 :]
    start = next((i for i, line in enumerate(tail) if line and not line[0].isspace()), None)
    if start is None:
        return None
    first, *more = tail[start:]
    name = _EXCEPTION_NAME.match(first)
    message = "\n".join([first[name.end() :] if name else first, *more]).strip()
    return message or None


def run(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen subcommand; user errors become ``PROG COMMAND: error: ...`` and 2.

    A usage error (argparse's message) returns 2 as well, and ``--help`` 0: ``main(argv)`` returns an exit code.
    """
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as exc:
        message = worker_error_message(str(exc)) or str(exc)
        print(f"{parser.prog} {args.command}: error: {message}", file=sys.stderr)
        return 2
