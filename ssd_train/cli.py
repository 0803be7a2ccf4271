"""``ssd-train``: thin command line over the training API. Subcommands register in COMMANDS."""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys
import time
from collections.abc import Callable

from ssd_runtime import cli_common, options
from ssd_runtime.cli import add_evaluation_flags
from ssd_runtime.datasets import FORMATS
from ssd_runtime.options import BATCH_SIZE, DEVICE, MODEL, default_of
from ssd_runtime.priors import CLIP_MODES, PRIOR_PRESETS
from ssd_runtime.spec import NORMS
from ssd_train.augment import AUGMENTATIONS
from ssd_train.config import (
    AMP_MODES, DEFAULT_RECIPE, DEVICES, HEAD_INITS, OPTIMIZERS, RECIPE_NAMES, RECIPES, SCHEDULES, TrainConfig,
)  # fmt: skip
from ssd_train.evaluation import evaluate, evaluate_to_file
from ssd_train.loss import LOC_LOSSES
from ssd_train.training_set import IMAGE_CHECKS


def _cmd_check(args: argparse.Namespace) -> int:
    """Build the network, run one forward pass, print a JSON summary."""
    import torch

    from ssd_runtime.spec import VOC_CLASSES, ModelSpec
    from ssd_train.model import SSD300

    spec = ModelSpec.create(VOC_CLASSES, width=args.width)
    model = SSD300.from_spec(spec, vgg_weights=args.vgg_weights).eval()
    images = torch.randn(args.batch_size, 3, spec.input_size, spec.input_size, generator=torch.Generator().manual_seed(0))
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
    p.add_argument("--width", type=float, default=TrainConfig.default("width"),
                   help="channel multiplier (1.0 = reference SSD300)")
    options.add(p, BATCH_SIZE, default=1, deprecated=("--batch",), help="images in the random batch")
    p.add_argument("--vgg-weights", default=None, help="local torchvision VGG-16 state dict (.pth)")
    p.add_argument("--json", action="store_true", help="one-line JSON")
    p.set_defaults(func=_cmd_check)


def _cmd_data(args: argparse.Namespace) -> int:
    """Write the generated dataset (VOC, COCO or YOLO layout); print a JSON report."""
    from ssd_train.synthetic import generate_dataset

    progress = None
    if not args.json and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=args.images, unit="img", desc="ssd-train data")

        def progress(done: int, total: int) -> None:
            bar.update(done - bar.n)

    options = {"overwrite": args.overwrite} if args.format == "voc" else {}
    report = generate_dataset(
        args.out, format=args.format, images=args.images, test=args.test, seed=args.seed, workers=args.workers,
        progress=progress, **options,
    )  # fmt: skip
    print(json.dumps(report, indent=None if args.json else 2))
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    """Convert a dataset between the VOC, COCO and YOLO layouts; print a JSON report (what the target cannot carry)."""
    from ssd_runtime.convert import convert_dataset

    report = convert_dataset(args.data, args.out, args.to, data_format=args.data_format, splits=args.split,
                             images=args.images)
    print(json.dumps(report, indent=None if args.json else 2))
    for kind, lost in report["cannot_carry"].items():
        print(f"note: {args.to} cannot carry {kind} ({lost['count']}): {lost['note']}", file=sys.stderr)
    return 0


def _add_convert(sub: argparse._SubParsersAction) -> None:
    from ssd_runtime.convert import IMAGE_MODES, SPLITS, convert_dataset

    p = sub.add_parser("convert", help="convert a dataset between the Pascal VOC, COCO and YOLO layouts")
    p.add_argument("--data", required=True, help="the dataset to convert (VOC root or devkit, COCO root, YOLO root)")
    p.add_argument("--out", required=True, help="a new folder to write the converted dataset to")
    p.add_argument("--to", required=True, choices=FORMATS, help="the layout to write")
    options.add(p, options.DATA_FORMAT, default=default_of(convert_dataset, "data_format"))
    p.add_argument("--split", nargs="+", default=list(SPLITS), help="splits to convert (those the source has)")
    p.add_argument("--images", choices=IMAGE_MODES, default=default_of(convert_dataset, "images"),
                   help="copy the images (default), hard-link them, or move them")
    p.add_argument("--json", action="store_true", help="one-line JSON")
    p.set_defaults(func=_cmd_convert)


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
    from ssd_train.synthetic import generate_dataset, generate_voc_dataset

    def default(name: str):
        return default_of(generate_voc_dataset, name)

    p = sub.add_parser("data", help="write the generated Pascal-VOC-format dataset (shapes) to a folder")
    p.add_argument("--out", required=True, help="folder to write (becomes a VOC root: Annotations/, JPEGImages/, ...)")
    options.add(p, options.Option(("--num-images",), "images", "total images (default %(default)s)", parse=int,
                                  metavar="N"), default=default("images"), deprecated=("--images",))
    p.add_argument("--test", type=int, default=default("test"), help="images in the test split (default 20%% of --num-images)")
    p.add_argument("--seed", type=int, default=default("seed"), help="the dataset is a pure function of the seed")
    p.add_argument("--workers", type=int, default=default("workers"), help="processes to render with")
    p.add_argument("--overwrite", action="store_true", help="write into a folder that already holds a dataset (VOC)")
    p.add_argument("--format", choices=FORMATS, default=default_of(generate_dataset, "format"),
                   help="the layout to write: voc (default), coco (annotations/instances_<split>.json) or yolo "
                        "(data.yaml, images/, labels/; no difficult flags)")
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

def _fit_config(args: argparse.Namespace) -> TrainConfig:
    """The run an ``ssd-train fit`` command line asks for: its recipe with the flags given on top."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    overrides = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    if args.no_progress:
        overrides["progress"] = False
    if args.device == "cuda" and "channels_last" not in {**RECIPES[args.recipe], **overrides}:
        overrides["channels_last"] = True
    return TrainConfig.from_recipe(args.recipe, **overrides)


def _cmd_fit(args: argparse.Namespace) -> int:
    """Train; print a JSON summary."""
    from ssd_train.train import fit

    result = fit(_fit_config(args))
    report = dataclasses.asdict(result)
    report["recipe"] = args.recipe
    print(json.dumps(report, indent=None if args.json else 2))
    return 0


def _recipe_values(name: str) -> str:
    """``TrainConfig.name`` in each recipe, for a flag's help: "recipes: reference=0.5, cpu-quick=0.4"."""
    values = (f"{recipe}={RECIPES[recipe].get(name, TrainConfig.default(name))}" for recipe in RECIPE_NAMES)
    return "recipes: " + ", ".join(values)


def _add_field(p: argparse.ArgumentParser, name: str, help: str | None = None, **kwargs) -> None:
    """``--name`` for the TrainConfig field ``name``: unset (None) takes the recipe's value, listed in the help.

    Without ``choices``, ``action`` or ``type``, the type is that of the field's default (int or float).
    """
    if not {"choices", "action", "type"} & set(kwargs):
        kwargs["type"] = type(TrainConfig.default(name))
    values = f"({_recipe_values(name)})".replace("%", "%%")
    p.add_argument(f"--{name.replace('_', '-')}", dest=name, help=f"{help} {values}" if help else values, **kwargs)


def _add_fit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fit", help="train SSD300 on VOC-format data (the reference recipe by default)")
    p.add_argument("--data", nargs="+", required=True, help="VOCdevkit, VOC root(s), or a generated dataset folder")
    p.add_argument("--out", required=True, help="run folder: last.pt, best.pt, metrics.csv")
    p.add_argument("--recipe", choices=RECIPE_NAMES, default=DEFAULT_RECIPE,
                   help="defaults for flags not given (reference = the paper/tutorial recipe)")
    p.add_argument("--classes", nargs="+", default=None, help="class names (default: the dataset's own)")
    p.add_argument("--skip-unknown-classes", dest="skip_unknown_classes", action="store_true", default=None)
    _add_field(p, "check_images", choices=IMAGE_CHECKS,
               help="check every training image before the run: quick = header and completeness (cached in OUT), "
                    "full = decode each one, off")
    _add_field(p, "skip_bad_images", action="store_true", default=None,
               help="leave images that cannot be read out of training (a counted warning) instead of stopping")
    _add_field(p, "width", help="channel multiplier")
    _add_field(p, "norm", choices=NORMS,
               help="none = the reference network; batch = BatchNorm after each conv (faster from scratch, "
                    "folded away at export); batch-from-conv2 = the same without conv1_1/conv1_2 (cheaper on a CPU)")
    _add_field(p, "head_init", choices=HEAD_INITS,
               help="class-head initialisation: reference (Xavier) or background (start at P(background) 0.99)")
    _add_field(p, "augment", choices=AUGMENTATIONS,
               help="training augmentation: reference; light = without the zoom-out; flip = resize + flip only")
    p.add_argument("--vgg-weights", help="local torchvision VGG-16 state dict (width 1.0)")
    p.add_argument("--init-from", help="fine-tune from a toolkit checkpoint (class heads re-initialised if classes differ)")
    _add_field(p, "priors", choices=tuple(PRIOR_PRESETS),
               help="prior geometry: reference (the paper's VOC SSD300) or coco (the original SSD300's COCO "
                    "priors: smaller, for data with many small objects); recorded in the model spec")
    _add_field(p, "prior_clip", choices=CLIP_MODES)
    _add_field(p, "loc_loss", choices=LOC_LOSSES)
    _add_field(p, "match_threshold", help="IoU at which a prior becomes a positive of an object")
    for name in ("batch_size", "iterations"):
        _add_field(p, name)
    _add_field(p, "optimizer", choices=OPTIMIZERS)
    for name in ("lr", "momentum", "weight_decay"):
        _add_field(p, name)
    _add_field(p, "schedule", choices=SCHEDULES)
    _add_field(p, "lr_steps", type=int, nargs="+")
    _add_field(p, "warmup", help="iterations of linear warm-up")
    _add_field(p, "grad_clip", type=float, help="clip the gradient norm to this value")
    _add_field(p, "ema",
               help="keep an exponential moving average of the weights with this decay (e.g. 0.998; 0 = off): "
                    "checkpoints and evaluations use the averaged weights")
    _add_field(p, "device", choices=DEVICES)
    _add_field(p, "amp", choices=AMP_MODES)
    _add_field(p, "channels_last", action="store_true", default=None,
               help="channels-last memory format (on with --device cuda unless the recipe sets it)")
    for name in ("workers", "seed", "eval_every", "eval_images", "save_every", "log_every"):
        _add_field(p, name)
    p.add_argument("--stop-at", type=int, help="stop after this iteration (resume later with --resume)")
    p.add_argument("--resume", action="store_true", default=None, help="continue from OUT/last.pt exactly")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="one-line JSON summary")
    p.set_defaults(func=_cmd_fit)


def _cmd_eval(args: argparse.Namespace) -> int:
    """VOC mAP (and COCO's metrics with --metric) of a checkpoint on a split of any layout; table or JSON, optional PR plot."""
    import torch

    from ssd_train.checkpoint import load_model
    from ssd_train.data import VOCDetection
    from ssd_runtime.coco_metric import coco_section, format_coco, resolve_metric
    from ssd_runtime.detections_file import read_parts
    from ssd_runtime.sharding import device_for, part_path, part_paths, resolve_shard

    if args.workers is not None:  # DataLoader workers before evaluation ran through the runtime's loop
        print("ssd-train eval: --workers is deprecated and goes in the next release: it has no effect (images are "
              "decoded by the runtime's streaming loop)", file=sys.stderr)
    data = args.data if len(args.data) > 1 else args.data[0]
    metric = resolve_metric(args.metric, data, args.data_format)  # "auto": COCO's on COCO data, as ssd-runtime eval
    model, spec = load_model(args.model)
    shard = resolve_shard(args.shard, os.environ)
    device = torch.device(device_for(args.device, shard))
    dataset = VOCDetection.from_voc(data, args.split,
                                    class_names=spec.class_names, train=False, mean=spec.mean, std=spec.std,
                                    size=spec.input_size, skip_unknown=args.skip_unknown_classes,
                                    data_format=args.data_format)
    if args.max_images:
        dataset.records = dataset.records[: args.max_images]
    if args.detections_out or shard.sharded:
        if not args.detections_out:
            raise ValueError(f"shard {shard}: each process writes its part of a detections file: pass --detections-out FILE")
        result = evaluate_to_file(model.to(device), dataset, spec, args.detections_out, checkpoint=args.model,
                                  device=device, batch_size=args.batch_size, ap_method=args.ap_method, shard=shard,
                                  resume=args.resume, source={"data": args.data, "split": args.split})
        if result is None:  # not the merging process; by hand (--shard) the merge comes later
            if not shard.torchrun:
                print(f"shard {shard}: {part_path(args.detections_out, shard)} written; once every shard is done: "
                      f"ssd-runtime eval --data DATA --split {args.split} --detections <every part>")
            return 0
        images = read_parts(part_paths(args.detections_out, shard.count))[1] if metric == "coco" else []
    else:
        if args.resume:
            raise ValueError("--resume continues a --detections-out file: pass the file to continue")
        images = []  # the scored detections, for COCO's metrics
        result = evaluate(model.to(device), dataset, spec, device, args.batch_size, ap_method=args.ap_method,
                          detections=images)
    report = {"checkpoint": args.model, "split": args.split, "images": len(dataset), **result.to_dict(), "metric": metric,
              "coco": coco_section(metric, data, args.split, dataset.records, images, spec.class_names,
                                   data_format=args.data_format)}
    if args.plot:
        from ssd_train.plots import plot_precision_recall

        plot_precision_recall(result, args.plot)
        report["plot"] = args.plot
    if args.json:
        print(json.dumps(report))
    else:
        print(f"VOC mAP ({result.ap_method}, IoU > {result.iou_threshold}) on {len(dataset)} images: {result.map:.4f}")
        print(f"{'class':<16}{'AP':>8}{'GT':>7}{'dets':>8}{'TP':>7}")
        for c in result.classes:
            ap = "n/a" if c.ap != c.ap else f"{c.ap:.4f}"
            print(f"{c.name:<16}{ap:>8}{c.num_positives:>7}{c.num_detections:>8}{c.num_true_positives:>7}")
        if report["coco"]:
            print("\n".join(format_coco(report["coco"])))
    return 0


#: ssd-train eval's batch when --batch-size is not given (evaluate's own default, 32, is training's)
EVAL_BATCH_SIZE = 16


def _add_eval(sub: argparse._SubParsersAction) -> None:
    """``ssd-train eval``: ``ssd-runtime eval``'s model, device and evaluation flags (the same definitions),
    ``--plot`` (and the deprecated ``--workers``); the runtime's backend flags and its reference ``--checkpoint`` are its own."""
    p = sub.add_parser("eval", help="VOC mAP of a checkpoint (PyTorch) at the evaluation settings")
    options.add(p, MODEL, help="toolkit checkpoint (.pt)", deprecated=("--checkpoint",))
    options.add(p, DEVICE, default=default_of(evaluate, "device"))
    add_evaluation_flags(p, batch_size=EVAL_BATCH_SIZE, data_nargs="+", max_images_aliases=("--images",))
    p.add_argument("--workers", type=int, help="deprecated, no effect: images are decoded by the runtime's streaming "
                   "loop, a batch ahead of the model")
    options.add(p, options.METRIC, help="coco: COCO's AP, AP50, AP75, AP/AR by size, AR1/10/100 and per-class AP "
                "beside the VOC mAP (faster-coco-eval), as ssd-runtime eval; voc: the VOC mAP only; auto (default): "
                "coco on COCO data, voc on the rest")
    p.add_argument("--plot", help="write a precision-recall plot (PNG; needs matplotlib)")
    p.set_defaults(func=_cmd_eval)


def _cmd_detect(args: argparse.Namespace, run: Callable[[argparse.Namespace], int]) -> int:
    print("ssd-train detect is deprecated and goes in the next release: use ssd-runtime detect (the same flags)",
          file=sys.stderr)
    return run(args)


def _add_detect(sub: argparse._SubParsersAction) -> None:
    """``ssd-train detect``: ``ssd-runtime detect`` itself (its parser and code), kept for one release."""
    from ssd_runtime.cli import add_detect_command

    p = add_detect_command(sub, help="deprecated: ssd-runtime detect (the same command)", model_aliases=("--checkpoint",))
    p.set_defaults(func=functools.partial(_cmd_detect, run=p.get_default("func")))


#: Each entry adds one subcommand to the parser (a later feature adds one line here).
COMMANDS = [_add_check, _add_data, _add_convert, _add_fit, _add_eval, _add_detect, _add_import_tutorial]


def build_parser() -> argparse.ArgumentParser:
    return cli_common.build_parser("ssd-train", "Train and evaluate SSD300 in PyTorch.", COMMANDS)


def main(argv: list[str] | None = None) -> int:
    return cli_common.run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
