"""Benchmark: the COCO and YOLO readers against the VOC reader on the same images (``ssd_runtime.datasets``).

Converts ``--data`` (a VOC dataset, e.g. the generated one) to the COCO and YOLO layouts (images hard-linked,
so every reader opens the same files), then reads ``--split`` with each reader ``--repeats`` times and
reports the best time, images/s and objects/s of each, the ratio to the VOC reader, and that the three
gave the same records (YOLO: without the difficult flags it cannot carry). The page cache is warm (every
reader's files were read once before the timed runs). Prints one JSON object.

    python -m benchmarks.dataset_readers --data DIR [--split trainval] [--repeats 5] [--out FILE]

Make the data with ``ssd-train data --out DIR --num-images 2500``.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from benchmarks.common import cpu_facts, loadavg, print_report
from ssd_runtime.convert import convert_dataset
from ssd_runtime.datasets import dataset_classes, read_split


def _same(a, b, *, difficult: bool) -> bool:
    return len(a) == len(b) and all(
        x.image_id == y.image_id and (x.width, x.height) == (y.width, y.height) and x.boxes.tobytes() == y.boxes.tobytes()
        and x.labels.tolist() == y.labels.tolist() and (not difficult or x.difficult.tolist() == y.difficult.tolist())
        for x, y in zip(a, b))  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a VOC dataset (the generated one: ssd-train data --out DIR)")
    parser.add_argument("--split", default="trainval")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=None, help="also write the JSON report here")
    args = parser.parse_args(argv)
    names = dataset_classes(args.data, args.split, warn=False)[0]
    with tempfile.TemporaryDirectory(dir=Path(args.data).resolve().parent) as tmp:
        paths = {"voc": Path(args.data)}
        for layout in ("coco", "yolo"):
            convert_dataset(args.data, Path(tmp) / layout, layout, splits=(args.split,), images="link")
            paths[layout] = Path(tmp) / layout
        results, records = {}, {}
        for layout, path in paths.items():
            records[layout] = read_split(path, args.split, names, warn=False)  # warm the page cache
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                read_split(path, args.split, names, warn=False)
                times.append(time.perf_counter() - start)
            best = min(times)
            images = len(records[layout])
            objects = sum(r.num_objects for r in records[layout])
            results[layout] = {"seconds": round(best, 4), "images_per_s": round(images / best, 1),
                               "objects_per_s": round(objects / best, 1), "images": images, "objects": objects}
        for layout in ("coco", "yolo"):
            results[layout]["time_vs_voc"] = round(results[layout]["seconds"] / results["voc"]["seconds"], 3)
            results[layout]["same_records_as_voc"] = _same(records["voc"], records[layout], difficult=layout == "coco")
    print_report({"benchmark": "dataset_readers", "data": str(args.data), "split": args.split, "repeats": args.repeats,
                  "cpu": cpu_facts(), "loadavg": loadavg(), "readers": results}, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
