"""Benchmark: VOC mAP over 5000 images x 200 detections (JSON on stdout), single-threaded.

    python -m benchmarks.metric [--images 5000] [--detections 200] [--repeats 3]
"""
from __future__ import annotations

from benchmarks.common import single_threaded

single_threaded()  # before NumPy is imported

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from ssd_runtime.detections import Detections  # noqa: E402
from ssd_runtime.metric import GroundTruth, map_of_detections  # noqa: E402
from ssd_runtime.spec import VOC_CLASSES  # noqa: E402


def synthetic_set(num_images: int, dets_per_image: int, seed: int = 0):
    """VOC-like ground truth (about 2.4 objects per image, 10% difficult) and detections."""
    rng = np.random.default_rng(seed)
    num_classes = len(VOC_CLASSES)
    detections, ground_truths = [], []
    for _ in range(num_images):
        g = int(rng.integers(1, 5))
        xy = rng.uniform(0, 0.7, (g, 2))
        gboxes = np.concatenate([xy, xy + rng.uniform(0.05, 0.3, (g, 2))], 1)
        glabels = rng.integers(1, num_classes, g)
        ground_truths.append(GroundTruth.create(gboxes, glabels, rng.random(g) < 0.1))
        src = rng.integers(0, g, dets_per_image)
        boxes = gboxes[src] + rng.normal(0, 0.1, (dets_per_image, 4))
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 0.01)
        labels = np.where(rng.random(dets_per_image) < 0.3, glabels[src], rng.integers(1, num_classes, dets_per_image))
        scores = np.sort(rng.random(dets_per_image).astype(np.float32))[::-1]
        detections.append(Detections(boxes.astype(np.float32), labels.astype(np.int64), scores.copy()))
    return detections, ground_truths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--detections", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    detections, ground_truths = synthetic_set(args.images, args.detections)
    out = {"images": args.images, "detections_per_image": args.detections}
    for method in ("11point", "allpoint"):
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            result = map_of_detections(detections, ground_truths, VOC_CLASSES, ap_method=method)
            times.append(time.perf_counter() - start)
        out[method] = {"seconds_median": round(float(np.median(times)), 3), "map": round(result.map, 4)}
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
