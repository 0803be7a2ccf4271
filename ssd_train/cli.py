"""``ssd-train``: thin command line over the training API. Subcommands register in COMMANDS."""
from __future__ import annotations

import argparse
import json
import sys
import time

from ssd_runtime.errors import SpecError


def _cmd_check(args: argparse.Namespace) -> int:
    """Build the network, run one forward pass, print a JSON summary."""
    import torch

    from ssd_runtime.spec import VOC_CLASSES, ModelSpec
    from ssd_train.model import SSD300

    spec = ModelSpec.create(VOC_CLASSES, width=args.width)
    model = SSD300.from_spec(spec, vgg_weights=args.vgg_weights).eval()
    images = torch.randn(args.batch, 3, spec.input_size, spec.input_size, generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    with torch.inference_mode():
        locs, logits = model(images)
    seconds = time.perf_counter() - start
    report = {
        "width": spec.width,
        "parameters": sum(p.numel() for p in model.parameters()),
        "input": list(images.shape),
        "locs": list(locs.shape),
        "class_logits": list(logits.shape),
        "priors_sha256": spec.priors_sha256,
        "forward_seconds": round(seconds, 3),
        "finite": bool(torch.isfinite(locs).all() and torch.isfinite(logits).all()),
    }
    print(json.dumps(report, indent=None if args.json else 2))
    return 0 if report["finite"] else 1


def _add_check(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="build SSD300 and run it once on a random batch")
    p.add_argument("--width", type=float, default=1.0, help="channel multiplier (1.0 = reference SSD300)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--vgg-weights", default=None, help="local torchvision VGG-16 state dict (.pth)")
    p.add_argument("--json", action="store_true", help="one-line JSON")
    p.set_defaults(func=_cmd_check)


def _cmd_data(args: argparse.Namespace) -> int:
    """Write the generated VOC-format dataset; print a JSON report."""
    from ssd_train.synthetic import generate_voc_dataset

    progress = None
    if not args.json and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=args.images, unit="img", desc="ssd-train data")

        def progress(done: int, total: int) -> None:
            bar.update(done - bar.n)

    report = generate_voc_dataset(
        args.out, images=args.images, test=args.test, seed=args.seed, workers=args.workers, overwrite=args.overwrite,
        progress=progress,
    )  # fmt: skip
    print(json.dumps(report, indent=None if args.json else 2))
    return 0


def _cmd_import_tutorial(args: argparse.Namespace) -> int:
    """Convert the tutorial's released checkpoint into a toolkit checkpoint; print a JSON summary."""
    from ssd_train.tutorial import convert_tutorial_checkpoint

    spec = convert_tutorial_checkpoint(args.src, args.output)
    report = {
        "source": args.src,
        "output": args.output,
        "classes": spec.num_classes,
        "width": spec.width,
        "priors_sha256": spec.priors_sha256,
        "provenance": dict(spec.provenance),
    }
    print(json.dumps(report, indent=None if args.json else 2))
    return 0


def _add_data(sub: argparse._SubParsersAction) -> None:
    from ssd_train.synthetic import DEFAULT_IMAGES

    p = sub.add_parser("data", help="write the generated Pascal-VOC-format dataset (shapes) to a folder")
    p.add_argument("--out", required=True, help="folder to write (becomes a VOC root: Annotations/, JPEGImages/, ...)")
    p.add_argument("--images", type=int, default=DEFAULT_IMAGES, help="total images (default %(default)s)")
    p.add_argument("--test", type=int, default=None, help="images in the test split (default 20%% of --images)")
    p.add_argument("--seed", type=int, default=0, help="the dataset is a pure function of the seed")
    p.add_argument("--workers", type=int, default=1, help="processes to render with")
    p.add_argument("--overwrite", action="store_true", help="write into a folder that already holds a dataset")
    p.add_argument("--json", action="store_true", help="one-line JSON")
    p.set_defaults(func=_cmd_data)


def _add_import_tutorial(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import-tutorial",
        help="convert the tutorial's checkpoint_ssd300.pth.tar (weights only; its pickle is never run)",
    )
    p.add_argument("src", help="the tutorial's checkpoint (PyTorch 0.4 legacy or zip format)")
    p.add_argument("-o", "--output", required=True, help="toolkit checkpoint to write (.pt)")
    p.add_argument("--json", action="store_true", help="one-line JSON")
    p.set_defaults(func=_cmd_import_tutorial)


#: Each entry adds one subcommand to the parser (a later feature adds one line here).
COMMANDS = [_add_check, _add_data, _add_import_tutorial]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ssd-train", description="Train and evaluate SSD300 in PyTorch.")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (SpecError, ValueError, FileNotFoundError, OSError) as exc:
        print(f"ssd-train {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
