"""Benchmark: streaming evaluation at scale: peak memory against the number of images, and images/s with 1..N processes.

    python -m benchmarks.eval_scale --model M.onnx --data DIR --split trainval [--counts 2000 4000 8000]
        [--processes 1 2] [--throughput-images 2000] [--batch-size 8] [--threads 0] [--workdir DIR]

Every measurement runs in fresh processes (this module started again with ``--child``), so each peak
RSS (``ru_maxrss``) is that run's own:

- memory, per count N: the first N images of the split detected into a detections file
  (:func:`ssd_runtime.streaming.detect_to_file`; peak RSS after this phase = the streaming loop's),
  then the file turned into the mAP (:func:`ssd_runtime.evaluate.detections_report`; peak = the loop's
  or the metric's, which holds every image's detections and ground truth);
- throughput, per process count P: P processes each detect their shard (``--shard i/P``) of the first
  ``--throughput-images`` images at once (wall time from the first start to the last exit), then one
  process merges the parts into the mAP (timed apart). The mAPs of every P are compared (they must be
  equal). ``--threads``: ONNX Runtime intra-op threads per process (0 = its default, all cores).

Make the data with ``ssd-train data --out DIR --images 16551 --test 0`` (the VOC07+12 trainval size).
Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import cpu_name
from ssd_runtime.sharding import Shard, part_path


def _maxrss_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: KiB


def _child(args: argparse.Namespace) -> dict:
    """One measured run inside a fresh process: detect a shard to a file and/or merge files to the mAP."""
    from ssd_runtime.detector import Detector
    from ssd_runtime.evaluate import detections_report, precision_of
    from ssd_runtime.sharding import parse_shard
    from ssd_runtime.streaming import ImageItem, detect_to_file
    from ssd_runtime.voc import read_voc_split

    start_rss = _maxrss_mib()
    options = {"intra_op_threads": args.threads} if args.threads else {}
    detector = Detector.load(args.model, **options)
    records = read_voc_split(args.data, args.split, detector.spec.class_names, warn=False, max_images=args.images)
    loaded_rss = _maxrss_mib()
    out: dict = {"images": len(records), "rss_start_mib": start_rss, "rss_loaded_mib": loaded_rss}
    if args.child in ("detect", "both"):
        items = [ImageItem(i, r.image_id, r.image_path) for i, r in enumerate(records)]
        run = detect_to_file(detector, args.model, items, args.out, detector.spec.evaluation,
                             precision=precision_of(detector), batch_size=args.batch_size, shard=parse_shard(args.shard))
        out.update(detect_s=run["seconds"], detect_images_per_s=run["images_per_s"], rss_after_detect_mib=_maxrss_mib(),
                   file_bytes=Path(run["path"]).stat().st_size, shard=run["shard"])
    if args.child in ("merge", "both"):
        start = time.perf_counter()
        paths = args.parts or [args.out]
        report = detections_report(paths, args.data, split=args.split, records=records)
        out.update(merge_s=round(time.perf_counter() - start, 3), map=report["runtime"]["map"],
                   detections=sum(c["num_detections"] for c in report["runtime"]["classes"]),
                   rss_after_metric_mib=_maxrss_mib())
    return out


def _spawn(args: argparse.Namespace, child: str, images: int, out: Path, shard: str = "0/1",
           parts: list[Path] | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "benchmarks.eval_scale", "--child", child, "--model", args.model, "--data", args.data,
           "--split", args.split, "--images", str(images), "--batch-size", str(args.batch_size), "--threads",
           str(args.threads), "--out", str(out), "--shard", shard]
    if parts:
        cmd += ["--parts", *map(str, parts)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)


def _result(proc: subprocess.Popen) -> dict:
    stdout, _ = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"child {proc.args} failed with exit code {proc.returncode}")
    return json.loads(stdout)


def _memory(args: argparse.Namespace, workdir: Path) -> list[dict]:
    runs = []
    for count in args.counts:
        out = workdir / f"memory-{count}.jsonl"
        runs.append(_result(_spawn(args, "both", count, out)))
        out.unlink()
        print(json.dumps(runs[-1]), file=sys.stderr)
    return runs


def _throughput(args: argparse.Namespace, workdir: Path) -> list[dict]:
    runs = []
    for count in args.processes:
        out = workdir / f"throughput-{count}.jsonl"
        start = time.perf_counter()
        procs = [_spawn(args, "detect", args.throughput_images, out, f"{i}/{count}") for i in range(count)]
        shards = [_result(p) for p in procs]
        wall = time.perf_counter() - start
        parts = [part_path(out, Shard(i, count)) for i in range(count)]
        merge = _result(_spawn(args, "merge", args.throughput_images, out, parts=parts))
        for part in parts:
            part.unlink()
        runs.append({"processes": count, "images": args.throughput_images, "detect_wall_s": round(wall, 2),
                     "images_per_s": round(args.throughput_images / wall, 1), "merge_s": merge["merge_s"],
                     "map": merge["map"], "peak_rss_mib_per_process": [s["rss_after_detect_mib"] for s in shards]})
        print(json.dumps(runs[-1]), file=sys.stderr)
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="ONNX model (a small one, e.g. width 0.125, finishes in minutes)")
    parser.add_argument("--data", required=True, help="VOC root or generated dataset folder")
    parser.add_argument("--split", default="trainval")
    parser.add_argument("--counts", type=int, nargs="*", default=[2000, 4000, 8000], help="images per memory run")
    parser.add_argument("--processes", type=int, nargs="*", default=[1, 2], help="process counts for throughput")
    parser.add_argument("--throughput-images", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads per process (0 = default)")
    parser.add_argument("--workdir", help="where the detections files go (default: a temporary folder, removed)")
    # a measured run in a fresh process (internal)
    parser.add_argument("--child", choices=["detect", "merge", "both"], help=argparse.SUPPRESS)
    parser.add_argument("--images", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--shard", default="0/1", help=argparse.SUPPRESS)
    parser.add_argument("--parts", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args)))
        return 0
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        memory = _memory(args, Path(tmp))
        throughput = _throughput(args, Path(tmp))
    maps = {run["map"] for run in throughput}
    report = {
        "benchmark": "eval_scale", "model": args.model, "data": args.data, "split": args.split,
        "batch_size": args.batch_size, "threads_per_process": args.threads or "default", "cpu": cpu_name(),
        "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "memory": memory, "throughput": throughput, "maps_identical_across_process_counts": len(maps) <= 1,
    }  # fmt: skip
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
