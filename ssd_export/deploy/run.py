"""``ssd-export deploy``: every artifact of a checkpoint built, proven, evaluated, timed and drawn, with a report.

::

    from ssd_export.deploy.run import deploy
    report = deploy("runs/shapes/last.pt", "data/shapes", "runs/deploy")   # report["passed"], DIR/report.md

For each artifact (the checkpoint itself as the ``pytorch`` reference, the ONNX variants, the Q/DQ INT8
model, TensorRT engines where TensorRT and a GPU exist) the steps of :mod:`ssd_export.deploy.steps` run
in order - build (with its verification), evaluate (VOC mAP on the test split through the runtime at
the evaluation settings), bench (latency per stage), draw - and the report (:mod:`ssd_export.deploy.report`)
puts each mAP beside PyTorch's with its target (:data:`ssd_runtime.variants.TARGET_POINTS`). Last, the
video step renders the first test images as a short annotated video through the deployed model
(:func:`ssd_export.deploy.steps.stream_video`, on the artifact :func:`video_artifact` picks).

Runtimes (``backends``, ``--backends``): each ONNX artifact is built and verified in ONNX Runtime and
read again by every other runtime listed (OpenVINO: a row ``openvino-X`` whose first step, verify, is the
same parity check on its backend), so the report holds one row per artifact per runtime: the INT8 mAP
as a fusing runtime reads the Q/DQ model sits beside ONNX Runtime's. The default list, decided in
:func:`runtime_support` only: ONNX Runtime, plus OpenVINO where it imports (the report says why not).

Reruns: every finished step is recorded in ``DIR/deploy_state.json`` (written atomically after each
step) with its inputs (source sha256s, data fingerprint, settings) and the sha256 of the files it
wrote; a rerun reuses a step whose inputs and files still match and redoes the rest (the report says
which steps were reused). A failure in one artifact is recorded and the others go on; Ctrl-C stops
after writing the report of what finished.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssd_export import defaults
from ssd_export.int8.calibration import CALIBRATION_IMAGES
from ssd_export.deploy.state import DeployState
from ssd_export.deploy.steps import (
    EVALUATION_BATCH,
    VIDEO_FPS,
    VIDEO_FRAMES,
    VIDEO_SIZE,
    Artifact,
    DeployError,
    bench_artifact,
    build_calibration,
    build_engine,
    build_int8,
    build_onnx,
    draw_artifact,
    evaluate_artifact,
    load_detector,
    records_fingerprint,
    stream_video,
    test_records,
    verify_on_runtime,
)
from ssd_runtime.bench import benchmark
from ssd_runtime.bootstrap import MATCHES_SCHEMA, BootstrapSettings
from ssd_runtime.coco_metric import resolve_metric
from ssd_runtime.fileio import sha256_file
from ssd_runtime.options import default_of
from ssd_runtime.spec import ModelSpec
from ssd_runtime.variants import TARGET_POINTS, VARIANT_PRECISION  # a variant's precision: key of TARGET_POINTS
from ssd_runtime.voc import VOCRecord

__all__ = ["DeployError", "deploy", "plan_artifacts", "video_artifact"]

STATE_NAME = "deploy_state.json"


#: The runtimes that read the ONNX artifacts, in the report's order: ONNX Runtime (every ONNX file is built
#: and verified through it: always listed) and OpenVINO (fuses the Q/DQ model into INT8 kernels, as TensorRT does).
RUNTIMES = ("onnxruntime", "openvino")
#: The runtime each ONNX artifact is built and verified with; the others read its file as a row of their own.
BUILD_RUNTIME = "onnxruntime"


def runtime_support(backends: Sequence[str] | None) -> tuple[list[str], dict[str, Any]]:
    """(the runtimes to evaluate and time each ONNX artifact in, the report's runtime line).

    ``backends`` None: the default, ONNX Runtime plus every other runtime of :data:`RUNTIMES` whose
    package imports here (one left out is named with the reason). A list is taken as asked: an unknown
    name, one without ``onnxruntime`` (the builds' verification runs in it) or one that does not import
    raises :class:`DeployError`.
    """
    if backends is not None:
        unknown = sorted(set(backends) - set(RUNTIMES))
        if unknown or BUILD_RUNTIME not in backends:
            raise DeployError(f"backends must include {BUILD_RUNTIME} (every ONNX artifact is built and verified in "
                              f"it) and be of {', '.join(RUNTIMES)}; got {', '.join(backends) or 'none'}")
    asked = RUNTIMES if backends is None else [r for r in RUNTIMES if r in backends]
    used, left_out = [], {}
    for runtime in asked:
        reason = _unavailable(runtime)
        if reason is None:
            used.append(runtime)
        elif backends is None:
            left_out[runtime] = reason
        else:
            raise DeployError(f"--backends {runtime}: {reason}")
    return used, {"used": used, "default": backends is None, "left_out": left_out}


def _unavailable(runtime: str) -> str | None:
    """Why ``runtime``'s package does not import here (with what to install), or None."""
    try:
        importlib.import_module(runtime)  # the runtimes' packages bear their backend names
    except ImportError as exc:
        return f"not installed ({exc}): pip install 'ssd300-toolkit[{'ort' if runtime == BUILD_RUNTIME else runtime}]'"
    return None


def plan_artifacts(out: Path, checkpoint: Path, artifacts: Sequence[str], engines: bool,
                   runtimes: Sequence[str] = (BUILD_RUNTIME,)) -> list[Artifact]:
    """The reference checkpoint, the ONNX artifacts asked for (fp32 added when int8 needs it), each followed by
    its rows in the other ``runtimes`` (``openvino-fp32``: the same file), then their engines."""
    unknown = sorted(set(artifacts) - set(defaults.DEPLOY_ARTIFACTS))
    if unknown:
        raise DeployError(f"unknown artifact(s) {', '.join(unknown)}; choose from {', '.join(defaults.DEPLOY_ARTIFACTS)}")
    onnx = [a for a in defaults.DEPLOY_ARTIFACTS if a in artifacts and a != "engines"]
    if "int8" in onnx and "fp32" not in onnx:
        onnx.insert(0, "fp32")  # the INT8 model is quantized from the fp32 export
    plan = [Artifact("pytorch", "checkpoint", "fp32", "fp32", checkpoint)]
    for v in onnx:
        plan.append(Artifact(v, "onnx", v, VARIANT_PRECISION[v], out / f"ssd300_{v}.onnx", "fp32" if v == "int8" else None))
        plan += [Artifact(f"{r}-{v}", "onnx", v, VARIANT_PRECISION[v], out / f"ssd300_{v}.onnx", v, runtime=r)
                 for r in runtimes if r != BUILD_RUNTIME]
    if engines:
        plan += [Artifact(f"trt-{v}", "engine", v, VARIANT_PRECISION[v], out / f"ssd300_{v}.engine", v)
                 for v in onnx if v in defaults.ENGINE_SOURCES]
    return plan


def _engine_support(mode: str, wanted: bool) -> tuple[Any, dict[str, Any]]:
    """(the ``ssd_export.tensorrt.engine`` module or None, the report's engine line)."""
    if mode not in defaults.ENGINE_MODES:
        raise DeployError(f"engines must be one of {', '.join(defaults.ENGINE_MODES)}, got {mode!r}")
    if mode == "skip" or not wanted:
        return None, {"mode": mode, "built": False, "reason": "not asked for (--engines skip or no 'engines' artifact)"}
    try:
        engine_module = importlib.import_module("ssd_export.tensorrt.engine")  # lazily: it imports TensorRT only inside
    except ModuleNotFoundError as exc:
        if exc.name != "ssd_export.tensorrt.engine":
            raise
        engine_module, reason = None, "this installation has no TensorRT engine builder (ssd_export.tensorrt.engine)"
    else:
        reason = engine_module.tensorrt_unavailable_reason()
    if reason is None:
        return engine_module, {"mode": mode, "built": True, "reason": None}
    if mode == "require":
        raise DeployError(f"--engines require: TensorRT engines cannot be built here: {reason}")
    return None, {"mode": mode, "built": False, "reason": reason}


# long: the command in order (checks, plan, run facts, each artifact's steps, the video, the report) in one place
def deploy(
    checkpoint: str | os.PathLike,
    data: str | os.PathLike,
    out: str | os.PathLike,
    *,
    artifacts: Sequence[str] = defaults.DEFAULT_DEPLOY_ARTIFACTS,
    calibration: str | os.PathLike | None = None,
    calibration_images: int = CALIBRATION_IMAGES,
    engines: str = defaults.DEFAULT_ENGINE_MODE,
    bench_batches: Sequence[int] = default_of(benchmark, "batch_sizes"),
    bench_warmup: int = default_of(benchmark, "warmup"),
    bench_iterations: int = default_of(benchmark, "iterations"),
    draw_images: int = defaults.DEFAULT_DRAW_IMAGES,
    max_drop: float | None = None,
    int8_method: str | None = None,
    int8_parity: bool = True,
    max_images: int = 0,
    targets: dict[str, float] | None = None,
    backends: Sequence[str] | None = None,
    bootstrap: BootstrapSettings = BootstrapSettings(),
    video_frames: int = VIDEO_FRAMES,
    progress: bool = True,
    metric: str = "auto",
) -> dict[str, Any]:
    """Build, verify, evaluate, time and draw every artifact of ``checkpoint``; write the report into ``out``.

    Args:
        data: VOC, COCO or YOLO root (:func:`ssd_runtime.datasets.read_split`) whose ``test`` split is
            evaluated; its ``trainval`` split gives the calibration set when ``calibration`` is None (and the held-out images of ``max_drop``).
        artifacts: names from :data:`ssd_export.defaults.DEPLOY_ARTIFACTS`; ``engines`` adds a TensorRT
            engine of each ONNX artifact in :data:`~ssd_export.defaults.ENGINE_SOURCES`.
        calibration: a calibration manifest (``ssd-export calibration``); its dataset is found where it
            was recorded, else under ``data``.
        engines: ``auto`` (build where TensorRT and a GPU exist, else one report line why not),
            ``skip``, ``require`` (raise :class:`DeployError` where they cannot be built).
        max_drop: INT8 sensitive-layer search target in points (``ssd-export int8 --max-drop``).
        int8_method, int8_parity: ``quantize_int8``'s ``method`` (default entropy) and ``parity`` (the
            informative comparison with the fp32 source).
        max_images: evaluate the first N test images only (0: all).
        targets: |delta mAP| targets in points by precision, over :data:`ssd_runtime.variants.TARGET_POINTS`.
        backends: the runtimes (:data:`RUNTIMES`, onnxruntime among them) each ONNX artifact is verified,
            evaluated, timed and drawn in, a report row each; None: :func:`runtime_support`'s default.
            OpenVINO runs at its backend's defaults (f32), recorded in each row's ``runtime_options``.
        bootstrap: resamples, level and seed of the paired bootstrap interval beside every delta
            (:mod:`ssd_runtime.bootstrap`; recorded in the report).
        video_frames: the annotated video's frames (the first test images; 0: none), the report's ``video``.
        metric: "coco" adds COCO's AP, AP50 and AP75 of each artifact beside its VOC mAP (faster-coco-eval);
            "auto": coco on COCO data (:func:`ssd_runtime.coco_metric.resolve_metric`); targets stay judged
            on the VOC mAP's delta.

    Returns the report (also in ``out/report.json``); ``report["passed"]`` is False when an artifact
    failed or missed its target. KeyboardInterrupt is re-raised after the report of what finished is written.
    """
    from ssd_export.deploy.report import build_report, machine_info, write_deploy_report

    start = time.perf_counter()
    checkpoint, out = Path(checkpoint), Path(out)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
    targets = _checked_settings(targets, bench_batches, bench_warmup, bench_iterations, video_frames)
    asked_metric, metric = metric, resolve_metric(metric, data)  # "voc" or "coco" (auto: coco on COCO data)
    engine_module, engine_line = _engine_support(engines, "engines" in artifacts)
    runtimes, runtime_line = runtime_support(backends)
    plan = plan_artifacts(out, checkpoint, artifacts, engine_module is not None, runtimes)
    out.mkdir(parents=True, exist_ok=True)
    reference = load_detector(plan[0])
    records = test_records(data, reference.spec.class_names, max_images=max_images)
    bench = {"batches": list(bench_batches), "warmup": bench_warmup, "iterations": bench_iterations}
    run = _Run(
        checkpoint=checkpoint, checkpoint_sha256=sha256_file(checkpoint), data=Path(data), out=out, records=records,
        data_sha256=records_fingerprint(records), spec=reference.spec, engine_module=engine_module,
        calibration=None if calibration is None else Path(calibration), calibration_images=calibration_images,
        max_drop=max_drop, int8_method=int8_method, int8_parity=int8_parity, bench=bench,
        draw=[r.image_path for r in records[:draw_images]], video=[r.image_path for r in records[:video_frames]],
        cpu=machine_info()["cpu"], state=DeployState(out / STATE_NAME), detectors={plan[0].name: reference},
        metric=metric,
    )
    command = ["ssd-export", "deploy", "--model", str(checkpoint), "--data", str(data), "--out", str(out),
               "--artifacts", *artifacts, "--engines", engines, "--bench-batch-sizes", *map(str, bench_batches),
               "--bench-warmup", str(bench_warmup), "--bench-iterations", str(bench_iterations),
               "--draw-images", str(draw_images)]
    command += ["--calibration", str(calibration)] if calibration else ["--calibration-images", str(calibration_images)]
    command += [] if int8_parity else ["--no-int8-parity"]
    command += [f"--{k}={v}" for k, v in (("max-drop", max_drop), ("method", int8_method)) if v is not None]
    command += [f"--max-images={max_images}"] if max_images else []
    command += [f"--target={k}={v}" for k, v in targets.items() if v != TARGET_POINTS[k]]
    command += [] if backends is None else ["--backends", *runtimes]
    command += [] if asked_metric == "auto" else ["--metric", asked_metric]
    run.meta = {"command": command, "checkpoint": str(checkpoint), "checkpoint_sha256": run.checkpoint_sha256,
                "data": str(data), "split": "test", "images": len(records), "data_sha256": run.data_sha256, "metric": metric,
                "out": str(out), "engines": engine_line, "runtimes": runtime_line, "targets": targets, "bench": bench,
                "calibration": None, "video": None}
    results: dict[str, dict[str, Any]] = {}
    tqdm = _tqdm(progress)
    bar = tqdm(plan, desc="deploy", unit="artifact", position=0)
    try:
        for artifact in bar:
            bar.set_postfix_str(artifact.name)
            results[artifact.name] = _run_artifact(artifact, run, results, tqdm)
        run.meta["video"] = _video(plan, results, run)
    except KeyboardInterrupt:
        for artifact in plan:
            results.setdefault(artifact.name, {"status": "not run", "steps": {}})
        run.meta.update(interrupted=True, seconds=round(time.perf_counter() - start, 3))
        write_deploy_report(out, build_report(plan, results, run.meta, bootstrap))
        raise
    finally:
        bar.close()
    run.meta["seconds"] = round(time.perf_counter() - start, 3)
    return write_deploy_report(out, build_report(plan, results, run.meta, bootstrap))


def _checked_settings(targets: dict[str, float] | None, bench_batches: Sequence[int], bench_warmup: int,
                      bench_iterations: int, video_frames: int = VIDEO_FRAMES) -> dict[str, float]:
    """The targets by precision (the defaults updated by ``targets``); :class:`DeployError` for a bad one or bad
    bench or video settings."""
    targets = {**TARGET_POINTS, **(targets or {})}
    bad = {k: v for k, v in targets.items() if k not in TARGET_POINTS or not v >= 0}
    if bad:
        raise DeployError(f"targets must be >= 0 points for precisions {', '.join(TARGET_POINTS)}, got {bad}")
    if video_frames < 0:
        raise DeployError(f"video_frames must be >= 0 (0: no annotated video), got {video_frames}")
    if not bench_batches or min(bench_batches) < 1 or bench_iterations < 1 or bench_warmup < 0:
        raise DeployError("bench batches and iterations must be >= 1 (warm-up >= 0)")
    return targets


@dataclass
class _Run:
    """What the steps of one deploy read: the inputs and their sha256s, the settings, the loaded models."""

    checkpoint: Path
    checkpoint_sha256: str
    data: Path
    out: Path
    records: list[VOCRecord]  # the evaluated test images
    data_sha256: str  # records_fingerprint(records)
    spec: ModelSpec  # the checkpoint's
    engine_module: Any  # ssd_export.tensorrt.engine, or None when no engine is built
    calibration: Path | None  # the given manifest, or None: built from the data
    calibration_images: int
    max_drop: float | None
    int8_method: str | None
    int8_parity: bool
    bench: dict[str, Any]  # batches, warmup, iterations
    draw: list[Path]  # the drawn test images
    video: list[Path]  # the annotated video's frames: the first test images
    cpu: str  # the bench results are this CPU's
    state: DeployState
    detectors: dict[str, Any]  # loaded Detectors by artifact name (the reference and the current one)
    metric: str = "voc"  # "coco": COCO's AP, AP50 and AP75 beside the VOC mAP (ssd_runtime.coco_metric)
    meta: dict[str, Any] = field(default_factory=dict)  # the report's run facts


def _tqdm(enabled: bool) -> Callable[..., Any]:
    from tqdm.auto import tqdm

    def make(*args: Any, **kwargs: Any) -> Any:
        return tqdm(*args, disable=not enabled, file=sys.stderr, dynamic_ncols=True, **kwargs)

    return make


def _run_artifact(artifact: Artifact, run: _Run, results: dict[str, dict[str, Any]],
                  tqdm: Callable[..., Any]) -> dict[str, Any]:
    """The artifact's steps (build, or a second runtime's verify; evaluate, bench, draw); a failure is recorded,
    not raised."""
    steps: dict[str, Any] = {}
    entry: dict[str, Any] = {"status": "ok", "steps": steps}
    first = ["build"] if artifact.builds else ["verify"] if artifact.kind != "checkpoint" else []
    names = first + ["evaluate", "bench", "draw"]
    bar = tqdm(names, desc=f"  {artifact.name}", unit="step", position=1, leave=False)
    current = names[0]
    try:
        source = results.get(artifact.source, {}) if artifact.source else {"status": "ok"}
        if source.get("status") != "ok":
            raise DeployError(f"its source artifact {artifact.source!r} did not build: {source.get('error', 'not built')}")
        for current in bar:
            bar.set_postfix_str(current)
            steps[current] = _STEPS[current](artifact, run)
    except KeyboardInterrupt:
        entry.update(status="interrupted", error=f"interrupted during {current}")
        results[artifact.name] = entry
        raise
    except Exception as exc:  # noqa: BLE001 - one artifact's failure must not stop the others; reported in full
        entry.update(status="failed", error=f"{current}: {type(exc).__name__}: {exc}",
                     traceback=traceback.format_exc(limit=8))
        print(f"ssd-export deploy: {artifact.name} failed at {current}: {type(exc).__name__}: {exc}", file=sys.stderr)
    finally:
        bar.close()
        if artifact.kind != "checkpoint":  # one model in memory at a time (the reference stays)
            run.detectors.pop(artifact.name, None)
    return entry


def _step(state: DeployState, key: str, inputs: dict[str, Any], work: Callable[[], dict[str, Any]],
          outputs: Callable[[dict[str, Any]], list]) -> dict[str, Any]:
    """A recorded step whose inputs and files still match, or ``work()`` recorded; ``reused`` says which."""
    record = state.lookup(key, inputs)
    reused = record is not None
    if not reused:
        result = work()
        record = state.record(key, inputs, result, outputs(result))
    return {"reused": reused, "finished_at": record["finished_at"], **record["result"]}


def _model_sha(artifact: Artifact, run: _Run) -> str:
    return run.checkpoint_sha256 if artifact.kind == "checkpoint" else run.state.sha256(artifact.path)


def _runtime_inputs(artifact: Artifact) -> dict[str, Any]:
    """A second runtime's name and version, inputs of each of its steps (none for a file kind's own runtime:
    its steps' inputs stay as they were before other runtimes were added, so their records stay reusable)."""
    if artifact.runtime is None:
        return {}
    return {"runtime": artifact.runtime, "runtime_version": importlib.metadata.version(artifact.runtime)}


def _detector(artifact: Artifact, run: _Run):
    if artifact.name not in run.detectors:
        run.detectors[artifact.name] = load_detector(artifact)
    return run.detectors[artifact.name]


def _calibration(run: _Run) -> tuple[Path, Path | None]:
    """The calibration manifest and the dataset root to read it with: the given one, or one built from the data."""
    if run.calibration is None:
        summary = build_calibration(run.data, run.spec, run.out / "calibration.json", run.calibration_images)
        run.meta["calibration"] = summary
        return Path(summary["manifest"]), None
    recorded = Path(json.loads(run.calibration.read_text(encoding="utf-8")).get("dataset", {}).get("root", ""))
    root = None if recorded.is_dir() else run.data.resolve()  # a manifest made elsewhere: its images under data
    run.meta["calibration"] = {"manifest": str(run.calibration), "sha256": run.state.sha256(run.calibration),
                               "built": False, "root": str(root or recorded)}
    return run.calibration, root


def _build(artifact: Artifact, run: _Run) -> dict[str, Any]:
    if artifact.kind == "engine":
        source = run.out / f"ssd300_{artifact.source}.onnx"
        inputs = {"source_sha256": run.state.sha256(source), "checkpoint_sha256": run.checkpoint_sha256}
        max_batch = max(EVALUATION_BATCH, *run.bench["batches"])

        def work() -> dict[str, Any]:
            return build_engine(run.engine_module, source, run.checkpoint, artifact, max_batch)
    elif artifact.variant == "int8":
        fp32 = run.out / "ssd300_fp32.onnx"
        manifest, root = _calibration(run)
        inputs = {"source_sha256": run.state.sha256(fp32), "calibration_sha256": run.state.sha256(manifest),
                  "max_drop": run.max_drop, "method": run.int8_method, "parity": run.int8_parity}

        def work() -> dict[str, Any]:
            return build_int8(fp32, manifest, root, artifact, data=run.data, max_drop=run.max_drop,
                              method=run.int8_method, parity=run.int8_parity)
    else:
        settings = run.spec.evaluation.to_dict() if artifact.variant == "end2end" else None
        inputs = {"checkpoint_sha256": run.checkpoint_sha256, "variant": artifact.variant, "baked_settings": settings}

        def work() -> dict[str, Any]:
            return build_onnx(run.checkpoint, artifact, run.spec)
    # an engine's sidecar (X.engine.json) is part of it: the runtime refuses a plan without its own
    written = [artifact.path, Path(f"{artifact.path}.json")] if artifact.kind == "engine" else [artifact.path]
    result = _step(run.state, f"{artifact.name}/build", inputs, work, lambda r: written)
    result["sha256"] = run.state.sha256(artifact.path)
    result["size_bytes"] = artifact.path.stat().st_size
    if result["verification"]["passed"] is False:
        raise DeployError(f"verification failed: {'; '.join(result['verification']['failures'])}")
    return result


def _verify(artifact: Artifact, run: _Run) -> dict[str, Any]:
    """A second runtime's parity check of the file another row built (``verify_on_runtime``)."""
    report = run.out / f"ssd300_{artifact.variant}.onnx.{artifact.runtime}.verify.json"
    inputs = {"model_sha256": _model_sha(artifact, run), "checkpoint_sha256": run.checkpoint_sha256,
              "int8_parity": run.int8_parity, **_runtime_inputs(artifact)}
    result = _step(run.state, f"{artifact.name}/verify", inputs,
                   lambda: verify_on_runtime(_detector(artifact, run), run.checkpoint, artifact, report,
                                             int8_parity=run.int8_parity),
                   lambda r: [report] if r["verification"]["report"] else [])
    if result["verification"]["passed"] is False:
        raise DeployError(f"verification in {artifact.runtime} failed: {'; '.join(result['verification']['failures'])}")
    return result


def _evaluate(artifact: Artifact, run: _Run) -> dict[str, Any]:
    # the matches file's schema is an input: an evaluation recorded before it existed (or of another
    # schema) is redone, so every reused evaluation has the file the report's intervals need
    # COCO's metrics are an input only when on, so VOC evaluations recorded before them stay reusable
    inputs = {"model_sha256": _model_sha(artifact, run), "data_sha256": run.data_sha256,
              "matches_schema": MATCHES_SCHEMA, **_runtime_inputs(artifact),
              **({"metric": "coco"} if run.metric == "coco" else {})}
    curves = run.out / "eval" / f"{artifact.name}.json"
    matches = run.out / "eval" / f"{artifact.name}.matches.npz"
    coco_data = run.data if run.metric == "coco" else None
    result = _step(run.state, f"{artifact.name}/evaluate", inputs,
                   lambda: evaluate_artifact(_detector(artifact, run), run.records, curves, matches, coco_data=coco_data),
                   lambda r: [curves, matches])
    # where they are now (the folder may have moved since it was recorded)
    result.update(curves=str(curves), matches=str(matches))
    return result


def _bench(artifact: Artifact, run: _Run) -> dict[str, Any]:
    images = [r.image_path for r in run.records[:max(run.bench["batches"])]]
    inputs = {"model_sha256": _model_sha(artifact, run), "cpu": run.cpu, **run.bench,
              "images": [[p.name, run.state.sha256(p)] for p in images], **_runtime_inputs(artifact)}
    return _step(run.state, f"{artifact.name}/bench", inputs,
                 lambda: bench_artifact(_detector(artifact, run), run.bench["batches"], images,
                                        warmup=run.bench["warmup"], iterations=run.bench["iterations"]),
                 lambda r: [])


def _draw(artifact: Artifact, run: _Run) -> dict[str, Any]:
    inputs = {"model_sha256": _model_sha(artifact, run), "images": [[p.name, run.state.sha256(p)] for p in run.draw],
              **_runtime_inputs(artifact)}
    folder = run.out / "detections" / artifact.name
    result = _step(run.state, f"{artifact.name}/draw", inputs,
                   lambda: draw_artifact(_detector(artifact, run), run.draw, folder), lambda r: r["images"])
    result["images"] = [str(folder / Path(name).name) for name in result["images"]]
    return result


_STEPS: dict[str, Callable[[Artifact, _Run], dict[str, Any]]] = {
    "build": _build, "verify": _verify, "evaluate": _evaluate, "bench": _bench, "draw": _draw}


#: The artifact the annotated video goes through, the first of these that built and ran: what a user puts on an
#: edge device, a TensorRT engine where one was built, INT8 first; else the ONNX model ONNX Runtime runs.
VIDEO_PREFERENCE = ("trt-int8", "trt-fp16", "trt-fp32", "trt-end2end", "int8", "fp16", "fp32", "end2end",
                    "uint8-nhwc")


def video_artifact(plan: Sequence[Artifact], results: dict[str, dict[str, Any]]) -> Artifact | None:
    """The first artifact of :data:`VIDEO_PREFERENCE` in the plan whose steps all finished; None if none did."""
    ran = {a.name: a for a in plan if results.get(a.name, {}).get("status") == "ok"}
    return next((ran[name] for name in VIDEO_PREFERENCE if name in ran), None)


def _video(plan: Sequence[Artifact], results: dict[str, dict[str, Any]], run: _Run) -> dict[str, Any]:
    """The video step: ``status`` ok (with :func:`stream_video`'s result, ``artifact`` and ``reused``), skipped
    (with the reason: no frames asked, no PyAV, no artifact ran) or failed (with the error; a report failure)."""
    if not run.video:
        return {"status": "skipped", "reason": "not asked for (video_frames 0)"}
    if importlib.util.find_spec("av") is None:
        return {"status": "skipped", "reason": "PyAV is not installed: pip install 'ssd300-toolkit[video]'"}
    artifact = video_artifact(plan, results)
    if artifact is None:
        return {"status": "skipped", "reason": "no artifact built and ran"}
    output = run.out / "video" / "detections.mp4"
    inputs = {"artifact": artifact.name, "model_sha256": _model_sha(artifact, run), "fps": VIDEO_FPS,
              "size": list(VIDEO_SIZE), "images": [[p.name, run.state.sha256(p)] for p in run.video], "cpu": run.cpu}
    try:
        result = _step(run.state, "video", inputs,
                       lambda: stream_video(load_detector(artifact), run.video, output, VIDEO_FPS), lambda r: [output])
    except Exception as exc:  # noqa: BLE001 - the report says what broke; the artifacts' results stand
        print(f"ssd-export deploy: the annotated video failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return {"status": "failed", "artifact": artifact.name, "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(limit=8)}
    # where it is now (the folder may have moved since it was recorded), and as the report links it
    result.update(video=str(output), link=output.relative_to(run.out).as_posix())
    return {"status": "ok", "artifact": artifact.name, "runtime": artifact.backend, **result}
