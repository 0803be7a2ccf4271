"""``ssd-runtime``: thin command line over the runtime API. Subcommands register in COMMANDS."""
from __future__ import annotations

import argparse
import json
import os
import sys

from ssd_runtime import cli_common, options
from ssd_runtime.backends import BACKENDS, resolve_backend
from ssd_runtime.backends.openvino import INFERENCE_PRECISIONS as OV_PRECISIONS
from ssd_runtime.bench import benchmark
from ssd_runtime.detector import POSTPROCESS_ALIASES, POSTPROCESSES, Detector
from ssd_runtime.evaluate import map_report_of_model_file
from ssd_runtime.metric import AP_METHODS
from ssd_runtime.options import (
    BATCH_SIZE, BATCH_SIZES, CHECKPOINT, DATA_FORMAT, DEVICE, IMAGE_PATHS, MAX_IMAGES, METRIC, MODEL, default_of,
)  # fmt: skip
from ssd_runtime.priors import CLIP_MODES, PRIOR_PRESETS, PriorConfig
from ssd_runtime.sharding import Shard, resolve_shard
from ssd_runtime.streaming import detect_to_file


def _cmd_priors(args: argparse.Namespace) -> int:
    from ssd_runtime.priors import PriorConfig, make_priors, priors_sha256

    config = PriorConfig(**PRIOR_PRESETS[args.preset], clip=args.clip)
    priors = make_priors(config)
    print(json.dumps({"num_priors": int(priors.shape[0]), "sha256": priors_sha256(priors), "preset": args.preset,
                      "scales": list(config.scales), "clip": args.clip}))
    return 0


def _add_priors(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("priors", help="print the number and sha256 of the SSD300 priors")
    p.add_argument("--preset", default="reference", choices=list(PRIOR_PRESETS),
                   help="prior geometry (ssd_runtime.priors.PRIOR_PRESETS)")
    p.add_argument("--clip", default=PriorConfig.__dataclass_fields__["clip"].default, choices=CLIP_MODES)
    p.set_defaults(func=_cmd_priors)


def _add_model_flags(p: argparse.ArgumentParser, required: bool = True, model_aliases: tuple[str, ...] = ()) -> None:
    options.add(p, MODEL, required=required, deprecated=model_aliases)
    p.add_argument("--backend", default=default_of(Detector.load, "backend"), choices=["auto", *BACKENDS],
                   help="auto (by file kind) or a backend name")
    options.add(p, DEVICE, default=default_of(Detector.load, "device"))
    p.add_argument("--postprocess", default=default_of(Detector.load, "postprocess"), choices=[*POSTPROCESSES, *POSTPROCESS_ALIASES],
                   metavar="{" + ",".join(POSTPROCESSES) + "}",
                   help="numpy (host) or torch (on the backend's device, the CPU included; 'gpu' is an alias)")
    p.add_argument("--fp16", action="store_true", help="PyTorch backend: FP16 network (conv4_3 norm in FP32)")
    p.add_argument("--cuda-graph", action="store_true",
                   help="PyTorch or TensorRT backend on CUDA: capture once per batch size, then replay CUDA graphs")
    p.add_argument("--threads", type=int, default=None,
                   help="ONNX Runtime or OpenVINO: inference threads (default: every core; several processes on one CPU: "
                   "cores / processes)")
    p.add_argument("--openvino-device", default=None, metavar="OV_DEVICE",
                   help="OpenVINO backend: the Intel device that computes, CPU (default), GPU, GPU.N or AUTO")
    p.add_argument("--inference-precision", default=None, choices=OV_PRECISIONS,
                   help="OpenVINO backend: the float parts' precision hint (default f32; bf16 is faster on CPUs with "
                   "AMX or AVX-512 BF16)")


def _backend_options(args: argparse.Namespace) -> dict:
    options = {}
    if args.fp16:
        options["fp16"] = True
    if args.cuda_graph:
        options["cuda_graph"] = True
    if args.threads:
        if resolve_backend(args.model, args.backend) not in ("onnxruntime", "openvino"):
            raise ValueError("--threads sizes ONNX Runtime's or OpenVINO's thread pool: it applies to ONNX models only")
        options["intra_op_threads"] = args.threads
    for flag, name in (("--openvino-device", "openvino_device"), ("--inference-precision", "inference_precision")):
        if getattr(args, name) is not None:
            if resolve_backend(args.model, args.backend) != "openvino":
                raise ValueError(f"{flag} is an OpenVINO option: add --backend openvino")
            options[name] = getattr(args, name)
    return options


def _cmd_eval(args: argparse.Namespace) -> int:
    from ssd_runtime.evaluate import detections_report, evaluate_to_file, format_report

    shard = resolve_shard(args.shard, os.environ)
    if args.detections:
        if args.model or args.detections_out:
            raise ValueError("--detections evaluates detections files already written: drop --model/--detections-out")
        report = detections_report(args.detections, args.data, split=args.split, ap_method=args.ap_method,
                                   skip_unknown=args.skip_unknown_classes, metric=args.metric, coco_results=args.coco_results,
                                   data_format=args.data_format)
    elif not args.model:
        raise ValueError("pass --model (run a model on the data) or --detections FILE... (evaluate written detections)")
    elif args.detections_out or shard.sharded:
        if not args.detections_out:
            raise ValueError(f"shard {shard}: each process writes its part of a detections file: pass --detections-out FILE")
        if args.checkpoint:
            raise ValueError("--checkpoint compares two models in one process: drop --detections-out/--shard, or "
                             "evaluate each model to its own --detections-out")
        report = evaluate_to_file(
            args.model, args.data, args.detections_out, split=args.split, backend=args.backend, device=args.device,
            postprocess=args.postprocess, batch_size=args.batch_size, max_images=args.max_images,
            ap_method=args.ap_method, backend_options=_backend_options(args), shard=shard, resume=args.resume,
            skip_unknown=args.skip_unknown_classes, metric=args.metric, coco_results=args.coco_results,
            data_format=args.data_format,
        )  # fmt: skip
        if not report.get("merged", True):
            return _print_part(report, args, shard)
    else:
        if args.resume:
            raise ValueError("--resume continues a --detections-out file: pass the file to continue")
        report = map_report_of_model_file(
            args.model, args.data, checkpoint=args.checkpoint, split=args.split, backend=args.backend,
            device=args.device, postprocess=args.postprocess, batch_size=args.batch_size, max_images=args.max_images,
            ap_method=args.ap_method, backend_options=_backend_options(args), metric=args.metric,
            coco_results=args.coco_results, data_format=args.data_format,
        )
    print(json.dumps(report, indent=1) if args.json else format_report(report))
    return 0 if report["within_target"] in (None, True) else 1


def _print_part(report: dict, args: argparse.Namespace, shard: Shard) -> int:
    """A shard that does not merge: say what it wrote (under torchrun rank 0 reports for all: stay quiet)."""
    if shard.torchrun:
        return 0
    run = report["run"]
    print(json.dumps(report, indent=1) if args.json else
          f"shard {shard}: {run['images']} images written ({run['skipped']} already there) to {run['path']}; "
          f"once every shard is done: ssd-runtime eval --data {args.data} --detections {' '.join(report['parts'])}")
    return 0


def add_stream_flags(p: argparse.ArgumentParser, out_help: str) -> None:
    """Flags of a run that streams detections to a file: the file, --resume, --shard."""
    p.add_argument("--detections-out", metavar="FILE", help=out_help)
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted --detections-out file: images already in it are skipped")
    p.add_argument("--shard", metavar="I/N",
                   help="run share I (0-based) of N processes, writing FILE's part I (torchrun sets this itself)")


def add_evaluation_flags(p: argparse.ArgumentParser, batch_size: int, data_nargs: str | None = None,
                         max_images_aliases: tuple[str, ...] = ()) -> None:
    """The flags of a VOC mAP run that ``ssd-runtime eval`` and ``ssd-train eval`` share: data, split, batch size,
    image count, AP method, unknown classes, the detections file and JSON."""
    p.add_argument("--data", required=True, nargs=data_nargs,
                   help="VOC root, VOCdevkit, COCO root (annotations/*.json), YOLO root (data.yaml, images/, labels/) or "
                        "a generated dataset folder, told apart by what is on disk (or --data-format)"
                        + (" (or several VOC roots)" if data_nargs else ""))
    options.add(p, DATA_FORMAT, default=default_of(map_report_of_model_file, "data_format"))
    p.add_argument("--split", default=default_of(map_report_of_model_file, "split"))
    options.add(p, BATCH_SIZE, default=batch_size)
    options.add(p, MAX_IMAGES, default=default_of(map_report_of_model_file, "max_images"),
                deprecated=max_images_aliases, help="evaluate the first N images only (0 = all)")
    p.add_argument("--ap-method", default=default_of(map_report_of_model_file, "ap_method"), choices=AP_METHODS)
    p.add_argument("--skip-unknown-classes", action="store_true", help="drop annotated objects of classes the model lacks")
    add_stream_flags(p, "write each image's detections to FILE as they come (JSON lines; see docs/evaluation.md)")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="VOC mAP through the runtime, beside the PyTorch checkpoint it came from")
    _add_model_flags(p, required=False)
    add_evaluation_flags(p, batch_size=default_of(map_report_of_model_file, "batch_size"))
    options.add(p, CHECKPOINT, help="the .pt the model was exported from: its mAP is reported beside (delta in points)")
    p.add_argument("--detections", nargs="+", metavar="FILE",
                   help="evaluate detections files (one, or every part of a sharded run) instead of running --model")
    options.add(p, METRIC, default=default_of(map_report_of_model_file, "metric"),
                help="coco: COCO's AP, AP50, AP75, AP/AR by size, AR1/10/100 and per-class AP beside the VOC mAP "
                     "(faster-coco-eval); voc: the VOC mAP only; auto (default): coco on COCO data, voc on the rest")
    p.add_argument("--coco-results", metavar="FILE",
                   help="also write the detections in COCO's results format (the dataset's image and category ids "
                        "for COCO data) for other tools")
    p.set_defaults(func=_cmd_eval)


def _cmd_bench(args: argparse.Namespace) -> int:
    from ssd_runtime.bench import format_summary

    detector = Detector.load(args.model, args.backend, device=args.device, postprocess=args.postprocess,
                             **_backend_options(args))
    images = image_files(args.image_paths) if args.image_paths else None
    report = benchmark(detector, args.batch_sizes, warmup=args.warmup, iterations=args.iterations, images=images)
    # threads stated: the count asked for (--threads), else None: the runtime's default, every core counted here
    report.update(model=args.model, threads=args.threads, cores=os.cpu_count())
    print(json.dumps(report, indent=1) if args.json else format_summary(report))
    return 0


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="latency/throughput per stage (preprocess, inference, postprocess, end to end)")
    _add_model_flags(p)
    options.add(p, BATCH_SIZES, default=list(default_of(benchmark, "batch_sizes")))
    p.add_argument("--warmup", type=int, default=default_of(benchmark, "warmup"))
    p.add_argument("--iterations", type=int, default=default_of(benchmark, "iterations"))
    options.add(p, IMAGE_PATHS, deprecated=("--images",),
                help="time on these images (a batch of B takes the first B, cycling; give real ones for a "
                "trained model) instead of random 500x375 scenes")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of a summary")
    p.set_defaults(func=_cmd_bench)


def _cmd_detect(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ssd_runtime.detector import Detector
    from ssd_runtime.draw import draw_detections
    from ssd_runtime.fileio import atomic_path
    from ssd_runtime.images import open_image

    shard = resolve_shard(args.shard, os.environ)
    if args.detections_out or shard.sharded:
        return _detect_to_file(args, shard)
    if args.resume:
        raise ValueError("--resume continues a --detections-out file: pass the file to continue")
    detector = Detector.load(args.model, args.backend, device=args.device, postprocess=args.postprocess,
                             **_backend_options(args))
    out_dir = Path(args.out or "detections")
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = []
    for path in image_files(args.images):
        image = open_image(path)
        result = detector.detect(image, min_score=args.min_score, max_overlap=args.max_overlap, top_k=args.top_k)
        drawn_path = out_dir / f"{path.stem}.jpg"
        json_path = out_dir / f"{path.stem}.json"
        with atomic_path(drawn_path) as tmp:
            draw_detections(image, result).save(tmp, format="JPEG", quality=92)
        entry = {"image": str(path), "output": str(drawn_path), **result.to_dict()}
        with atomic_path(json_path) as tmp:
            Path(tmp).write_text(json.dumps(entry, indent=1))
        summary.append({"image": str(path), "output": str(drawn_path), "json": str(json_path), "detections": len(result)})
    print(json.dumps(summary, indent=1) if args.json else
          "\n".join(f"{s['image']}: {s['detections']} detections -> {s['output']}, {s['json']}" for s in summary))
    return 0


def _detect_to_file(args: argparse.Namespace, shard: Shard) -> int:
    """``detect --detections-out FILE``: the images' detections streamed to FILE (or this shard's part of it)."""
    from ssd_runtime.evaluate import precision_of
    from ssd_runtime.sharding import device_for
    from ssd_runtime.streaming import ImageItem

    if not args.detections_out:
        raise ValueError(f"shard {shard}: each process writes its part of a detections file: pass --detections-out FILE")
    if args.out:
        raise ValueError("--out draws every image, --detections-out writes one detections file: choose one")
    detector = Detector.load(args.model, args.backend, device=device_for(args.device, shard),
                             postprocess=args.postprocess, **_backend_options(args))
    items = [ImageItem(i, str(path), path) for i, path in enumerate(image_files(args.images))]
    settings = detector.settings_with(args.min_score, args.max_overlap, args.top_k)
    run = detect_to_file(detector, args.model, items, args.detections_out, settings, precision=precision_of(detector),
                         batch_size=args.batch_size, shard=shard, resume=args.resume,
                         source={"backend": type(detector.backend).__name__, "device": detector.backend.device})
    print(json.dumps(run) if args.json else
          f"shard {shard}: {run['images']} images written ({run['skipped']} already there) to {run['path']}")
    return 0


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def image_files(inputs: list[str]) -> list:
    """Files and folders (their JPEG/PNG files, sorted) -> image paths; a missing input is an error."""
    from pathlib import Path

    paths = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise FileNotFoundError(f"no JPEG/PNG images in folder {item}")
            paths.extend(found)
        elif item.is_file():
            paths.append(item)
        else:
            raise FileNotFoundError(f"image not found: {item}")
    return paths


def add_detect_command(sub: argparse._SubParsersAction, help: str = "detect objects in images; saves drawn images "
                       "and JSON", model_aliases: tuple[str, ...] = ()) -> argparse.ArgumentParser:
    """The ``detect`` subcommand (also ``ssd-train detect``, kept for one release: the same parser and code)."""
    p = sub.add_parser("detect", help=help)
    _add_model_flags(p, model_aliases=model_aliases)
    p.add_argument("images", nargs="+", help="JPEG/PNG files or folders of them")
    p.add_argument("--out", help="folder for the drawn images and a JSON per image (default ./detections)")
    p.add_argument("--min-score", type=float, default=None, help="default: the model's detection setting")
    p.add_argument("--max-overlap", type=float, default=None)
    p.add_argument("--top-k", type=int, default=None)
    add_stream_flags(p, "instead of --out: every image's detections in one file (JSON lines, see docs/evaluation.md), "
                         "written batch by batch")
    options.add(p, BATCH_SIZE, default=default_of(detect_to_file, "batch_size"), help="images per batch with --detections-out")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_cmd_detect)
    return p


def _cmd_stream(args: argparse.Namespace) -> int:
    from ssd_runtime.video import JsonLinesSink, VideoFileSink, open_source
    from ssd_runtime.video.report import format_progress, format_stream_report

    detector = Detector.load(args.model, args.backend, device=args.device, postprocess=args.postprocess,
                             **_backend_options(args))
    source = open_source(args.source, live=True if args.live else None, realtime=args.realtime,
                         reconnect=args.reconnect, read_timeout=args.read_timeout, fps=args.fps)
    sinks: list = []
    try:
        if args.video_out:
            sinks.append(VideoFileSink(args.video_out, (source.fps or 25.0) / args.every))
        if args.jsonl_out:
            sinks.append(JsonLinesSink(args.jsonl_out))
    except BaseException:
        for sink in sinks:
            sink.abort()
        source.close()
        raise
    stream = detector.stream(source, every=args.every, max_frames=args.max_frames, duration=args.duration,
                             batch_size=args.batch_size, min_score=args.min_score, max_overlap=args.max_overlap,
                             top_k=args.top_k, sinks=sinks)
    progress = None if args.quiet else (lambda report: print(format_progress(report), file=sys.stderr, flush=True))
    interrupted = False
    try:
        report = stream.run(progress=progress)
    except KeyboardInterrupt:  # Ctrl-C: the files are finished with what was processed; say what was done
        stream.ended_by = stream.ended_by or "interrupted"
        stream.close()
        interrupted, report = True, stream.report()
    report.update(model=args.model, video_out=args.video_out, jsonl_out=args.jsonl_out)
    print(json.dumps(report, indent=1) if args.json else format_stream_report(report))
    return 130 if interrupted else 0


def _add_stream(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stream", help="detect objects in a video file, image sequence, camera or network stream")
    p.add_argument("source", help="video file, frames/%%06d.png, /dev/video0 or a camera index, rtsp:// rtmp:// "
                   "http(s):// udp:// tcp:// URL, a GStreamer pipeline or csi://N (Jetson)")
    _add_model_flags(p)
    p.add_argument("--video-out", metavar="FILE", help="write the annotated video (.mp4, .mkv, .mov: H.264; .avi: MPEG-4)")
    p.add_argument("--jsonl-out", metavar="FILE", help="write each processed frame's detections as a JSON line")
    p.add_argument("--every", type=int, default=default_of(Detector.stream, "every"), metavar="N",
                   help="process every N-th frame")
    p.add_argument("--max-frames", type=int, default=None, metavar="N", help="stop after N processed frames")
    p.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                   help="stop after this much of the source (a file's own time; wall-clock time for a live source)")
    options.add(p, BATCH_SIZE, default=default_of(Detector.stream, "batch_size"),
                help="frames per inference for a file (live sources run one frame at a time)")
    p.add_argument("--live", action="store_true", help="treat the source as live: the newest frame wins, drops counted")
    p.add_argument("--realtime", action="store_true",
                   help="read a file at its frame rate, as a camera would deliver it (implies --live)")
    p.add_argument("--reconnect", type=int, default=0, metavar="N",
                   help="reopen a live source that stalls or disconnects up to N times (default: end the run)")
    p.add_argument("--read-timeout", type=float, default=5.0, metavar="SECONDS",
                   help="a network source that sends nothing for this long has stalled")
    p.add_argument("--fps", type=float, default=None, help="frame rate of an image sequence (default 25)")
    p.add_argument("--min-score", type=float, default=None, help="default: the model's detection setting")
    p.add_argument("--max-overlap", type=float, default=None)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("--json", action="store_true", help="print the final report as JSON")
    p.set_defaults(func=_cmd_stream)


#: Each entry adds one subcommand to the parser (a later feature adds one line here).
COMMANDS = [_add_priors, _add_eval, _add_bench, add_detect_command, _add_stream]


def build_parser() -> argparse.ArgumentParser:
    return cli_common.build_parser("ssd-runtime", "Run SSD300 models (ONNX, TensorRT, PyTorch).", COMMANDS)


def main(argv: list[str] | None = None) -> int:
    return cli_common.run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
