"""The report of ``ssd-export deploy``: ``report.json`` (data, schema-versioned) and ``report.md`` (rendered from it).

:func:`build_report` turns the deploy's per-artifact step results into the report dict (data first);
:func:`render_markdown` renders it; :func:`write_deploy_report` writes both atomically with the figures
of :mod:`ssd_export.deploy.figures`. Deltas are in mAP points (1 point = 0.01 on the 0-1 scale), runtime
minus PyTorch, judged against the target of the artifact's precision.

``report.json`` (``format`` "ssd300-deploy-report", ``schema_version`` :data:`REPORT_SCHEMA`):
``created_at`` (UTC), ``machine`` (cpu, cores, platform, gpu), ``versions``, the run's facts (``command``,
``checkpoint`` and its sha256, ``data``, ``split``, ``images``, ``data_sha256``, ``out``, ``engines``
(mode, built, reason), ``runtimes`` (used: the runtimes reading the ONNX artifacts, default: whether the
list was the default one, left_out: runtime -> why not used), ``targets``, ``bench`` settings, ``calibration``, ``metric`` ("voc", or "coco": COCO's metrics on too),
``video`` (the annotated video: status ok/skipped/failed, reason or error, artifact, runtime, and
:func:`ssd_export.deploy.steps.stream_video`'s video, link (relative to the report), frames, fps, size,
throughput_fps, latency and stages (ms), detections per frame, seconds; reused), ``seconds``, ``interrupted``),
``reference`` (the PyTorch mAP), ``artifacts`` (one row per artifact per runtime: name, kind, variant,
precision, runtime (the backend reading it: torch, onnxruntime, openvino, tensorrt), reads_file_of (a
second runtime's row: the row that builds the file it reads; None otherwise), path, source, status
ok/failed/interrupted/not run, error, traceback, reused and finished_at per step, size_bytes, sha256,
build, verify (a second runtime's parity check), verified, runtime_options (the backend's ``options``:
OpenVINO's inference precision, threads and version), map, delta_points, delta_points_interval, target_points,
within_target, interval_wider_than_target, interval_error, evaluation, classes (per-class AP, and
beside PyTorch each class's delta_points and delta_points_interval), coco (with ``metric`` "coco": COCO's AP,
AP50 and AP75 of the same detections; None otherwise; targets stay judged on the VOC mAP's delta), bench
(:func:`ssd_runtime.bench.benchmark`'s results), drawings), ``bootstrap`` (method, resamples,
interval_level, seed of the intervals), ``worst``, ``passed``, ``failures``, ``figures`` (paths relative
to the report's folder), ``report_json``, ``report_md``.

Intervals: each delta's paired bootstrap interval over the test images
(:func:`ssd_runtime.bootstrap.paired_bootstrap` of the artifact's and the reference's matches files, the
same resamples for both); ``interval_wider_than_target``: the interval is wider than the band
[-target, +target], so these images cannot tell whether the target is met. The verdict (``within_target``)
stays the delta's.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ssd_runtime.bootstrap import (
    BootstrapError, BootstrapSettings, MatchesFileError, check_paired, format_interval, interval_wider_than_target,
    load_matches, paired_intervals, resample_weights, resampled_aps,
)  # fmt: skip
from ssd_runtime.coco_metric import COCO_STATS
from ssd_runtime.fileio import atomic_write_bytes
from ssd_runtime.formats import DEPLOY_REPORT

__all__ = ["REPORT_FORMAT", "REPORT_SCHEMA", "build_report", "machine_info", "render_markdown", "versions",
           "write_deploy_report"]

REPORT_FORMAT = DEPLOY_REPORT.name
#: Bumped when a field changes meaning or is removed (adding fields keeps it: the intervals were added at 1).
REPORT_SCHEMA = DEPLOY_REPORT.version
STEPS = ("build", "verify", "evaluate", "bench", "draw")
#: COCO's numbers a row shows beside its VOC mAP (``--metric coco``; ssd_runtime.coco_metric.COCO_STATS' first three).
COCO_HEADLINE = COCO_STATS[:3]


def machine_info() -> dict[str, Any]:
    """CPU model (``/proc/cpuinfo``, else ``lscpu``), logical cores, OS, and the CUDA GPU when torch sees one."""
    cpu = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if cpu is None:
        try:
            text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, check=False).stdout
            cpu = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Model name")), None)
        except (OSError, subprocess.SubprocessError):
            pass
    gpu = None
    torch = sys.modules.get("torch")  # only asked when already imported (the deploy imports it to export)
    if torch is not None and torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(0)
    return {"cpu": cpu or platform.processor() or "unknown", "cores": os.cpu_count(),
            "platform": platform.platform(), "gpu": gpu}


def versions() -> dict[str, str | None]:
    """Versions of Python and of the packages the artifacts went through (None: not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for package in ("ssd300-toolkit", "torch", "onnxruntime", "openvino", "onnx", "numpy", "tensorrt"):
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            out[package] = None
    return out


def _row(artifact: Any, entry: dict[str, Any], reference: dict[str, Any] | None, targets: dict[str, float],
         reference_resamples: _ReferenceResamples) -> dict[str, Any]:
    """One artifact's line of the report from its step results (``reference``: the reference's evaluation)."""
    reference_map = reference["map"] if reference else None
    steps = entry.get("steps", {})
    build, verify, evaluation, bench, draw = (steps.get(s) for s in STEPS)
    row: dict[str, Any] = {
        "name": artifact.name, "kind": artifact.kind, "variant": artifact.variant, "precision": artifact.precision,
        "runtime": artifact.backend, "reads_file_of": None if artifact.builds else artifact.source,
        "path": str(artifact.path), "source": artifact.source, "status": entry.get("status", "not run"),
        "error": entry.get("error"), "traceback": entry.get("traceback"),
        "reused": {s: steps[s]["reused"] for s in STEPS if s in steps},
        "finished_at": {s: steps[s]["finished_at"] for s in STEPS if s in steps},
        "size_bytes": build["size_bytes"] if build else None, "sha256": build["sha256"] if build else None,
        "build": None, "verify": None, "verified": None, "runtime_options": None, "map": None, "delta_points": None, "delta_points_interval": None,
        "target_points": None if artifact.kind == "checkpoint" else targets[artifact.precision],
        "within_target": None, "interval_wider_than_target": None, "interval_error": None, "evaluation": None, "classes": None, "coco": None, "bench": None, "drawings": None,
    }
    if build:
        row["build"] = {k: v for k, v in build.items() if k not in ("reused", "finished_at", "sha256", "size_bytes")}
        row["verified"] = build["verification"]["passed"]
    if verify:
        row["verify"] = {k: v for k, v in verify.items() if k not in ("reused", "finished_at")}
        row["verified"] = verify["verification"]["passed"]
    if evaluation or bench:  # the backend's run options (OpenVINO: its inference precision, threads, version)
        row["runtime_options"] = (evaluation or {}).get("backend_options") or (bench or {}).get("options")
    if evaluation:
        row["map"] = evaluation["map"]
        row["classes"] = [{"name": c["name"], "ap": c["ap"]} for c in evaluation["classes"]]
        coco = evaluation.get("coco")  # COCO's metrics of the same detections, when on (--metric)
        row["coco"] = None if not coco else {name: coco["stats"][name] for name in COCO_HEADLINE}
        row["evaluation"] = {k: evaluation[k] for k in ("images", "seconds", "images_per_s", "ap_method", "settings",
                                                        "curves")}
        if reference_map is not None and artifact.kind != "checkpoint":
            row["delta_points"] = (evaluation["map"] - reference_map) * 100.0
            row["within_target"] = bool(abs(row["delta_points"]) <= row["target_points"])
            _add_intervals(row, evaluation, reference, reference_resamples)
    if bench:
        row["bench"] = {k: bench[k] for k in ("backend", "device", "postprocess", "settings", "warmup", "iterations",
                                              "images", "image_size", "results")
                        if k in bench}
    if draw:
        row["drawings"] = {"images": draw["images"], "detections": draw["detections"], "settings": draw["settings"]}
    return row


class _ReferenceResamples:
    """The reference's matches file loaded, and its APs on every resample computed, once for all the rows
    (1000 resamples of 500 images cost ~3 s per model: once, not once per artifact)."""

    def __init__(self, reference: dict[str, Any] | None, bootstrap: BootstrapSettings) -> None:
        self.reference, self.bootstrap = reference, bootstrap
        self._loaded: tuple | None = None

    def get(self) -> tuple:
        """(matches, image list sha256, resample weights, resampled APs); raises what loading raises."""
        if self._loaded is None:
            matches, images = load_matches(self.reference["matches"])
            weights = resample_weights(matches.num_images, self.bootstrap)
            self._loaded = (matches, images, weights, resampled_aps(matches, weights))
        return self._loaded


def _add_intervals(row: dict[str, Any], evaluation: dict[str, Any], reference: dict[str, Any],
                   reference_resamples: _ReferenceResamples) -> None:
    """The row's paired bootstrap intervals (mAP and per class) from its and the reference's matches files.

    A missing or unreadable file costs the intervals, not the report: ``interval_error`` says why.
    """
    ref_ap = {c["name"]: c["ap"] for c in reference["classes"]}
    for c in row["classes"]:
        c["delta_points"] = None if c["ap"] is None or ref_ap.get(c["name"]) is None else (c["ap"] - ref_ap[c["name"]]) * 100
        c["delta_points_interval"] = None
    try:
        if not evaluation.get("matches") or not reference.get("matches"):
            raise MatchesFileError("no matches file recorded by the evaluation")
        model, model_images = load_matches(evaluation["matches"])
        ref, ref_images, weights, ref_aps = reference_resamples.get()
        if model_images != ref_images:
            raise BootstrapError("the artifact and the reference were evaluated on other image lists")
        check_paired(model, ref)
        intervals = paired_intervals(resampled_aps(model, weights), ref_aps, model.class_names,
                                     reference_resamples.bootstrap)
    except (MatchesFileError, BootstrapError, OSError) as exc:
        row["interval_error"] = f"{type(exc).__name__}: {exc}"
        return
    row["delta_points_interval"] = None if intervals.map is None else list(intervals.map)
    row["interval_wider_than_target"] = interval_wider_than_target(intervals.map, row["target_points"])
    for c in row["classes"]:
        interval = intervals.classes.get(c["name"])
        c["delta_points_interval"] = None if interval is None else list(interval)


def build_report(plan: list[Any], results: dict[str, dict[str, Any]], meta: dict[str, Any],
                 bootstrap: BootstrapSettings = BootstrapSettings()) -> dict[str, Any]:
    """The report dict: run facts (``meta``), machine, versions, one row per artifact with its delta's paired
    bootstrap interval (``bootstrap``), verdict and failures."""
    reference = results.get(plan[0].name, {}).get("steps", {}).get("evaluate")
    reference_map = reference["map"] if reference else None
    reference_resamples = _ReferenceResamples(reference, bootstrap)
    rows = [_row(a, results.get(a.name, {}), reference, meta["targets"], reference_resamples) for a in plan]
    failures = []
    for row in rows:
        if row["status"] != "ok":
            failures.append(f"{row['name']}: {row['status']}" + (f" ({row['error']})" if row.get("error") else ""))
        elif row["within_target"] is False:
            failures.append(f"{row['name']}: |delta mAP| {abs(row['delta_points']):.3f} points, over its "
                            f"{row['precision']} target of {row['target_points']}")
    video = meta.get("video") or {}
    if video.get("status") == "failed":
        failures.append(f"annotated video ({video['artifact']}): {video['error']}")
    judged = [r for r in rows if r["delta_points"] is not None]
    worst = max(judged, key=lambda r: abs(r["delta_points"]))["name"] if judged else None
    return {
        **DEPLOY_REPORT.header(),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine_info(),
        "versions": versions(),
        **meta,
        "reference": {"name": plan[0].name, "map": reference_map},
        "bootstrap": bootstrap.to_dict(),
        "artifacts": rows,
        "worst": worst,
        "passed": not failures,
        "failures": failures,
    }


def _fmt(value: float | None, spec: str = ".4f") -> str:
    return "n/a" if value is None else format(value, spec)


def _settings(settings: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in settings.items())


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|",
            *("| " + " | ".join(r) + " |" for r in rows)]


def render_markdown(report: dict[str, Any]) -> str:
    """``report.md``: readable on its own (what, from what, where, results, figures, failures)."""
    machine, ver = report["machine"], report["versions"]
    rows = report["artifacts"]
    lines = [
        "# Deployment report",
        "",
        ("PASSED: every artifact asked for was built, verified, evaluated within its target and timed."
         if report["passed"] else f"FAILED: {len(report['failures'])} problem(s), listed at the end."),
        "",
        f"- checkpoint: `{report['checkpoint']}` (sha256 `{report['checkpoint_sha256'][:16]}`)",
        (f"- data: `{report['data']}`, split `{report['split']}`, {report['images']} images "
         f"(fingerprint `{report['data_sha256'][:16]}`)"),
        (f"- machine: {machine['cpu']}, {machine['cores']} logical cores, {machine['platform']}"
         + (f", GPU {machine['gpu']}" if machine["gpu"] else ", no GPU")),
        "- versions: " + ", ".join(f"{k} {v}" for k, v in ver.items() if v is not None),
        (f"- date: {report['created_at']}; deploy wall time {report.get('seconds', 0):.1f} s"
         + (" (interrupted)" if report.get("interrupted") else "")),
    ]
    if report.get("command"):
        lines.append(f"- command: `{' '.join(report['command'])}`")
    calibration = report.get("calibration")
    if calibration:
        how = f"built from the data's trainval split ({calibration.get('images')} images)" if calibration.get("built") else "given"
        lines.append(f"- INT8 calibration: `{calibration['manifest']}`, {how}"
                     + "".join(f"; warning: {w}" for w in calibration.get("warnings", [])))
    engines = report["engines"]
    lines.append(f"- TensorRT engines: {'built' if engines['built'] else 'skipped: ' + str(engines['reason'])}")
    lines += _runtime_lines(report.get("runtimes"), rows)  # absent from reports written before the runtimes
    evaluated = next((r["evaluation"] for r in rows if r["evaluation"]), None)
    bootstrap = report.get("bootstrap")  # absent from reports written before the intervals
    level = f"{bootstrap['interval_level']:.0%} interval" if bootstrap else "interval"
    lines += ["", "## Accuracy (VOC07 11-point mAP on the test split"
              + (f", {_settings(evaluated['settings'])})" if evaluated else ")"), "",
              ("delta: artifact minus PyTorch in mAP points (1 point = 0.01 mAP); target: the largest |delta| "
               "allowed for its precision; verified: its checks at build (FP32/FP16/end2end and their engines: "
               "parity with the checkpoint; INT8: TensorRT's Q/DQ rules, its engine: parity with the Q/DQ ONNX; "
               "INT8 accuracy is judged by the mAP; a second runtime's row, e.g. openvino-fp32: the same file's parity "
               "with the checkpoint as that runtime reads it); runtime: the backend that read the file."), ""]
    if bootstrap:
        lines += [(f"{level}: where the delta would lie on other test sets like this one (paired bootstrap over "
                   f"the {report['images']} images: {bootstrap['resamples']} resamples, the same for the artifact "
                   f"and PyTorch, seed {bootstrap['seed']}). \"interval wider than the target\": the interval is "
                   "wider than the band -target..+target, so these images cannot tell whether the target is met; "
                   "the result is still the delta's."), ""]
    with_coco = report.get("metric") == "coco"  # absent from reports written before COCO's metrics
    if with_coco:
        lines += [f"COCO {', '.join(COCO_HEADLINE)}: COCO's metrics of the same detections (AP over IoU 0.50:0.95, at "
                  "0.50, at 0.75; faster-coco-eval), shown beside the VOC mAP; deltas and targets are the VOC mAP's.", ""]
    table = []
    for r in rows:
        target = "reference" if r["kind"] == "checkpoint" else f"<= {r['target_points']}"
        verdict = {True: "pass", False: "**FAIL**", None: "-" if r["kind"] == "checkpoint" else "n/a"}[r["within_target"]]
        if r["status"] != "ok":
            verdict = f"**{r['status'].upper()}**"
        if r.get("interval_wider_than_target"):
            verdict += " (interval wider than the target)"
        interval = "-" if r["kind"] == "checkpoint" else format_interval(r.get("delta_points_interval"))
        verified = {True: "yes", False: "**no**", None: "-"}[r["verified"]]
        coco = [_fmt((r.get("coco") or {}).get(name)) for name in COCO_HEADLINE] if with_coco else []
        table.append([r["name"], r.get("runtime", "-"), r["precision"], _fmt(r["map"]), *coco, _fmt(r["delta_points"], "+.3f"),
                      interval, target, verdict, verified, "yes" if r["reused"] and all(r["reused"].values()) else "no"])
    coco_columns = [f"COCO {name}" for name in COCO_HEADLINE] if with_coco else []
    lines += _table(["artifact", "runtime", "precision", "mAP", *coco_columns, "delta (points)", level, "target", "result",
                     "verified", "reused"], table)
    lines += [f"- {r['name']}: no interval ({r['interval_error']})" for r in rows if r.get("interval_error")]
    worst = next((r for r in rows if r["name"] == report["worst"]), None)
    reference = next((r for r in rows if r["kind"] == "checkpoint"), None)
    if worst and reference and reference["classes"]:
        ref_ap = {c["name"]: c["ap"] for c in reference["classes"]}
        lines += ["", f"## Per-class AP of the artifact furthest from PyTorch: {worst['name']}", ""]
        lines += _table(["class", worst["name"], "pytorch", "delta (points)", level], [
            [c["name"], _fmt(c["ap"]), _fmt(ref_ap.get(c["name"])),
             _fmt(c.get("delta_points"), "+.3f"),  # set beside its interval by _add_intervals
             format_interval(c.get("delta_points_interval"))]
            for c in worst["classes"]])
    lines += _latency_lines(rows)
    lines += _video_lines(report.get("video"))  # absent from reports written before the video step
    lines += ["", "## Files", ""]
    lines += _table(["artifact", "file", "size (MB)", "sha256", "build (s)"], [
        [r["name"], f"`{Path(r['path']).name}`", _fmt(r["size_bytes"] and r["size_bytes"] / 1e6, ".2f"),
         f"`{r['sha256'][:16]}`" if r["sha256"] else "-",
         _fmt(r["build"] and r["build"].get("seconds"), ".1f")]
        for r in rows if r["kind"] != "checkpoint" and not r.get("reads_file_of")])
    figures = report.get("figures") or {}
    if figures:
        lines += ["", "## Figures", ""]
        for title, key in (("Precision-recall per class", "pr_curves"), ("Latency per stage", "latency"),
                           ("Detections", "detections")):
            if figures.get(key):
                lines += [f"![{title}]({figures[key]})", ""]
        if figures.get("error"):
            lines.append(f"Figures not drawn: {figures['error']}")
    if report["failures"]:
        lines += ([] if lines[-1] == "" else [""]) + ["## Problems", ""] + [f"- {f}" for f in report["failures"]]
    return "\n".join(lines).rstrip() + "\n"


def _runtime_lines(runtimes: dict[str, Any] | None, rows: list[dict[str, Any]]) -> list[str]:
    """Which runtimes read the ONNX artifacts (and why one was left out), and each one's options."""
    if not runtimes:
        return []
    how = "the default: ONNX Runtime plus those installed" if runtimes["default"] else "asked for"
    lines = [f"- ONNX runtimes: {', '.join(runtimes['used'])} ({how})"]
    lines += [f"- {name} left out: {reason}" for name, reason in runtimes["left_out"].items()]
    for runtime in runtimes["used"]:
        options = next((r["runtime_options"] for r in rows if r.get("runtime") == runtime and r.get("runtime_options")),
                       None)
        if options and set(options) - {"variant"}:  # ONNX Runtime's options name the variant only
            lines.append(f"- {runtime} options: " + _settings({k: v for k, v in options.items() if k != "variant"}))
    return lines


def _latency_lines(rows: list[dict[str, Any]]) -> list[str]:
    timed = [r for r in rows if r["bench"]]
    if not timed:
        return []
    first = timed[0]["bench"]
    lines = ["", (f"## Latency (ms per batch, {first['iterations']} iterations after {first['warmup']} warm-up, "
                  f"{_bench_images(first)}, {_settings(first['settings'])})"), ""]
    table = []
    for r in timed:
        for entry in r["bench"]["results"]:
            s = entry["stages"]
            e2e = s["end_to_end"]
            table.append([r["name"], f"{r['bench']['backend']} ({r['bench']['device']})", str(entry["batch_size"]),
                          _fmt(s["preprocess"]["p50_ms"], ".2f"), _fmt(s["inference"]["p50_ms"], ".2f"),
                          _fmt(s["postprocess"]["p50_ms"], ".2f"), _fmt(e2e["p50_ms"], ".2f"), _fmt(e2e["p90_ms"], ".2f"),
                          _fmt(e2e["p99_ms"], ".2f"), _fmt(e2e["images_per_s"], ".1f")])
    return lines + _table(["artifact", "backend", "batch", "preprocess p50", "inference p50", "postprocess p50",
                           "end to end p50", "p90", "p99", "images/s"], table)


def _video_lines(video: dict[str, Any] | None) -> list[str]:
    """The annotated video: its link, what it shows and through which model, its frame rate, latency and stages."""
    if not video:
        return []
    lines = ["", "## Annotated video", ""]
    if video["status"] != "ok":
        return lines + [f"Not rendered: {video['status']}: {video.get('reason') or video.get('error')}"]
    latency = video["latency"]
    lines += [
        (f"[{video['link']}]({video['link']}): {video['source']}, through `{video['artifact']}` ({video['runtime']}, "
         f"{video['device']}) with `Detector.stream` (every frame, in order, batch {video['batch_size']}; "
         f"{_settings(video['settings'])}): {video['frames']} frames, {sum(video['detections'])} detections drawn, "
         f"{_fmt(video['throughput_fps'], '.1f')} frames/s; the step took {video['seconds']:.1f} s"
         + (" (reused from an earlier run)." if video.get("reused") else ".")),
        "",
        (f"Latency, decode to detections: p50 {_fmt(latency['p50_ms'], '.0f')} ms, p90 {_fmt(latency['p90_ms'], '.0f')} "
         f"ms, p99 {_fmt(latency['p99_ms'], '.0f')} ms (a file is read ahead of the model, so its frames wait in the "
         "pipeline's queues; a live source's stays within a few stage times). Per stage (ms per frame):"),
        "",
    ]
    return lines + _table(["stage", "mean", "p50", "p90", "p99"], [
        [name, *(_fmt(row[k], ".1f") for k in ("mean_ms", "p50_ms", "p90_ms", "p99_ms"))]
        for name, row in video["stages"].items() if row["count"]])


def write_deploy_report(out: Path, report: dict[str, Any]) -> dict[str, Any]:
    """Draw the figures, then write ``report.json`` and ``report.md`` into ``out`` (each atomically); return the report."""
    from ssd_export.deploy.figures import write_figures

    try:
        report["figures"] = write_figures(out, report)
    except Exception as exc:  # noqa: BLE001 - a missing matplotlib or a bad figure must not lose the report; it says so
        report["figures"] = {"error": f"{type(exc).__name__}: {exc}"}
        print(f"ssd-export deploy: figures not drawn: {type(exc).__name__}: {exc}", file=sys.stderr)
    report["report_json"] = str(out / "report.json")
    report["report_md"] = str(out / "report.md")
    atomic_write_bytes(out / "report.json", (json.dumps(report, indent=1, sort_keys=True) + "\n").encode())
    atomic_write_bytes(out / "report.md", render_markdown(report).encode())
    return report


def _bench_images(bench: dict[str, Any]) -> str:
    """What the latency was measured on: the test images, or (older reports) random scenes of a size."""
    if bench.get("image_size"):
        return f"random {bench['image_size'][0]}x{bench['image_size'][1]} scenes"
    return bench.get("images", "given images")
