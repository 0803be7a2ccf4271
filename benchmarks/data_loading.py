"""Data-loading benchmark: training images/s through the DataLoader with the full augmentation.

Generates (or reuses) the VOC-sized JPEGs of the embedded dataset, then times whole epochs-worth of
batches through :func:`ssd_train.data.make_loader` with 1 and 2 workers (and 0 = in-process, for
reference), after a warm-up batch per worker. Prints one JSON object.

    python -m benchmarks.data_loading [--data DIR] [--images 400] [--batches 20] [--batch-size 32]
        [--workers 0 1 2] [--repeats N] [--float32] [--compare N]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from ssd_runtime.voc import split_roots
from ssd_train.data import VOCDetection, make_loader
from ssd_train.synthetic import generate_voc_dataset


def measure(dataset: VOCDetection, workers: int, batch_size: int, batches: int, seed: int, normalize: bool) -> dict:
    """images/s over ``batches`` batches after one warm-up batch per worker (workers started)."""
    # persistent workers: a run longer than an epoch keeps the same processes (and their CPU counters)
    loader = make_loader(dataset, batch_size, seed=seed, workers=workers, prefetch_factor=2 if workers else None,
                         normalize=normalize, persistent_workers=True)
    iterator = iter(loader)
    for _ in range(max(1, workers)):  # warm-up: start workers, fill caches
        next(iterator)
    count = 0
    pids = [w.pid for w in getattr(iterator, "_workers", [])]
    cpu_start = _cpu_seconds(pids)
    start = time.perf_counter()
    for _ in range(batches):
        try:
            images, *_ = next(iterator)
        except StopIteration:
            iterator = iter(loader)
            images, *_ = next(iterator)
        count += images.shape[0]
    seconds = time.perf_counter() - start
    cpu = _cpu_seconds(pids) - cpu_start
    del iterator
    return {
        "workers": workers,
        "batches": "float32 normalized" if normalize else "uint8 (normalized on the training device, as fit does)",
        "images": count,
        "seconds": round(seconds, 3),
        "images_per_s": round(count / seconds, 1),
        # CPU time of the loading processes (the workers, or this process for workers=0): what one
        # uncontended core would deliver, less sensitive to other jobs on a shared machine
        "cpu_ms_per_image": round(1000 * cpu / count, 2),
        "images_per_cpu_s": round(count / cpu, 1) if cpu > 0 else None,
    }


def _medians(results: list[dict]) -> list[dict]:
    """Per (workers, batches) configuration: the median images/s and CPU ms per image over the repeats."""
    import statistics

    out = []
    for key in dict.fromkeys((r["workers"], r["batches"]) for r in results):
        runs = [r for r in results if (r["workers"], r["batches"]) == key]
        cpu = [r["cpu_ms_per_image"] for r in runs if r["cpu_ms_per_image"] > 0]
        out.append({
            "workers": key[0], "batches": key[1], "repeats": len(runs),
            "images_per_s": round(statistics.median(r["images_per_s"] for r in runs), 1),
            "images_per_s_all": [r["images_per_s"] for r in runs],
            "cpu_ms_per_image": round(statistics.median(cpu), 2) if cpu else None,
        })
    return out


def _cpu_seconds(pids: list[int]) -> float:
    """user + system CPU seconds of the given processes (Linux /proc), or of this process if none."""
    if not pids:
        return time.process_time()
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
        except (OSError, IndexError, ValueError):
            pass
    return total


def transform_cpu_ms(dataset: VOCDetection, count: int, seed: int) -> dict:
    """CPU ms per image of the fast and the literal reference augmentation (decode included), in-process."""
    import numpy as np

    from ssd_runtime.images import open_image
    from ssd_train.augment import train_transform
    from tests.helpers.augment_reference import reference_train_transform  # the slow oracle of the tests

    out = {}
    for name, fn in (("fast", train_transform), ("reference_literal", reference_train_transform)):
        start = time.process_time()
        for i in range(count):
            record = dataset.records[i % len(dataset)]
            fn(open_image(record.image_path), record.boxes, record.labels, record.difficult, np.random.default_rng([seed, i]))
        out[name] = round(1000 * (time.process_time() - start) / count, 2)
    return {"images": count, "cpu_ms_per_image": out}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="a VOC root to read (default: generate into a temp folder)")
    parser.add_argument("--images", type=int, default=400, help="images to generate when --data is not given")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1, help="interleaved rounds; medians are reported")
    parser.add_argument("--float32", action="store_true", help="also time float32-normalized batches")
    parser.add_argument("--compare", type=int, default=100, help="images for the fast vs literal-reference transform timing (0: skip)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.data) if args.data else Path(tmp) / "voc"
        if not args.data:
            generate_voc_dataset(root, images=args.images, test=0, seed=args.seed)
        dataset = VOCDetection.from_voc(split_roots(root, "trainval"), "trainval", class_names=None, train=True, seed=args.seed)
        # uint8 batches are what `ssd-train fit` loads (normalized on the device); float32 for reference.
        # Repeats are interleaved (every configuration once per round) so machine noise hits all alike.
        kinds = [False, True] if args.float32 else [False]
        results = [measure(dataset, w, args.batch_size, args.batches, args.seed, normalize=n)
                   for _ in range(args.repeats) for n in kinds for w in args.workers]
        summary = _medians(results)
        compare = transform_cpu_ms(dataset, args.compare, args.seed) if args.compare else None
    report = {
        "benchmark": "data_loading",
        "pipeline": "decode + photometric + zoom-out + crop + flip + resize 300, collate (+ normalize for float32 batches)",
        "dataset": {"root": str(args.data or "generated"), "images": len(dataset), "classes": len(dataset.class_names) - 1},
        "batch_size": args.batch_size,
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "median_over_repeats": summary,
        "results": results,
        "transform_only": compare,
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
