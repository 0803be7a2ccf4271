"""``ssd-export``: thin command line over the export API. Subcommands register in COMMANDS."""
from __future__ import annotations

import argparse
import sys

from ssd_runtime.errors import SpecError, ToolkitError

#: Each entry adds one subcommand to the parser (a later feature adds one line here).
COMMANDS: list = []


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ssd-export", description="Export SSD300 to ONNX and TensorRT.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if not COMMANDS else 2
    try:
        return int(args.func(args) or 0)
    except (SpecError, ToolkitError, ValueError, FileNotFoundError, OSError) as exc:
        print(f"ssd-export {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
