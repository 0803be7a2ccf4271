"""Benchmark: the model's resize (``ssd_runtime.resize.resize_rgb``) against Pillow's, pixels and speed.

For each JPEG (the first ``--count`` of a folder, sorted), decodes it once with the runtime's loader and
resizes it to ``--size`` both ways: Pillow's ``Image.resize(BILINEAR)`` (the baseline, in the same run)
and ``resize_rgb``. Reports how many images differ and by how much, the median time per image of each
on one thread, and (``--dump``) writes both results to an ``.npz`` so that runs under other Pillow /
NumPy / Python versions can be compared with ``--compare``. Torch-free: runs in a bare venv with
``PYTHONPATH`` at the repository. Prints one JSON object.

    python -m benchmarks.resize --images DIR [--count 50] [--size 300] [--repeats 5] [--dump F.npz]
        [--compare A.npz B.npz ...]

Make images with ``ssd-train data --out DIR --images 50 --test 50`` (VOC-sized JPEGs, 500 x 375 to
353 x 500).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.common import cpu_name
from ssd_runtime.images import open_image
from ssd_runtime.resize import resize_rgb


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def run(paths: list[Path], size: int, repeats: int) -> tuple[dict, dict[str, np.ndarray]]:
    """Pixels and per-image times of Pillow's resize and ``resize_rgb`` on ``paths``."""
    images = [open_image(p) for p in paths]
    arrays = [np.asarray(im) for im in images]
    pillow = np.stack([np.asarray(im.resize((size, size), Image.BILINEAR)) for im in images])
    ours = np.stack([resize_rgb(a, size) for a in arrays])
    diff = np.abs(pillow.astype(np.int16) - ours)
    differing = [i for i in range(len(paths)) if diff[i].any()]
    pillow_ms = [_median_ms(lambda im=im: im.resize((size, size), Image.BILINEAR), repeats) for im in images]
    # what the runtime pays: PIL image -> array (a copy) -> resize_rgb
    ours_ms = [_median_ms(lambda im=im: resize_rgb(np.asarray(im), size), repeats) for im in images]
    result = {
        "images": len(paths),
        "size": size,
        "ours_vs_pillow": {
            "images_differing": len(differing),
            "values_differing_fraction": round(float((diff > 0).mean()), 6),
            "max_abs_diff": int(diff.max()),
        },
        "ms_per_image_median": {
            "pillow": round(float(np.median(pillow_ms)), 3),
            "ours": round(float(np.median(ours_ms)), 3),
        },
        "ratio_ours_over_pillow": round(float(np.median(ours_ms) / np.median(pillow_ms)), 2),
    }
    return result, {"pillow": pillow, "ours": ours}


def compare(files: list[Path]) -> dict:
    """Pairwise: do the dumps of runs under other stacks hold the same pixels (Pillow's, ours)?"""
    dumps = {str(f): np.load(f) for f in files}
    names = list(dumps)
    first = dumps[names[0]]
    out = {}
    for name in names[1:]:
        other = dumps[name]
        entry = {}
        for key in ("pillow", "ours"):
            d = np.abs(first[key].astype(np.int16) - other[key])
            entry[key] = {
                "images_differing": int(sum(bool(x.any()) for x in d)),
                "values_differing_fraction_of_those": round(
                    float(np.mean([(x > 0).mean() for x in d if x.any()])) if d.any() else 0.0, 6),
                "max_abs_diff": int(d.max()),
            }
        out[f"{names[0]} vs {name}"] = entry
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, help="folder of JPEGs (a VOC root's JPEGImages/ or the root)")
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--size", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dump", type=Path, help="write both results (uint8 (N, S, S, 3)) to this .npz")
    parser.add_argument("--compare", type=Path, nargs="+", help="compare dumps of earlier runs instead")
    args = parser.parse_args(argv)
    if args.compare:
        print(json.dumps(compare(args.compare), indent=1))
        return 0
    if args.images is None:
        parser.error("--images is required (or --compare)")
    folder = args.images / "JPEGImages" if (args.images / "JPEGImages").is_dir() else args.images
    paths = sorted(folder.glob("*.jpg"))[: args.count]
    if not paths:
        parser.error(f"no .jpg files in {folder}")
    import PIL

    result, pixels = run(paths, args.size, args.repeats)
    result = {
        "cpu": cpu_name(), "threads": 1, "python": platform.python_version(), "numpy": np.__version__,
        "pillow": PIL.__version__, **result,
    }
    if args.dump:
        np.savez_compressed(args.dump, **pixels)
        result["dump"] = str(args.dump)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
