"""Benchmark: the image check before training (``ssd_runtime.image_check``), cold and cached.

For each mode (quick: header + completeness; full: decode every image) and thread count, checks every
image of a split twice with a fresh cache file: once cold (nothing cached) and once cached (a rerun:
only a stat per file). ``--evict`` first drops the images from the OS page cache
(``posix_fadvise(DONTNEED)``, no root needed), so "cold" also reads from disk. Prints one JSON object.

    python -m benchmarks.image_check --data DIR [--split trainval [test]] [--modes quick full] [--workers 1 2]
        [--evict] [--repeats 1]

Make the data with ``ssd-train data --out DIR [--images N --test 0]`` (VOC-sized JPEGs).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from benchmarks.common import cpu_name
from ssd_runtime.image_check import CHECK_MODES, check_images
from ssd_runtime.voc import preflight, split_roots


def evict(paths: list[Path]) -> None:
    """Drop the files' pages from the OS page cache (Linux; a no-op where posix_fadvise is missing)."""
    if not hasattr(os, "posix_fadvise"):
        return
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def measure(paths: list[Path], mode: str, workers: int, evict_first: bool) -> dict:
    """Cold (empty cache) then cached check of ``paths``: seconds and images/s of each."""
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "image-check.json"
        if evict_first:
            evict(paths)
        cold = check_images(paths, mode=mode, workers=workers, cache_path=cache)
        cached = check_images(paths, mode=mode, workers=workers, cache_path=cache)
        cache_bytes = cache.stat().st_size
    return {
        "mode": mode, "workers": workers, "page_cache_evicted": evict_first, "bad": len(cold.bad),
        "cold_s": round(cold.seconds, 3), "cold_images_per_s": round(cold.images_per_s),
        "cached_s": round(cached.seconds, 3), "cached_images_per_s": round(cached.images_per_s),
        "cached_verdicts": cached.cached, "cache_file_bytes": cache_bytes,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", required=True, help="VOC root(s) or a generated dataset folder")
    parser.add_argument("--split", nargs="+", default=["trainval"], help="split(s) whose images are checked")
    parser.add_argument("--modes", nargs="+", choices=CHECK_MODES, default=list(CHECK_MODES))
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--evict", action="store_true", help="drop the images from the page cache before each cold run")
    parser.add_argument("--repeats", type=int, default=1, help="measure each setting this many times (all kept)")
    args = parser.parse_args(argv)

    data = args.data if len(args.data) > 1 else args.data[0]
    roots = {split: split_roots(data, split) for split in args.split}
    paths = [image_path for split in args.split for _, _, image_path, _ in preflight(roots[split], split)]
    runs = [
        measure(paths, mode, workers, args.evict)
        for _ in range(args.repeats)
        for mode in args.modes
        for workers in args.workers
    ]
    report = {
        "benchmark": "image_check", "images": len(paths), "bytes": sum(p.stat().st_size for p in paths),
        "data": sorted({str(r) for rs in roots.values() for r in rs}), "splits": args.split, "cpu": cpu_name(), "cores": os.cpu_count(),
        "runs": runs,
    }  # fmt: skip
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
