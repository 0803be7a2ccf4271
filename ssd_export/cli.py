"""``ssd-export``: thin command line over the export API. Subcommands register in COMMANDS."""
from __future__ import annotations

import argparse
import json
import sys

from ssd_export import defaults
from ssd_runtime import cli_common, options
from ssd_runtime.options import BATCH_SIZE, BATCH_SIZES, MODEL, Option, default_of

#: The images of an INT8 calibration set: ``ssd-export calibration`` and ``ssd-export deploy``.
CALIBRATION_IMAGES = Option(("--calibration-images",), "calibration_images", "images in the calibration set "
                            "(default %(default)s)", parse=int, metavar="N")


def _print_report(report: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report, sort_keys=True))
        return
    print(f"variant {report['variant']}, batch {report['batch_size']} (traced at {report['trace_batch']}), "
          f"{report['images']}")
    for name, stats in (report.get("outputs") or {}).items():
        print(f"  {name:14s} max abs {stats['max_abs']:.3g}  max rel {stats['max_rel']:.3g}  "
              f"allclose {stats['allclose']}  finite {stats['finite']}")
    rules = report.get("tensorrt_rules")
    if rules is not None:
        print("  TensorRT parser rules: " + ("ok" if not rules["violations"] else
                                             f"{len(rules['violations'])} violation(s)"))
        for violation in rules["violations"]:
            print(f"    {violation}")
    for name, comp in report.get("detections", {}).items():
        print(f"  detections ({name}): identical {comp['identical']}, {comp['num_detections_a']} vs "
              f"{comp['num_detections_b']}, edge cases {comp['edge_differences']}, mismatches {comp['num_mismatches']}")
    if report.get("judged") is False:
        print("  INT8: the outputs and detections above are reported, not judged; judge its accuracy by mAP: "
              "ssd-runtime eval --model MODEL --data DATA --checkpoint CHECKPOINT")
    print("PASSED" if report["passed"] else "FAILED: " + "; ".join(report["failures"]))


def _cmd_onnx(args: argparse.Namespace) -> int:
    """Export a checkpoint to ONNX, verify parity, print the report."""
    from ssd_export.onnx.export import export_onnx
    from ssd_export.parity import ParityError

    batch = {} if args.static_batch is None else {"dynamic_batch": False, "static_batch": args.static_batch}
    try:
        result = export_onnx(
            args.model, args.output, **batch, variant=args.variant, opset=args.opset,
            exporter=args.exporter, verify=not args.no_verify, max_candidates=args.max_candidates,
            end2end_settings=args.end2end_settings,
        )
    except ParityError as exc:
        _print_report(exc.report, args.json)
        print(f"ssd-export onnx: error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result.to_dict(), sort_keys=True))
        return 0
    print(f"wrote {result.output} ({result.size_bytes / 1e6:.1f} MB, {result.variant}, opset {result.opset}, "
          f"{'dynamic batch' if result.dynamic_batch else f'static batch {result.trace_batch}'}) "
          f"in {result.seconds:.1f} s")
    if result.verification is not None:
        _print_report(result.verification, False)
        print(f"report: {result.report_path}")
    return 0


def _add_onnx(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("onnx", help="export a checkpoint to one verified ONNX file (spec in its metadata)")
    options.add(p, MODEL, help="toolkit checkpoint (.pt)", deprecated=("--checkpoint",))
    p.add_argument("-o", "--output", required=True, help="ONNX file to write (e.g. ssd300.onnx)")
    p.add_argument("--static-batch", type=int, default=None, metavar="N",
                   help="fix the batch size to N (default: dynamic batch)")
    p.add_argument("--variant", choices=defaults.VARIANTS, default=defaults.DEFAULT_VARIANT)
    p.add_argument("--opset", type=int, default=defaults.DEFAULT_OPSET,
                   help=f"ONNX opset (default {defaults.DEFAULT_OPSET})")
    p.add_argument("--exporter", choices=defaults.EXPORTERS, default=defaults.DEFAULT_EXPORTER)
    p.add_argument("--max-candidates", type=int, default=defaults.DEFAULT_MAX_CANDIDATES,
                   help="end2end: per-image cap on (class, prior) candidates entering the NMS "
                   f"(default {defaults.DEFAULT_MAX_CANDIDATES})")
    p.add_argument("--end2end-settings", choices=defaults.END2END_SETTINGS, default=defaults.END2END_SETTINGS[0],
                   help="end2end: bake in the spec's detection settings (default) or its evaluation settings "
                   "(min_score 0.01, for ssd-runtime eval's mAP)")
    p.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime parity check")
    p.add_argument("--json", action="store_true", help="one-line JSON report")
    p.set_defaults(func=_cmd_onnx)


def _cmd_verify(args: argparse.Namespace) -> int:
    """Verify an ONNX file against a checkpoint; print (and optionally save) the report."""
    from ssd_export.parity import write_report
    from ssd_export.onnx.verify import verify_onnx

    report = verify_onnx(args.model, args.checkpoint, batch_size=args.batch_size)
    if args.report:
        write_report(report, args.report)
    _print_report(report, args.json)
    return 0 if report["passed"] else 1


def _add_verify(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="ONNX Runtime vs PyTorch parity of an exported ONNX file, and TensorRT's "
                       "ONNX-parser rules on it")
    options.add(p, MODEL, help="exported ONNX file")
    options.add(p, options.CHECKPOINT, help="the checkpoint it was exported from", required=True)
    options.add(p, BATCH_SIZE, deprecated=("--batch",),
                help=f"batch size (default {defaults.DEFAULT_VERIFY_BATCH}, or the static one)")
    p.add_argument("--report", default=None, help="also save the JSON report here")
    p.add_argument("--json", action="store_true", help="one-line JSON report")
    p.set_defaults(func=_cmd_verify)


def _cmd_calibration(args: argparse.Namespace) -> int:
    """Build a calibration manifest; print its warnings and a per-class summary."""
    import warnings
    from pathlib import Path

    from ssd_export.int8.calibration import build_manifest, write_manifest

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        manifest = build_manifest(args.data, split=args.split, images=args.images, seed=args.seed, model=args.model)
    for warning in caught:
        print(f"ssd-export calibration: warning: {warning.message}", file=sys.stderr)
    selection = manifest["selection"]
    output = args.output or f"calibration/{Path(manifest['dataset']['root']).name}_{args.split}_{selection['selected']}.json"
    path = write_manifest(manifest, output)
    if args.json:
        print(json.dumps({"output": str(path), "selected": selection["selected"],
                          "class_images": selection["class_images"]}, sort_keys=True))
        return 0
    print(f"wrote {path}: {selection['selected']} images of split {args.split!r} "
          f"({manifest['dataset']['split_images']} in the split), seed {args.seed}, "
          f"preprocessing from {manifest['preprocessing']['source']}")
    for name, count in selection["class_images"].items():
        print(f"  {name:16s} {count:5d} images (split: {manifest['dataset']['split_class_images'][name]})")
    return 0


def _add_calibration(sub: argparse._SubParsersAction) -> None:
    from ssd_export.int8.calibration import build_manifest

    p = sub.add_parser("calibration", help="choose and hash a class-balanced INT8 calibration set (JSON manifest)")
    p.add_argument("--data", required=True, help="VOC root, VOCdevkit or a folder holding one, COCO root or YOLO root (told apart by what is on disk)")
    p.add_argument("--split", default=default_of(build_manifest, "split"))
    options.add(p, CALIBRATION_IMAGES, dest="images", default=default_of(build_manifest, "images"), deprecated=("--images",))
    p.add_argument("--seed", type=int, default=default_of(build_manifest, "seed"),
                   help="seed of the selection order (default %(default)s)")
    options.add(p, MODEL, required=False,
                help="model file (.pt, .onnx) whose preprocessing to record (default: the default spec's)")
    p.add_argument("-o", "--output", default=None,
                   help="manifest to write (default calibration/<data folder>_<split>_<count>.json)")
    p.add_argument("--json", action="store_true", help="one-line JSON summary")
    p.set_defaults(func=_cmd_calibration)


def _cmd_int8(args: argparse.Namespace) -> int:
    """Quantize an fp32 ONNX to a Q/DQ INT8 ONNX (with --max-drop: the sensitive-layer search); print the report."""
    from ssd_export.int8.quantize import QUANTIZER_TABLE, Int8Error, quantize_int8

    options = dict(method=args.method, percentile=args.percentile, batch_size=args.batch_size,
                   data_root=args.data_root, exclude=args.exclude or (), parity=not args.no_parity,
                   quantizer=args.quantizer)
    if (args.max_drop is None) != (args.data is None):
        raise Int8Error("--max-drop and --data go together: the search judges the mAP drop on held-out "
                        "images of the dataset's trainval split")
    if args.max_drop is not None and not QUANTIZER_TABLE[args.quantizer].searchable:
        raise Int8Error("--max-drop searches ONNX Runtime's Q/DQ graph (its per-conv surgery reads that graph's "
                        "float weights); use it with --quantizer onnxruntime")
    if args.max_drop is not None:
        return _int8_search(args, options)
    report = quantize_int8(args.onnx, args.calibration, args.output, **options)
    if args.json:
        print(json.dumps(report, sort_keys=True))
        return 0
    _print_int8(report)
    return 0


def _int8_search(args: argparse.Namespace, options: dict) -> int:
    """``ssd-export int8 --max-drop``: the search's trials, then the written model's report; 1 when no trial met the target."""
    from ssd_export.int8.search import search_int8

    search = search_int8(args.onnx, args.calibration, args.output, data=args.data, max_drop=args.max_drop,
                         max_trials=args.max_trials, holdout_images=args.holdout_images, **options)
    if args.json:
        print(json.dumps(search, sort_keys=True))
    else:
        heldout = search["heldout"]
        print(f"sensitive-layer search on {heldout['images']} held-out {heldout['split']} images (not in the "
              f"calibration set or the test split): fp32 mAP {search['fp32_map']:.4f}, target drop <= "
              f"{search['max_drop_points']} points")
        for trial in [search["baseline"], *search["trials"]]:
            print(f"  {trial['name']:9s} {len(trial['kept_float']):2d} conv(s) in float: INT8 mAP {trial['int8_map']:.4f}, "
                  f"drop {trial['drop_points']:+.3f} points, {'within' if trial['met'] else 'OUTSIDE'} the target "
                  f"({trial['seconds']:.1f} s)" + (f" [{', '.join(trial['kept_float'])}]" if trial["kept_float"] else ""))
        print(f"  search report: {search['report_path']}")
        _print_int8(search["int8_report"])
    if not search["met"]:
        chosen = next(t for t in [search["baseline"], *search["trials"]] if t["name"] == search["chosen"])
        print(f"ssd-export int8: error: no trial met the {search['max_drop_points']}-point target in "
              f"{len(search['trials'])} trial(s); wrote the smallest drop ({chosen['name']}, "
              f"{chosen['drop_points']:+.3f} points) to {search['output']}: it misses the target "
              "(raise --max-trials, recalibrate, or accept the drop)", file=sys.stderr)
        return 1
    return 0


def _print_int8(report: dict) -> None:
    settings, calib = report["settings"], report["calibration"]
    method = settings["method"] + (f" {settings['percentile']}" if "percentile" in settings else "")
    print(f"wrote {report['output']} ({report['size_bytes'] / 1e6:.1f} MB, INT8 Q/DQ, {method}) in "
          f"{report['seconds']:.1f} s (calibration and quantization {report['quantize_seconds']:.1f} s)")
    print(f"  calibration: {calib['images']} images in {calib['batches']} batches from {calib['manifest']}")
    print(f"  kept in float: {', '.join(settings['excluded_nodes']['l2_norm'])} (L2 norm), "
          f"{len(settings['excluded_nodes']['output_tail'])} output-tail nodes, head conv outputs"
          + (f", {', '.join(settings['excluded_nodes']['user'])}" if settings["excluded_nodes"]["user"] else ""))
    print("  TensorRT Q/DQ rules: passed")
    if "parity" in report:
        parity = report["parity"]
        print(f"  parity with the fp32 source on {parity['images']} (informative; judge INT8 by mAP: "
              "ssd-runtime eval --model M --data D --checkpoint C)")
        for name, stats in parity["outputs"].items():
            print(f"    {name:14s} max abs diff {stats['max_abs']:.3g} (max |fp32| {stats['max_abs_expected']:.3g})")
        for name, comp in parity["detections"].items():
            print(f"    detections ({name}): {comp['num_detections_b']} vs {comp['num_detections_a']} fp32, "
                  f"{comp['num_mismatches_within_int8_atol']} differ beyond the int8 atol")
    print(f"report: {report['report_path']}")


def _add_int8(sub: argparse._SubParsersAction) -> None:
    from ssd_export.int8.calibration import DEFAULT_BATCH

    p = sub.add_parser("int8", help="quantize an fp32 ONNX export to a Q/DQ INT8 ONNX (TensorRT's rules)")
    options.add(p, MODEL, dest="onnx", help="fp32 ONNX export (ssd-export onnx --variant fp32)", deprecated=("--onnx",))
    p.add_argument("--calibration", required=True, help="calibration manifest (ssd-export calibration)")
    p.add_argument("-o", "--output", required=True, help="INT8 ONNX file to write (e.g. ssd300_int8.onnx)")
    p.add_argument("--method", choices=defaults.INT8_METHODS, default=defaults.DEFAULT_INT8_METHOD,
                   help="calibration method (default %(default)s)")
    p.add_argument("--quantizer", choices=defaults.QUANTIZERS, default=defaults.DEFAULT_QUANTIZER,
                   help="onnxruntime (quantize_static) or modelopt (NVIDIA ModelOpt, the modelopt extra in its own "
                   "environment; --method max or entropy) (default %(default)s)")
    p.add_argument("--percentile", type=float, default=defaults.DEFAULT_PERCENTILE,
                   help="percentile method: percentile of |activation| kept (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH, help="calibration batch (default %(default)s)")
    p.add_argument("--data-root", default=None, help="where the manifest's dataset is now, if it moved")
    p.add_argument("--exclude", nargs="+", default=None, metavar="NODE",
                   help="more nodes to keep in float (the L2 norm and the output tail always are)")
    p.add_argument("--no-parity", action="store_true", help="skip the informative parity with the fp32 source")
    p.add_argument("--max-drop", type=float, default=None, metavar="POINTS",
                   help="search: keep the most sensitive convs in float until the held-out mAP drop is at most "
                   "POINTS (0-100 scale, e.g. 0.5); exit 1 (the smallest drop written) when no trial meets it")
    p.add_argument("--data", default=None,
                   help="search: dataset whose trainval images outside the calibration set and the test split are held out")
    p.add_argument("--max-trials", type=int, default=defaults.DEFAULT_MAX_TRIALS,
                   help="search: trials after the baseline, keeping 1, 2, 4, ... convs in float (default %(default)s)")
    p.add_argument("--holdout-images", type=int, default=defaults.DEFAULT_HOLDOUT_IMAGES,
                   help="search: held-out images for the mAP (default %(default)s)")
    p.add_argument("--json", action="store_true", help="one-line JSON report")
    p.set_defaults(func=_cmd_int8)


def _cmd_triton(args: argparse.Namespace) -> int:
    """Write a Triton model repository for an ONNX model or a TensorRT engine; print its layout."""
    from ssd_export.triton.repository import write_triton_repository

    repo = write_triton_repository(
        args.model, args.out, name=args.name, max_batch=args.max_batch,
        preferred_batch_sizes=tuple(args.preferred_batch_sizes or ()), max_queue_delay_us=args.max_queue_delay_us,
        instances=args.instances, gpus=tuple(args.gpus) if args.gpus is not None else None,
        postprocess_instances=args.postprocess_instances, max_detections=args.max_detections, force=args.force,
    )
    if args.json:
        print(json.dumps(repo.to_dict(), sort_keys=True))
        return 0
    batching = f"max_batch_size {repo.max_batch_size}" if repo.max_batch_size else f"static batch {repo.static_batch}"
    print(f"wrote {repo.root}: clients call {repo.entry_model!r} ({batching}, {repo.max_detections} detections per image)")
    for model_name, folder in repo.models.items():
        print(f"  {model_name:24s} {folder}")
    for note in repo.notes:
        print(f"  note: {note}")
    print(f"serve: tritonserver --model-repository={repo.root.resolve()}  (docs/serving.md)")
    return 0


def _add_triton(sub: argparse._SubParsersAction) -> None:
    from ssd_export.triton.repository import write_triton_repository

    def default(name: str):
        return default_of(write_triton_repository, name)

    p = sub.add_parser("triton", help="write a Triton Inference Server model repository (network, postprocess, ensemble)")
    options.add(p, MODEL, help="ONNX export (.onnx) or TensorRT engine (.engine/.plan with its sidecar)")
    p.add_argument("--out", required=True, help="model repository folder to write (e.g. model_repository/)")
    p.add_argument("--name", default=default("name"),
                   help="the model clients call (default %(default)s; also NAME_network, NAME_postprocess)")
    options.add(p, Option(("--max-batch-size",), "max_batch", f"max_batch_size (default: the engine profile's max, or "
                          f"{defaults.DEFAULT_TRITON_MAX_BATCH} for ONNX)", parse=int, metavar="N"),
                default=default("max_batch"), deprecated=("--max-batch",))
    p.add_argument("--preferred-batch-sizes", type=int, nargs="+", default=None, metavar="N",
                   help="dynamic batcher's preferred batch sizes (default: none, the largest batch available)")
    p.add_argument("--max-queue-delay-us", type=int, default=default("max_queue_delay_us"), metavar="US",
                   help="dynamic batcher's max queue delay in microseconds (default %(default)s)")
    p.add_argument("--instances", type=int, default=default("instances"), metavar="N",
                   help="network instances (per GPU with --gpus) (default %(default)s)")
    p.add_argument("--gpus", type=int, nargs="+", default=None, metavar="ID",
                   help="GPU ids for the network (KIND_GPU); default: ONNX on the CPU, an engine on every GPU")
    p.add_argument("--postprocess-instances", type=int, default=default("postprocess_instances"), metavar="N",
                   help="Python postprocess instances (CPU) (default %(default)s)")
    p.add_argument("--max-detections", type=int, default=None, metavar="K",
                   help="detections per image in the padded outputs (default: the spec's detection top_k)")
    p.add_argument("--force", action="store_true",
                   help="replace a previous model repository at --out, as a whole (a folder holding anything "
                   "but model folders is never replaced)")
    p.add_argument("--json", action="store_true", help="one-line JSON report")
    p.set_defaults(func=_cmd_triton)


def _cmd_deploy(args: argparse.Namespace) -> int:
    """Build, verify, evaluate, time and draw every artifact; print the report's tables; 1 when one misses its target."""
    from ssd_export.deploy.run import deploy
    from ssd_export.deploy.report import render_markdown

    targets = {}
    for item in args.target or ():
        precision, _, points = item.partition("=")
        try:
            targets[precision] = float(points)
        except ValueError:
            raise ValueError(f"--target takes PRECISION=POINTS (e.g. int8=0.5), got {item!r}") from None
    try:
        report = deploy(
            args.model, args.data, args.out, artifacts=args.artifacts, calibration=args.calibration,
            calibration_images=args.calibration_images, engines=args.engines, bench_batches=args.bench_batches,
            bench_warmup=args.bench_warmup, bench_iterations=args.bench_iterations, draw_images=args.draw_images,
            max_drop=args.max_drop, int8_method=args.method, int8_parity=not args.no_int8_parity,
            max_images=args.max_images, targets=targets, backends=args.backends,
            progress=not args.no_progress, metric=args.metric,
        )
    except KeyboardInterrupt:
        print(f"ssd-export deploy: interrupted; the report of what finished is in {args.out}/report.md", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(report, sort_keys=True))
    else:
        print(render_markdown(report))
        print(f"report: {report['report_md']} (data: {report['report_json']})")
    if not report["passed"]:
        print("ssd-export deploy: error: " + "; ".join(report["failures"]), file=sys.stderr)
        return 1
    return 0


def _add_deploy(sub: argparse._SubParsersAction) -> None:
    from ssd_export.deploy.run import RUNTIMES, deploy
    from ssd_runtime.evaluate import TARGET_POINTS

    def default(name: str):
        return default_of(deploy, name)

    p = sub.add_parser("deploy", help="every artifact of a checkpoint built, verified, evaluated, timed and drawn, "
                       "with a report (report.md, report.json, figures)")
    options.add(p, MODEL, help="toolkit checkpoint (.pt)", deprecated=("--checkpoint",))
    p.add_argument("--data", required=True, help="VOC, COCO or YOLO root (told apart by what is on disk) or generated dataset: test split evaluated, trainval calibrates")
    p.add_argument("--out", required=True, help="folder of the artifacts and the report (a rerun reuses what still matches)")
    p.add_argument("--artifacts", nargs="+", choices=defaults.DEPLOY_ARTIFACTS, default=list(default("artifacts")),
                   metavar="NAME", help=f"what to build, of {', '.join(defaults.DEPLOY_ARTIFACTS)} (default: "
                   f"{' '.join(defaults.DEFAULT_DEPLOY_ARTIFACTS)}; engines: a TensorRT engine of each ONNX artifact)")
    p.add_argument("--backends", nargs="+", choices=RUNTIMES, default=default("backends"), metavar="RUNTIME",
                   help=f"runtimes each ONNX artifact is verified, evaluated and timed in, one report row each, of "
                   f"{', '.join(RUNTIMES)} (onnxruntime among them; default: onnxruntime, plus openvino where installed)")
    p.add_argument("--engines", choices=defaults.ENGINE_MODES, default=default("engines"),
                   help="auto: build engines where TensorRT and a GPU exist, else say why in the report; "
                   "require: fail without them; skip (default %(default)s)")
    p.add_argument("--calibration", default=None, metavar="MANIFEST",
                   help="INT8 calibration manifest (default: one built from the data's trainval split)")
    options.add(p, CALIBRATION_IMAGES, default=default("calibration_images"),
                help="images of the built calibration set (default %(default)s)")
    p.add_argument("--method", choices=defaults.INT8_METHODS, default=None,
                   help=f"INT8 calibration method (default {defaults.DEFAULT_INT8_METHOD})")
    p.add_argument("--max-drop", type=float, default=None, metavar="POINTS",
                   help="INT8: keep sensitive convs in float until the held-out mAP drop is <= POINTS "
                   "(ssd-export int8 --max-drop)")
    p.add_argument("--no-int8-parity", action="store_true",
                   help="skip the INT8 model's informative parity with the fp32 export (it is judged by mAP)")
    options.add(p, BATCH_SIZES.but(flags=("--bench-batch-sizes",), dest="bench_batches"), deprecated=("--bench-batches",),
                default=list(default("bench_batches")), help="batch sizes timed (default: %(default)s)")
    p.add_argument("--bench-warmup", type=int, default=default("bench_warmup"), metavar="N",
                   help="untimed iterations per batch size (default %(default)s)")
    p.add_argument("--bench-iterations", type=int, default=default("bench_iterations"), metavar="N",
                   help="timed iterations per batch size (default %(default)s)")
    p.add_argument("--draw-images", type=int, default=default("draw_images"), metavar="N",
                   help="test images drawn per artifact (default %(default)s)")
    options.add(p, options.MAX_IMAGES, default=default("max_images"), help="evaluate the first N test images only (0 = all)")
    p.add_argument("--target", action="append", metavar="PRECISION=POINTS",
                   help="override a |delta mAP| target in points (defaults: "
                   f"{', '.join(f'{k}={v}' for k, v in TARGET_POINTS.items())})")
    options.add(p, options.METRIC, default=default("metric"),
                help="coco: COCO's AP, AP50 and AP75 of each artifact beside its VOC mAP (faster-coco-eval; targets "
                     "stay judged on the VOC mAP); voc: the VOC mAP only; auto (default): coco on COCO data")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print report.json's content instead of the tables")
    p.set_defaults(func=_cmd_deploy)


def _cmd_engine(args: argparse.Namespace) -> int:
    """Build a TensorRT engine from a toolkit ONNX, check it, write plan + sidecar; print what was made."""
    from ssd_export.options import ENGINE_OPTIONS
    from ssd_export.tensorrt.engine import EngineParityError, build_engine

    settings = {option.dest: getattr(args, option.dest) for option in ENGINE_OPTIONS}  # parsed into the API's values
    try:
        build = build_engine(**settings, keep_failed=args.keep_failed, parity=not args.no_parity)
    except EngineParityError as exc:
        if args.json:
            print(json.dumps(exc.report, sort_keys=True))
        print(f"ssd-export engine: error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(build.to_dict(), sort_keys=True))
        return 0
    sidecar = build.sidecar
    profile = ", ".join(f"{name} {shapes['min'][0]}..{shapes['opt'][0]}..{shapes['max'][0]}"
                        for name, shapes in sidecar.profile.items())
    print(f"wrote {build.engine_path} and {build.sidecar_path}: TensorRT {sidecar.tensorrt_version}, {sidecar.precision} "
          f"({sidecar.variant} ONNX{', FP16 builder flag' if sidecar.fp16_flag else ''}, TF32 "
          f"{'on' if sidecar.tf32 else 'off'}), {sidecar.gpu_name} (compute "
          f"capability {sidecar.compute_capability}), batch {profile}; built in {sidecar.build_seconds:.1f} s")
    if build.parity is None:
        print("parity: not checked (--no-parity)")
    else:
        print(f"parity against the {build.parity['reference_kind']} ({build.parity['reference']}): PASSED")
    for warning in build.warnings:
        print(f"  TensorRT warning: {warning}")
    return 0


def _add_engine(sub: argparse._SubParsersAction) -> None:
    from ssd_export.options import ENGINE_OPTIONS
    from ssd_export.tensorrt.engine import build_engine

    p = sub.add_parser("engine", help="build a TensorRT engine (plan + sidecar JSON) from a toolkit ONNX, checked")
    for option in ENGINE_OPTIONS:  # the engine's rebuild command is written from the same records
        default = default_of(build_engine, option.dest)
        options.add(p, option, **({} if option.required else {"default": default}))
    p.add_argument("--keep-failed", action="store_true", help="keep the engine when its parity check fails")
    p.add_argument("--no-parity", action="store_true", help="skip the parity check after the build")
    p.add_argument("--json", action="store_true", help="one-line JSON (the sidecar and paths)")
    p.set_defaults(func=_cmd_engine)


#: Each entry adds one subcommand to the parser (a later feature adds one line here).
COMMANDS: list = [_add_onnx, _add_verify, _add_calibration, _add_int8, _add_engine, _add_triton, _add_deploy]


def build_parser() -> argparse.ArgumentParser:
    return cli_common.build_parser("ssd-export", "Export SSD300 to ONNX and TensorRT.", COMMANDS)


def main(argv: list[str] | None = None) -> int:
    return cli_common.run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
