"""``ssd-runtime``: thin command line over the runtime API. Subcommands register in COMMANDS."""
from __future__ import annotations

import argparse
import json
import sys

from ssd_runtime.errors import SpecError, ToolkitError


def _cmd_priors(args: argparse.Namespace) -> int:
    from ssd_runtime.priors import PriorConfig, make_priors, priors_sha256

    priors = make_priors(PriorConfig(clip=args.clip))
    print(json.dumps({"num_priors": int(priors.shape[0]), "sha256": priors_sha256(priors), "clip": args.clip}))
    return 0


def _add_priors(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("priors", help="print the number and sha256 of the SSD300 priors")
    p.add_argument("--clip", default="reference", choices=["reference", "extent", "none"])
    p.set_defaults(func=_cmd_priors)


#: Each entry adds one subcommand to the parser (a later feature adds one line here).
COMMANDS = [_add_priors]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ssd-runtime", description="Run SSD300 models (ONNX, TensorRT, PyTorch).")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (SpecError, ToolkitError, ValueError, FileNotFoundError, OSError) as exc:
        print(f"ssd-runtime {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
