"""Sensitive layers: keep the INT8 model's most sensitive convolutions in float until a mAP target is met.

``search_int8("ssd300.onnx", "calibration/set.json", "ssd300_int8.onnx", data="data/shapes", max_drop=0.5)``
(``ssd-export int8 ... --max-drop 0.5 --data D``) runs a bounded search, judged on a **held-out part of
the training split** (never the test split):

1. held-out images (:func:`heldout_images`): images of D's ``trainval`` split that are neither in the
   calibration manifest (same file, or same sha256) nor in D's ``test`` split (same file, id or sha256),
   chosen class-balanced and deterministically by :func:`ssd_export.int8.calibration.select_images`;
2. the INT8 model as ``ssd-export int8`` builds it (the baseline), and the held-out mAP of the fp32
   source and of the baseline (``map_of_detector_on_records`` through the runtime's ``Detector`` at the
   evaluation settings); drop = (fp32 - int8) mAP in points; within the target when drop <= ``max_drop``
   (one-sided: an INT8 model better than fp32 on the held-out images needs no float layer);
3. when the baseline misses the target, every quantized Conv is scored by measurement
   (:func:`layer_sensitivity`): the baseline with only that Conv in float
   (:func:`~ssd_export.int8.surgery.keep_float`), run on a small held-out batch; the score is how much
   of the baseline's output error vs fp32 it removes (normalized mean squared error of ``locs`` plus
   that of ``class_logits``);
4. trial k keeps the top 1, 2, 4, 8, ... ranked Convs in float (at most ``max_trials`` trials) and
   measures the held-out mAP; the search stops at the first trial within the target;
5. the model written is that trial's (or, when none is within the target, the trial with the smallest
   drop: ``met`` is False and ``ssd-export int8`` exits 1 after writing it, saying so), made by
   :func:`ssd_export.int8.quantize.quantize_int8` with the search's summary (``search=``): the same quantization,
   then :func:`~ssd_export.int8.surgery.keep_float` on the chosen Convs, recorded as
   ``excluded_nodes.sensitive`` and with the summary under ``settings.search`` in the metadata and
   ``<output>.int8.json``.

"In float" means the Conv reads a float input and its fp32 weight (no DequantizeLinear feeds it).
ONNX Runtime's ``nodes_to_exclude`` (``--exclude``) is not that: it keeps the weight and the output in
float but the input stays quantized by the Q/DQ pair of the layer before (a ReLU's). Trials are built
by ONNX surgery on the baseline (:func:`~ssd_export.int8.surgery.keep_float`), not by quantizing again:
``quantize_static`` recalibrates on every call (20 s for 500 calibration images on the width-0.125
``cpu-quick`` model, 2-core AMD EPYC under load), the surgery takes about 2 ms: on that model and
machine the 35 Convs are scored in 9 s (8 images) and a trial (surgery + held-out mAP of 200 images)
takes 6-7 s, so a full search (two quantizations, fp32 and baseline mAP, scoring, four trials) takes
about 1.5 minutes. The calibration is deterministic, so the written model is the measured trial's graph (the report's
``final.max_abs_diff_vs_trial`` is 0). The whole search is two quantizations, the scoring, and one
held-out mAP per trial.

The search report (the ranking with each Conv's score, each trial's Convs in float, held-out mAP of
fp32 and INT8, the drop in points, seconds) is returned and saved atomically as
``<output>.int8_search.json``.
"""
from __future__ import annotations

import os
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import onnx
import onnxruntime

from ssd_export.int8.calibration import CalibrationSet, select_images
from ssd_export.defaults import (
    DEFAULT_HOLDOUT_IMAGES,
    DEFAULT_MAX_TRIALS,
    DEFAULT_PROXY_IMAGES,
    HOLDOUT_SEED,
    HOLDOUT_SPLIT,
)
from ssd_export.int8.errors import Int8Error
from ssd_export.int8.quantize import quantize_int8
from ssd_export.int8.surgery import keep_float, quantized_convs
from ssd_export.parity import write_report
from ssd_runtime.backends.onnxruntime import OrtBackend
from ssd_runtime.datasets import detect_format, has_split, read_split
from ssd_runtime.detector import Detector
from ssd_runtime.errors import DatasetError
from ssd_runtime.evaluate import map_of_detector_on_records
from ssd_runtime.fileio import sha256_file
from ssd_runtime.onnx_model import read_onnx_info
from ssd_runtime.preprocess import preprocess
from ssd_runtime.voc import VOCRecord

__all__ = [
    "HeldOut",
    "HeldOutWarning",
    "heldout_images",
    "layer_sensitivity",
    "search_int8",
    "trial_sizes",
]


class HeldOutWarning(UserWarning):
    """Fewer held-out images than asked for (the training split minus calibration and test images)."""


@dataclass(frozen=True)
class HeldOut:
    """The held-out images: records in selection order and what was left out.

    paths: the images relative to the dataset folder (POSIX); available: training images neither in
    the calibration set nor in the test split; in_calibration / in_test: training images left out.
    """

    records: tuple[VOCRecord, ...]
    paths: tuple[str, ...]
    split: str
    seed: int
    available: int
    in_calibration: int
    in_test: int

    def to_dict(self) -> dict[str, Any]:
        return {"split": self.split, "seed": self.seed, "images": len(self.paths), "available": self.available,
                "left_out": {"calibration": self.in_calibration, "test_split": self.in_test},
                "paths": list(self.paths)}


def heldout_images(
    data: str | os.PathLike,
    calibration: CalibrationSet,
    class_names: Sequence[str],
    *,
    images: int = DEFAULT_HOLDOUT_IMAGES,
    seed: int = HOLDOUT_SEED,
) -> HeldOut:
    """``images`` images of the training split of ``data`` that are in neither the calibration set nor the test split.

    An image is left out when its file, or its content (sha256), is one of the calibration manifest's,
    or when its file, id or content is in ``data``'s ``test`` split (none when there is no test split).
    The choice among the rest is :func:`ssd_export.int8.calibration.select_images` (class-balanced, by
    ``seed``): the same dataset, manifest, count and seed give the same images. Warns
    (:class:`HeldOutWarning`) when fewer are left; raises :class:`Int8Error` when none is.
    """
    base = Path(data).resolve()
    layout = detect_format(base)  # any layout (ssd_runtime.datasets)
    records = read_split(base, HOLDOUT_SPLIT, tuple(class_names), format=layout, warn=False)
    calib_files = {p.resolve() for p in calibration.image_paths}
    calib_hashes = {str(entry["sha256"]) for entry in calibration.manifest["images"]}
    try:  # the test split's images, their annotations' classes aside
        test_items = read_split(base, "test", tuple(class_names), format=layout, skip_unknown=True, warn=False) \
            if has_split(base, "test", format=layout) else []
    except DatasetError:  # no readable test split in this dataset: nothing to keep apart
        test_items = []
    test_files = {r.image_path.resolve() for r in test_items}
    test_ids = {r.image_id for r in test_items}
    test_hashes = {sha256_file(image) for image in test_files}
    by_path: dict[str, VOCRecord] = {}
    in_calibration = in_test = 0
    for record in records:
        file = record.image_path.resolve()
        digest = sha256_file(file)
        if file in calib_files or digest in calib_hashes:
            in_calibration += 1
        elif file in test_files or record.image_id in test_ids or digest in test_hashes:
            in_test += 1
        else:
            by_path[PurePosixPath(file.relative_to(base)).as_posix()] = record
    chosen = select_images({p: frozenset(int(c) for c in r.labels) for p, r in by_path.items()}, images, seed)
    if not chosen:
        raise Int8Error(f"{base}: no held-out image: every {HOLDOUT_SPLIT!r} image is in the calibration set "
                        f"({in_calibration}) or the test split ({in_test}); calibrate on fewer images "
                        "(ssd-export calibration --calibration-images N) to keep some for the search")
    if len(chosen) < images:
        warnings.warn(f"{len(chosen)} held-out image(s) ({images} asked for): split {HOLDOUT_SPLIT!r} of {base} "
                      f"has {len(records)}, {in_calibration} in the calibration set, {in_test} in the test split",
                      HeldOutWarning, stacklevel=2)
    return HeldOut(tuple(by_path[p] for p in chosen), tuple(chosen), HOLDOUT_SPLIT, seed, len(by_path),
                   in_calibration, in_test)


# ---------------------------------------------------------------------------------------- the proxy


def _session(model: onnx.ModelProto | Path) -> onnxruntime.InferenceSession:
    source = str(model) if isinstance(model, Path) else model.SerializeToString()
    return onnxruntime.InferenceSession(source, providers=["CPUExecutionProvider"])


def _outputs(session: onnxruntime.InferenceSession, images: np.ndarray) -> list[np.ndarray]:
    """(locs (N, P, 4), class_logits (N, P, C)) float32 of one batch."""
    return session.run(None, {session.get_inputs()[0].name: images})


def _proxy_error(outputs: Sequence[np.ndarray], reference: Sequence[np.ndarray]) -> float:
    """Sum over ``locs`` and ``class_logits`` of the mean squared error vs fp32 divided by fp32's variance."""
    return float(sum(np.mean((a - b) ** 2) / max(float(np.var(b)), 1e-12) for a, b in zip(outputs, reference)))


def layer_sensitivity(
    int8_model: onnx.ModelProto,
    fp32_model: onnx.ModelProto,
    images: np.ndarray,
    candidates: Sequence[str] | None = None,
) -> tuple[float, list[dict[str, Any]]]:
    """(baseline proxy error, ranking): each candidate Conv scored by keeping it alone in float.

    ``images``: a float32 (N, 3, S, S) preprocessed batch. The proxy error of a model is
    :func:`_proxy_error` of its raw outputs against the fp32 model's on ``images``; a Conv's
    ``score`` is the baseline's error minus the error with that Conv in float (how much error it
    causes). Ranking: score descending, graph order on ties (deterministic). ``candidates`` defaults
    to :func:`~ssd_export.int8.surgery.quantized_convs`.
    """
    candidates = quantized_convs(int8_model) if candidates is None else list(candidates)
    reference = _outputs(_session(fp32_model), images)
    baseline = _proxy_error(_outputs(_session(int8_model), images), reference)
    order = {name: i for i, name in enumerate(candidates)}
    scored = []
    for name in candidates:
        error = _proxy_error(_outputs(_session(keep_float(int8_model, fp32_model, [name])), images), reference)
        scored.append({"node": name, "score": baseline - error, "error_in_float": error})
    scored.sort(key=lambda s: (-s["score"], order[s["node"]]))
    return baseline, scored


def trial_sizes(max_trials: int, candidates: int) -> list[int]:
    """Convs kept in float by each trial: 1, 2, 4, 8, ... (at most ``max_trials``, capped at ``candidates``)."""
    sizes: list[int] = []
    for k in range(max_trials):
        size = min(2**k, candidates)
        if size and size not in sizes:
            sizes.append(size)
    return sizes


# ------------------------------------------------------------------------------------- held-out mAP


def _heldout_map(model: Path, records: Sequence[VOCRecord]) -> float:
    """Held-out mAP (0-1) of an ONNX model at its evaluation settings, as ``ssd-runtime eval`` measures it."""
    result, _ = map_of_detector_on_records(Detector(OrtBackend(model)), records)
    return float(result.map)


# ------------------------------------------------------------------------------------------ search


def search_int8(
    onnx_path: str | os.PathLike,
    calibration: str | os.PathLike | CalibrationSet,
    output: str | os.PathLike,
    *,
    data: str | os.PathLike,
    max_drop: float,
    max_trials: int = DEFAULT_MAX_TRIALS,
    holdout_images: int = DEFAULT_HOLDOUT_IMAGES,
    proxy_images: int = DEFAULT_PROXY_IMAGES,
    seed: int = HOLDOUT_SEED,
    data_root: str | os.PathLike | None = None,
    exclude: Sequence[str] = (),
    parity: bool = True,
    **quantize_options: Any,
) -> dict[str, Any]:
    """Quantize ``onnx_path`` to ``output``, keeping the most sensitive Convs in float until the held-out
    mAP drop is at most ``max_drop`` points (the module docstring's steps); return the search report.

    Args:
        data: the dataset whose ``trainval`` split (minus the calibration images and the test split)
            gives the held-out images; the model's class list.
        max_drop: the target, (fp32 - INT8) held-out mAP in points (0-100 scale), >= 0.
        max_trials: trials with Convs in float after the baseline (1, 2, 4, 8, ... Convs).
        holdout_images: held-out images for the mAP; the first ``proxy_images`` of them score the Convs.
        seed: of the held-out choice.
        data_root, exclude, parity, quantize_options (``method``, ``percentile``, ``batch_size``): as
            :func:`ssd_export.int8.quantize.quantize_int8`; ``exclude`` nodes stay in float in every trial.

    The report: ``met``, ``max_drop_points``, ``heldout`` (:meth:`HeldOut.to_dict`), ``fp32_map``,
    ``baseline`` and ``trials`` (each: ``kept_float``, ``int8_map``, ``drop_points``, ``met``,
    ``seconds``), ``ranking`` (each Conv's ``score`` and ``error_in_float``; empty when the baseline
    is within the target) with ``proxy`` (images, the baseline's error), ``chosen`` (the trial written),
    ``kept_float``, ``final`` (the written model's outputs vs the chosen trial's), ``int8_report``
    (:func:`~ssd_export.int8.quantize.quantize_int8`'s), ``seconds``, ``report_path``
    (``<output>.int8_search.json``, where it is saved). When no trial is within the target the
    smallest drop is written and ``met`` is False (the caller decides the exit code).
    """
    start = time.perf_counter()
    onnx_path, output = Path(onnx_path), Path(output)
    if not max_drop >= 0:
        raise Int8Error(f"max_drop must be >= 0 points, got {max_drop}")
    if max_trials < 1 or holdout_images < 1 or proxy_images < 1:
        raise Int8Error(f"max_trials, holdout_images and proxy_images must be >= 1, got {max_trials}, "
                        f"{holdout_images}, {proxy_images}")
    info = read_onnx_info(onnx_path)
    calib = calibration if isinstance(calibration, CalibrationSet) else CalibrationSet.load(calibration, data_root=data_root)
    heldout = heldout_images(data, calib, info.spec.class_names, images=holdout_images, seed=seed)
    options = {**quantize_options, "exclude": tuple(exclude)}
    # (N, 3, S, S) float32: the first held-out images, preprocessed as the runtime does
    proxy = preprocess([r.image_path for r in heldout.records[:proxy_images]], info.spec, "float32-nchw").pixels
    output.parent.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"source": str(onnx_path), "output": str(output), "max_drop_points": max_drop,
                              "max_trials": max_trials, "heldout": heldout.to_dict(), "ranking": [], "trials": []}
    with tempfile.TemporaryDirectory(prefix=f".{output.name}.search.", dir=output.parent) as tmp:
        folder = Path(tmp)
        base_path = folder / "baseline.onnx"
        quantize_int8(onnx_path, calib, base_path, parity=False, **options)
        step = time.perf_counter()
        report["fp32_map"] = _heldout_map(onnx_path, heldout.records)
        report["fp32_seconds"] = round(time.perf_counter() - step, 3)
        baseline = _trial(report, base_path, [], heldout.records, max_drop, time.perf_counter())
        report["baseline"] = baseline
        chosen, chosen_path = baseline, base_path
        if not baseline["met"]:
            step = time.perf_counter()
            int8_model, fp32_model = onnx.load(str(base_path)), onnx.load(str(onnx_path))
            baseline_error, ranking = layer_sensitivity(int8_model, fp32_model, proxy)
            report["ranking"] = ranking
            report["proxy"] = {"images": len(proxy), "baseline_error": baseline_error,
                               "metric": "MSE/var(fp32) of locs + MSE/var(fp32) of class_logits",
                               "seconds": round(time.perf_counter() - step, 3)}
            for size in trial_sizes(max_trials, len(ranking)):
                step = time.perf_counter()
                kept = [s["node"] for s in ranking[:size]]
                path = folder / f"trial{len(report['trials']) + 1}.onnx"
                onnx.save(keep_float(int8_model, fp32_model, kept), str(path))
                trial = _trial(report, path, kept, heldout.records, max_drop, step)
                report["trials"].append(trial)
                if trial["drop_points"] < chosen["drop_points"] or trial["met"]:
                    chosen, chosen_path = trial, path
                if trial["met"]:
                    break
        report["met"] = chosen["met"]
        report["chosen"] = chosen["name"]
        report["kept_float"] = list(chosen["kept_float"])
        search_path = output.with_name(output.name + ".int8_search.json")
        summary = {"max_drop_points": max_drop, "met": chosen["met"], "kept_float": list(chosen["kept_float"]),
                   "heldout_images": len(heldout.paths), "heldout_split": heldout.split,
                   "fp32_map": report["fp32_map"], "int8_map": chosen["int8_map"],
                   "drop_points": chosen["drop_points"], "trials": len(report["trials"]),
                   "report": search_path.name}
        report["int8_report"] = quantize_int8(onnx_path, calib, output, parity=parity, search=summary,
                                              calibrated=base_path, **options)
        ours, theirs = _outputs(_session(output), proxy), _outputs(_session(chosen_path), proxy)
        report["final"] = {"output": str(output), "max_abs_diff_vs_trial": max(
            float(np.max(np.abs(a - b))) for a, b in zip(ours, theirs))}
    report["seconds"] = round(time.perf_counter() - start, 3)
    report["report_path"] = str(write_report(report, search_path))
    return report


def _trial(report: dict[str, Any], path: Path, kept: list[str], records: Sequence[VOCRecord], max_drop: float,
           start: float) -> dict[str, Any]:
    """One trial's held-out mAP and drop against ``report['fp32_map']``."""
    int8_map = _heldout_map(path, records)
    drop = (report["fp32_map"] - int8_map) * 100.0
    return {"name": "baseline" if not kept else f"trial{len(report['trials']) + 1}", "kept_float": kept,
            "int8_map": int8_map, "fp32_map": report["fp32_map"], "drop_points": drop,
            "met": bool(drop <= max_drop), "seconds": round(time.perf_counter() - start, 3)}

