"""Benchmark: paired bootstrap of a mAP delta, 500 images x 200 detections, 1000 resamples (JSON on stdout).

    python -m benchmarks.bootstrap [--images 500] [--detections 200] [--resamples 1000]

Single-threaded. Times, on the same synthetic set (``benchmarks.metric.synthetic_set``) and machine:
``map_of_detections`` once (the baseline: what one resample would cost if the resampled set were built and
evaluated literally), ``resampled_aps`` of one model over all resamples (matching done once, each
resample a repetition by image weights and a cumsum per class), and ``paired_bootstrap`` of two models.
"""
from __future__ import annotations

from benchmarks.common import single_threaded

single_threaded()  # before NumPy is imported

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks.common import cpu_name  # noqa: E402
from benchmarks.metric import synthetic_set  # noqa: E402
from ssd_runtime.bootstrap import BootstrapSettings, paired_bootstrap, resample_weights, resampled_aps  # noqa: E402
from ssd_runtime.detections import Detections  # noqa: E402
from ssd_runtime.metric import map_of_detections  # noqa: E402
from ssd_runtime.spec import VOC_CLASSES  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--detections", type=int, default=200)
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args(argv)
    detections, ground_truths = synthetic_set(args.images, args.detections)
    # a second model: the same boxes, scores jittered (another ranking, other TPs)
    rng = np.random.default_rng(1)
    other = [Detections(d.boxes, d.labels, np.clip(d.scores + rng.normal(0, 0.05, len(d)), 0, 1).astype(np.float32))
             for d in detections]
    settings = BootstrapSettings(resamples=args.resamples)
    start = time.perf_counter()
    reference = map_of_detections(detections, ground_truths, VOC_CLASSES)
    voc_map_s = time.perf_counter() - start
    model = map_of_detections(other, ground_truths, VOC_CLASSES)
    weights = resample_weights(args.images, settings)
    start = time.perf_counter()
    resampled_aps(reference.matches, weights)
    one_model_s = time.perf_counter() - start
    start = time.perf_counter()
    intervals = paired_bootstrap(model.matches, reference.matches, settings)
    paired_s = time.perf_counter() - start
    out = {
        "cpu": cpu_name(), "images": args.images, "detections_per_image": args.detections,
        "resamples": args.resamples,
        "voc_map_once_s": round(voc_map_s, 4),
        "literal_resamples_estimate_s": round(voc_map_s * args.resamples, 1),  # the baseline, x resamples
        "resampled_aps_one_model_s": round(one_model_s, 3),
        "paired_bootstrap_s": round(paired_s, 3),
        "delta_points": round((model.map - reference.map) * 100, 4),
        "interval_points": [round(v, 4) for v in intervals.map],
    }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
