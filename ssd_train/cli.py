"""``ssd-train``: thin command line over the training API. Subcommands register in COMMANDS."""
from __future__ import annotations

import argparse
import json
import sys
import time

from ssd_runtime import cli_common
from ssd_runtime.priors import PRIOR_PRESETS
from ssd_runtime.spec import NORMS
from ssd_train.augment import AUGMENTATIONS


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

#: Named recipes: defaults for flags the user did not give. "reference" is TrainConfig's own defaults.
RECIPES: dict[str, dict] = {
    "reference": {},
    # The CPU quick start, about 14 minutes on 2 cores (BENCHMARKS.md): a narrow network with BatchNorm
    # (none on the two 300x300 convs: cheaper) and the background head start, resize + flip
    # augmentation, AdamW with warm-up and a cosine schedule, and small batches (batch 4 beat 8 and 16
    # at the same number of images; width 0.0625 at twice the images did worse). Priors become positives
    # at IoU 0.4 instead of 0.5: more positives per object, the largest single gain measured.
    "cpu-quick": {"width": 0.125, "norm": "batch-from-conv2", "head_init": "background", "augment": "flip",
                  "match_threshold": 0.4, "batch_size": 4, "optimizer": "adamw", "lr": 2e-3, "weight_decay": 5e-4,
                  "schedule": "cosine", "warmup": 200, "iterations": 3200, "workers": 1, "eval_every": 0,
                  "save_every": 200, "log_every": 20, "grad_clip": 10.0, "channels_last": True},
}


def _cmd_fit(args: argparse.Namespace) -> int:
    """Train; print a JSON summary."""
    import dataclasses

    from ssd_train.train import TrainConfig, fit

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    values = dict(RECIPES[args.recipe])
    values.update({k: v for k, v in vars(args).items() if k in fields and v is not None})
    if args.no_progress:
        values["progress"] = False
    if args.device == "cuda" and "channels_last" not in values:
        values["channels_last"] = True
    result = fit(TrainConfig(**values))
    report = dataclasses.asdict(result)
    report["recipe"] = args.recipe
    print(json.dumps(report, indent=None if args.json else 2))
    return 0


def _add_fit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fit", help="train SSD300 on VOC-format data (the reference recipe by default)")
    p.add_argument("--data", nargs="+", required=True, help="VOCdevkit, VOC root(s), or a generated dataset folder")
    p.add_argument("--out", required=True, help="run folder: last.pt, best.pt, metrics.csv")
    p.add_argument("--recipe", choices=sorted(RECIPES), default="reference",
                   help="defaults for flags not given (reference = the paper/tutorial recipe)")
    p.add_argument("--classes", nargs="+", default=None, help="class names (default: the dataset's own)")
    p.add_argument("--skip-unknown-classes", dest="skip_unknown_classes", action="store_true", default=None)
    p.add_argument("--width", type=float)
    p.add_argument("--norm", choices=list(NORMS),
                   help="none = the reference network; batch = BatchNorm after each conv (faster from scratch, "
                        "folded away at export); batch-from-conv2 = the same without conv1_1/conv1_2 (cheaper on a CPU)")
    p.add_argument("--head-init", choices=["reference", "background"],
                   help="class-head initialisation: reference (Xavier) or background (start at P(background) 0.99)")
    p.add_argument("--augment", choices=list(AUGMENTATIONS),
                   help="training augmentation: reference; light = without the zoom-out; flip = resize + flip only")
    p.add_argument("--vgg-weights", help="local torchvision VGG-16 state dict (width 1.0)")
    p.add_argument("--init-from", help="fine-tune from a toolkit checkpoint (class heads re-initialised if classes differ)")
    p.add_argument("--priors", choices=list(PRIOR_PRESETS),
                   help="prior geometry: reference (the paper's VOC SSD300) or coco (the original SSD300's COCO "
                        "priors: smaller, for data with many small objects); recorded in the model spec")
    p.add_argument("--prior-clip", choices=["reference", "extent", "none"])
    p.add_argument("--loc-loss", choices=["smooth_l1", "reference_l1"])
    p.add_argument("--match-threshold", type=float,
                   help="IoU at which a prior becomes a positive of an object (reference 0.5; cpu-quick 0.4)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--iterations", type=int)
    p.add_argument("--optimizer", choices=["sgd", "adamw"])
    p.add_argument("--lr", type=float)
    p.add_argument("--momentum", type=float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--schedule", choices=["step", "cosine"])
    p.add_argument("--lr-steps", type=int, nargs="+")
    p.add_argument("--warmup", type=int, help="iterations of linear warm-up")
    p.add_argument("--grad-clip", type=float, help="clip the gradient norm to this value")
    p.add_argument("--ema", type=float,
                   help="keep an exponential moving average of the weights with this decay (e.g. 0.998; 0 = off): "
                        "checkpoints and evaluations use the averaged weights")
    p.add_argument("--device", choices=["cpu", "cuda"])
    p.add_argument("--amp", choices=["none", "bf16", "fp16"])
    p.add_argument("--channels-last", dest="channels_last", action="store_true", default=None)
    p.add_argument("--workers", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--eval-every", type=int)
    p.add_argument("--eval-images", type=int)
    p.add_argument("--save-every", type=int)
    p.add_argument("--log-every", type=int)
    p.add_argument("--stop-at", type=int, help="stop after this iteration (resume later with --resume)")
    p.add_argument("--resume", action="store_true", default=None, help="continue from OUT/last.pt exactly")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="one-line JSON summary")
    p.set_defaults(func=_cmd_fit)


def _cmd_eval(args: argparse.Namespace) -> int:
    """VOC mAP of a checkpoint on a VOC-format split; table or JSON, optional PR plot."""
    import torch

    from ssd_train.checkpoint import load_model
    from ssd_train.data import VOCDetection
    from ssd_train.train import evaluate

    model, spec = load_model(args.checkpoint)
    device = torch.device(args.device)
    dataset = VOCDetection.from_voc(args.data if len(args.data) > 1 else args.data[0], args.split,
                                    class_names=spec.class_names, train=False, mean=spec.mean, std=spec.std,
                                    size=spec.input_size, skip_unknown=args.skip_unknown_classes)
    if args.images:
        dataset.records = dataset.records[: args.images]
    result = evaluate(model.to(device), dataset, spec, device, args.batch_size, ap_method=args.ap_method,
                      workers=args.workers)
    report = {"checkpoint": args.checkpoint, "split": args.split, "images": len(dataset), **result.to_dict()}
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
    return 0


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="VOC mAP of a checkpoint (PyTorch) at the evaluation settings")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", nargs="+", required=True, help="VOCdevkit, VOC root(s), or a generated dataset folder")
    p.add_argument("--split", default="test")
    p.add_argument("--ap-method", choices=["11point", "allpoint"], default="11point")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--images", type=int, default=0, help="evaluate the first N images only (0 = all)")
    p.add_argument("--skip-unknown-classes", action="store_true")
    p.add_argument("--plot", help="write a precision-recall plot (PNG; needs matplotlib)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_eval)


def _add_detect(sub: argparse._SubParsersAction) -> None:
    """``ssd-train detect --checkpoint C images-or-folders...``: the runtime's detect on a checkpoint."""
    from ssd_runtime.cli import add_detect_command

    add_detect_command(sub, model_flag="--checkpoint")


#: Each entry adds one subcommand to the parser (a later feature adds one line here).
COMMANDS = [_add_check, _add_data, _add_fit, _add_eval, _add_detect, _add_import_tutorial]


def build_parser() -> argparse.ArgumentParser:
    return cli_common.build_parser("ssd-train", "Train and evaluate SSD300 in PyTorch.", COMMANDS)


def main(argv: list[str] | None = None) -> int:
    return cli_common.run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
