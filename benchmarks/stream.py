"""Video streams: the stage pipeline (``Detector.stream``) against one-frame-at-a-time processing (JSON on stdout).

The video: ``--frames`` generated scenes (``tests.helpers.videos.scene_frames``, seed 7, at 500x376) encoded
once to an H.264 .mp4 (yuv420p, crf 18) by :func:`ssd_export.deploy.steps.write_video`, the deploy's encoder. Every run reads that
file (PyAV, FFmpeg's decoder threads) with the file policy (every frame, in order, nothing dropped):

- ``sequential``: one loop, one frame at a time: decode (the source's ``frames()``), preprocess
  (``Detector.prepare``), infer (``Detector.infer``), postprocess (``outputs_to_detections`` and
  ``to_image_detections``), sink: the calls the pipeline's stages make, timed into the same histograms
  (:class:`ssd_runtime.video.StreamStats`);
- ``pipelined-bN``: ``Detector.stream`` at batch N (``--batch-sizes``, default 1 and 4): decode, preprocess,
  infer and postprocess threads and the caller's sink stage over bounded queues.

Each with the annotated-video sink (:class:`~ssd_runtime.video.VideoFileSink`: boxes drawn with Pillow, H.264
encoded) and without a sink, and, for an ONNX model, at each ONNX Runtime intra-op thread count of
``--threads`` (0: ONNX Runtime's default, one per physical core). The configurations are alternated
``--repeats`` times (the order reversed every repeat, so a load change on a shared machine falls on all);
each number is the median over repeats, ratios the median of per-repeat ratios.

Per run: throughput (frames/s), latency (a frame's decode to its detections) p50/p90/p99, per-stage mean
and p50 (ms per frame), and the process's CPU seconds per frame and cores busy (CPU time / wall time:
on 2 cores a run at 2.0 is CPU-bound, whatever the stages' overlap). Per pipelined run, the slowest
stage and the throughput as a fraction of 1 / its mean, the issue's target being >= 0.9 on two cores:
against the run's own stage times (``of_slowest_stage_rate``: measured while the other stages run on the
same cores) and against the sequential run's (``of_sequential_slowest_stage_rate``: each stage alone).

Live: the same scenes encoded at ``--live-fps`` (default: twice the fastest rate with the video sink measured
here, so the source is faster than the pipeline), opened with ``realtime=True`` (paced at its frame rate, newest frame
wins): frames in, dropped, processed, throughput and latency, per thread count.

Model: ``--model`` (the main job's ``runs/quickstart/deploy/ssd300_int8.onnx``, or any model file), else a
randomly initialised SSD300 of ``--width`` saved as a checkpoint, run at min_score 0.9 (random weights
score up to 0.79 here: at the detection settings' 0.2 they fill top_k, 200 boxes a frame; at 0.9 nothing is
drawn, the postprocess and the sink at their floor). ``--device cuda`` runs a checkpoint in PyTorch (FP16,
channels_last, the torch postprocess on the GPU); ``scripts/gpu_check.py`` runs it so.

    python -m benchmarks.stream --model runs/quickstart/deploy/ssd300_int8.onnx [--frames 160] [--repeats 3] \\
        [--threads 0 1] [--batch-sizes 1 4] [--out benchmarks/results/stream_cpu.json]
"""
from __future__ import annotations

import argparse
import collections
import importlib.metadata
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import cpu_facts, cpu_name, loadavg, print_report, torch_skip_reason

SCENE_SEED = 7  # any seed: the scenes are a pure function of (seed, index)


def write_scenes_video(path: Path, frames: int, fps: float, seed: int = SCENE_SEED) -> float:
    """``frames`` generated scenes as an H.264 clip at ``fps``; returns the seconds it took."""
    from ssd_export.deploy.steps import VIDEO_SIZE, write_video
    from tests.helpers.videos import scene_frames

    start = time.perf_counter()
    write_video(scene_frames(frames, VIDEO_SIZE, seed), path, fps)
    return time.perf_counter() - start


def run_sequential(detector: Any, video: Path, sink_path: Path | None, settings: Any) -> dict:
    """One frame at a time through the pipeline's own calls; the same report keys as ``Stream.report``."""
    from ssd_runtime.video import FrameResult, StreamStats, VideoFileSink, open_source

    source = open_source(video)
    sinks = [VideoFileSink(sink_path, source.fps)] if sink_path else []
    stats = StreamStats()
    completed: collections.deque[float] = collections.deque(maxlen=30)  # the drawn rate, as the pipeline draws it
    for frame in source.frames():
        stats.stages["decode"].add(frame.decode_s)
        stats.count("frames_in")
        started = time.perf_counter()
        batch = detector.prepare([frame.rgb])
        stats.stages["preprocess"].add(time.perf_counter() - started)
        started = time.perf_counter()
        outputs = detector.infer(batch.pixels)
        stats.stages["infer"].add(time.perf_counter() - started)
        started = time.perf_counter()
        (dets,), ((width, height),) = detector.outputs_to_detections(outputs, settings), batch.sizes
        now = time.perf_counter()
        result = FrameResult(frame.index, frame.pts, frame.captured, now - frame.clock,
                             detector.to_image_detections(dets, width, height), frame.rgb)
        stats.latency.add(now - frame.clock)
        stats.stages["postprocess"].add(time.perf_counter() - started)
        completed.append(time.perf_counter())
        if len(completed) > 1:
            result.rate_fps = (len(completed) - 1) / max(completed[-1] - completed[0], 1e-9)
        started = time.perf_counter()
        for sink in sinks:
            sink.write(result)
        stats.stages["sink"].add(time.perf_counter() - started)
        stats.count("processed")
    source.close()
    stats.ended = time.perf_counter()
    for sink in sinks:
        sink.close()
    return stats.report()


def run_pipelined(detector: Any, video: Path, sink_path: Path | None, batch_size: int, settings: Any,
                  **source_options: Any) -> dict:
    from ssd_runtime.video import VideoFileSink, open_source

    source = open_source(video, **source_options)
    sinks = [VideoFileSink(sink_path, source.fps)] if sink_path else []
    return detector.stream(source, batch_size=batch_size, sinks=sinks, min_score=settings.min_score,
                           max_overlap=settings.max_overlap, top_k=settings.top_k).run()


def timed(run: Any) -> dict:
    """``run()``'s report with the process's CPU seconds per processed frame and cores busy (CPU / wall)."""
    cpu, wall = time.process_time(), time.perf_counter()
    report = run()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    report.update(cpu_s_per_frame=round(cpu / max(report["processed"], 1), 5), cores_busy=round(cpu / wall, 2))
    return report


def slowest(report: dict) -> tuple[str, float]:
    """The stage with the largest mean time per frame (name, seconds)."""
    name, row = max(((n, r) for n, r in report["stages"].items() if r["count"]), key=lambda item: item[1]["mean_ms"])
    return name, row["mean_ms"] / 1e3


def med(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def summarize(runs: list[dict]) -> dict:
    """The median over repeats of each run's numbers (one dict, the shape of one run's)."""
    return {"repeats": len(runs), "processed": runs[0]["processed"], "dropped": med([r["dropped"] for r in runs]),
           "frames_in": runs[0]["frames_in"], "throughput_fps": med([r["throughput_fps"] for r in runs]),
           "throughput_fps_per_repeat": [r["throughput_fps"] for r in runs],
           "cpu_s_per_frame": med([r["cpu_s_per_frame"] for r in runs]), "cores_busy": med([r["cores_busy"] for r in runs]),
           "latency_ms": {k: med([r["latency"][k] for r in runs]) for k in ("p50_ms", "p90_ms", "p99_ms")},
           "stages_ms": {name: {k: med([r["stages"][name][k] for r in runs]) for k in ("mean_ms", "p50_ms", "p90_ms")}
                         for name, row in runs[0]["stages"].items() if row["count"]}}


def main(argv: list[str] | None = None) -> int:  # long: the run's plan, alternation and ratios read in one place
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model file (default: a randomly initialised SSD300 of --width)")
    parser.add_argument("--width", type=float, default=1.0, help="the random model's width (without --model)")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda: a checkpoint in PyTorch, FP16, torch postprocess")
    parser.add_argument("--frames", type=int, default=160)
    parser.add_argument("--fps", type=float, default=25.0, help="the file's frame rate (the file policy ignores it)")
    parser.add_argument("--live-fps", type=float, help="the live run's source rate (default: 2x the fastest run's)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--threads", type=int, nargs="+", default=[0, 1],
                        help="ONNX Runtime intra-op threads per configuration (0: its default, one per physical core)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args(argv)
    try:
        import av
    except ImportError:
        print(json.dumps({"benchmark": "stream", "skipped": "PyAV is not installed: pip install 'ssd300-toolkit[video]'"}))
        return 0
    if (args.device != "cpu" or not args.model) and (reason := torch_skip_reason(args.device)) is not None:
        print(json.dumps({"benchmark": "stream", "skipped": reason}))
        return 0

    import numpy as np

    from ssd_export.deploy.steps import VIDEO_SIZE

    report: dict = {"benchmark": "stream", "cpu": cpu_name(), "cpu_facts": cpu_facts(), "loadavg_start": loadavg(),
                    "versions": {p: _version(p) for p in ("onnxruntime", "av", "numpy", "pillow", "torch")},
                    "ffmpeg": {k: f"{v[0]}.{v[1]}.{v[2]}" for k, v in av.library_versions.items() if k == "libavcodec"},
                    "frames": args.frames, "fps": args.fps, "batch_sizes": args.batch_sizes, "repeats": args.repeats,
                    "device": args.device}
    with tempfile.TemporaryDirectory(prefix="stream-bench-") as tmp:
        tmp_path = Path(tmp)
        model = Path(args.model) if args.model else _random_checkpoint(tmp_path, args.width)
        onnx = model.suffix == ".onnx"
        threads = args.threads if onnx else [0]
        detectors = {t: _load(model, args.device, t) for t in threads}
        first = detectors[threads[0]]
        settings = first.settings_with(min_score=0.9) if args.model is None else first.settings
        report["model"] = {"path": str(model), "random_weights": args.model is None,
                           "backend": type(first.backend).__name__,
                           "options": first.backend.options, "postprocess": first.postprocess,
                           "settings": settings.to_dict()}
        report["onnxruntime_threads"] = ({str(t): "ONNX Runtime's default: one per physical core "
                                          f"({os.cpu_count()} logical cores here)" if t == 0 else t for t in threads}
                                         if onnx else None)
        video = tmp_path / "scenes.mp4"
        report["video"] = {"frames": args.frames, "size": list(VIDEO_SIZE), "codec": "h264 (libx264 crf 18, yuv420p)",
                           "encode_seconds": round(write_scenes_video(video, args.frames, args.fps), 2),
                           "bytes": video.stat().st_size}
        for detector in detectors.values():  # warm-up: the first inferences allocate
            detector.detect([np.zeros((VIDEO_SIZE[1], VIDEO_SIZE[0], 3), np.uint8)] * max(args.batch_sizes))
        modes = ["sequential", *(f"pipelined-b{b}" for b in args.batch_sizes)]
        configs = [(t, mode, sink) for t in threads for mode in modes for sink in ("video", "none")]
        per_repeat: dict[tuple, list[dict]] = {c: [] for c in configs}
        start = time.perf_counter()
        for repeat in range(args.repeats):
            for config in configs if repeat % 2 == 0 else configs[::-1]:
                t, mode, sink = config
                sink_path = tmp_path / "annotated.mp4" if sink == "video" else None
                if mode == "sequential":
                    result = timed(lambda: run_sequential(detectors[t], video, sink_path, settings))
                else:
                    result = timed(lambda: run_pipelined(detectors[t], video, sink_path, int(mode.split("-b")[1]),
                                                         settings))
                if result["processed"] != args.frames:
                    raise RuntimeError(f"{config}: processed {result['processed']} of {args.frames} frames")
                per_repeat[config].append(result)
                print(f"repeat {repeat} threads {t} {mode} sink {sink}: {result['throughput_fps']} fps, "
                      f"cores busy {result['cores_busy']}", file=sys.stderr)
        report["runs"] = runs = []
        for config in configs:
            t, mode, sink = config
            entry = {"threads": t, "mode": mode, "sink": sink, **summarize(per_repeat[config])}
            if mode != "sequential":
                sequential = per_repeat[(t, "sequential", sink)]
                own = [r["throughput_fps"] * slowest(r)[1] for r in per_repeat[config]]
                alone = [r["throughput_fps"] * slowest(s)[1] for r, s in zip(per_repeat[config], sequential)]
                entry.update(
                    slowest_stage=slowest(per_repeat[config][0])[0], slowest_stage_alone=slowest(sequential[0])[0],
                    of_slowest_stage_rate=med(own), of_sequential_slowest_stage_rate=med(alone),
                    speedup_vs_sequential=med([r["throughput_fps"] / s["throughput_fps"]
                                               for r, s in zip(per_repeat[config], sequential)]))
            runs.append(entry)
        report["file_seconds"] = round(time.perf_counter() - start, 1)
        # live: a source faster than inference, paced as a camera would deliver it
        fastest = max(r["throughput_fps"] for r in runs if r["sink"] == "video")
        live_fps = args.live_fps or round(2 * fastest)
        live_video = tmp_path / "live.mp4"
        write_scenes_video(live_video, args.frames, live_fps)
        report["live"] = {"source_fps": live_fps, "sink": "video", "runs": []}
        for t in threads:
            result = timed(lambda: run_pipelined(detectors[t], live_video, tmp_path / "live_annotated.mp4", 1,
                                                 settings, realtime=True))
            report["live"]["runs"].append({"threads": t, **{k: result[k] for k in (
                "policy", "frames_in", "dropped", "processed", "seconds", "throughput_fps", "latency", "stages",
                "cpu_s_per_frame", "cores_busy")}})
            print(f"live threads {t}: {result['processed']} of {result['frames_in']} frames, {result['dropped']} "
                  f"dropped, latency p50 {result['latency']['p50_ms']} ms", file=sys.stderr)
    report.update(seconds=round(time.perf_counter() - start, 1), loadavg_end=loadavg())
    print_report(report, args.out)
    return 0


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _random_checkpoint(folder: Path, width: float) -> Path:
    import torch

    from ssd_runtime.spec import ModelSpec
    from ssd_train.checkpoint import save_checkpoint
    from ssd_train.model import SSD300

    torch.manual_seed(0)
    spec = ModelSpec.create(width=width)
    return save_checkpoint(folder / "ssd300.pt", SSD300.from_spec(spec), spec)


def _load(model: Path, device: str, threads: int) -> Any:
    """The Detector of one configuration: ONNX Runtime at ``threads`` intra-op threads (0: its default); a
    checkpoint on CUDA in FP16 and channels_last with the torch postprocess (the fast GPU path without TensorRT)."""
    from ssd_runtime.detector import Detector

    if model.suffix == ".onnx":
        return Detector.load(model, device=device, **({"intra_op_threads": threads} if threads else {}))
    if model.suffix in (".pt", ".pth") and device.startswith("cuda"):
        return Detector.load(model, "torch", device=device, postprocess="torch", fp16=True, channels_last=True)
    return Detector.load(model, device=device)


if __name__ == "__main__":
    raise SystemExit(main())
