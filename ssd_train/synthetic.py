"""The embedded generated dataset: a deterministic Pascal-VOC-format detection set of shapes.

No machine here can download VOC, so ``ssd-train data --out DIR`` writes a dataset in the very same
on-disk layout (``Annotations/``, ``JPEGImages/``, ``ImageSets/Main/{trainval,test}.txt``, plus the
optional ``classes.txt``) and it is read by the same reader as real VOC (:mod:`ssd_runtime.voc`).
``--format coco|yolo`` writes the same images and objects in the COCO or YOLO layout instead
(:func:`generate_dataset`, through :func:`ssd_runtime.convert.convert_dataset`; YOLO cannot carry the
difficult flags).

Each image is a scene of :mod:`ssd_runtime.scenes` (a pure function of ``(seed, index)``: shapes of
:data:`CLASSES` on clutter, what it holds is described there), saved as a JPEG (quality 90) beside its
VOC annotation: ``<truncated>1`` for objects running off the edge, ``<difficult>1`` for tiny or heavily
occluded ones.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from ssd_runtime.classes import CLASSES_FILE, write_class_file
from ssd_runtime.convert import convert_dataset
from ssd_runtime.datasets import FORMATS
from ssd_runtime.scenes import CLASSES, SyntheticObject, noise_tile, render_image
from ssd_runtime.voc import BACKGROUND

__all__ = ["CLASSES", "CLASS_NAMES", "DEFAULT_IMAGES", "GENERATOR_VERSION", "SyntheticObject", "annotation_xml",
           "generate_dataset", "generate_voc_dataset", "render_image"]

#: The model's class list for the generated dataset: background at index 0, then the scenes' shapes.
CLASS_NAMES: tuple[str, ...] = (BACKGROUND, *CLASSES)
#: Recorded in dataset.json; bumped whenever the files written change (ssd_runtime.scenes' drawing included).
GENERATOR_VERSION = 2
DEFAULT_IMAGES = 2500
DEFAULT_TEST_FRACTION = 0.2
_JPEG_QUALITY = 90


def annotation_xml(image_id: str, width: int, height: int, objects: list[SyntheticObject]) -> str:
    """A Pascal VOC annotation document for one image."""
    parts = [
        "<annotation>",
        "\t<folder>VOC-synthetic</folder>",
        f"\t<filename>{image_id}.jpg</filename>",
        "\t<source><database>ssd300-toolkit generated shapes</database></source>",
        f"\t<size><width>{width}</width><height>{height}</height><depth>3</depth></size>",
        "\t<segmented>0</segmented>",
    ]
    for obj in objects:
        parts += [
            "\t<object>",
            f"\t\t<name>{obj.name}</name>",
            "\t\t<pose>Unspecified</pose>",
            f"\t\t<truncated>{int(obj.truncated)}</truncated>",
            f"\t\t<difficult>{int(obj.difficult)}</difficult>",
            f"\t\t<bndbox><xmin>{obj.xmin}</xmin><ymin>{obj.ymin}</ymin><xmax>{obj.xmax}</xmax><ymax>{obj.ymax}</ymax></bndbox>",
            "\t</object>",
        ]
    parts.append("</annotation>\n")
    return "\n".join(parts)


def _write_one(args: tuple[Path, int, int, int]) -> tuple[int, int, int]:
    """Render and write image ``index``; returns (index, objects, difficult objects)."""
    out, seed, index, _ = args
    if seed not in _NOISE_CACHE:
        _NOISE_CACHE[seed] = noise_tile(seed)
    image, objects = render_image(seed, index, _NOISE_CACHE[seed])
    image_id = f"{index:06d}"
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=_JPEG_QUALITY)
    (out / "JPEGImages" / f"{image_id}.jpg").write_bytes(buffer.getvalue())
    xml = annotation_xml(image_id, image.width, image.height, objects)
    (out / "Annotations" / f"{image_id}.xml").write_text(xml, encoding="utf-8")
    return index, len(objects), sum(o.difficult for o in objects)


_NOISE_CACHE: dict[int, np.ndarray] = {}


def generate_voc_dataset(
    out: str | os.PathLike,
    *,
    images: int = DEFAULT_IMAGES,
    test: int | None = None,
    seed: int = 0,
    workers: int = 1,
    overwrite: bool = False,
    progress=None,
) -> dict:
    """Write the generated dataset to ``out`` (a VOC root) and return a report (plain data).

    Args:
        images: total number of images; ids ``000000``..; the last ``test`` go to test.txt, the rest
            to trainval.txt.
        test: size of the test split (default 20% of ``images``, at least 1 when images >= 2).
        seed: the dataset is a pure function of (seed, index) and the library versions (Pillow's JPEG
            encoder): the same seed writes the same files.
        workers: processes to render with (1 = in this process).
        overwrite: allow writing into a folder that already holds a dataset.
        progress: optional callable(done, total).
    """
    out = Path(out)
    if images < 1:
        raise ValueError(f"images must be >= 1, got {images}")
    if test is None:
        test = max(1, int(round(DEFAULT_TEST_FRACTION * images))) if images >= 2 else 0
    test = int(test)
    if not 0 <= test <= images:
        raise ValueError(f"test must be in [0, images={images}], got {test}")
    if (out / "Annotations").exists() and any((out / "Annotations").iterdir()) and not overwrite:
        raise FileExistsError(f"{out}: already holds a dataset (Annotations/ is not empty); pass overwrite=True / --overwrite or choose another folder")
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    jobs = [(out, seed, i, images) for i in range(images)]
    total_objects = total_difficult = 0
    if workers > 1:
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(workers) as pool:
            for done, (_, n, d) in enumerate(pool.imap_unordered(_write_one, jobs, chunksize=16), 1):
                total_objects, total_difficult = total_objects + n, total_difficult + d
                if progress:
                    progress(done, images)
    else:
        for done, job in enumerate(jobs, 1):
            _, n, d = _write_one(job)
            total_objects, total_difficult = total_objects + n, total_difficult + d
            if progress:
                progress(done, images)
    ids = [f"{i:06d}" for i in range(images)]
    trainval, test_ids = ids[: images - test], ids[images - test :]
    (out / "ImageSets" / "Main" / "trainval.txt").write_text("".join(f"{i}\n" for i in trainval))
    (out / "ImageSets" / "Main" / "test.txt").write_text("".join(f"{i}\n" for i in test_ids))
    write_class_file(out / CLASSES_FILE, CLASS_NAMES)
    report = {
        "out": str(out),
        "images": images,
        "trainval": len(trainval),
        "test": len(test_ids),
        "seed": seed,
        "classes": list(CLASSES),
        "objects": total_objects,
        "difficult": total_difficult,
        "generator_version": GENERATOR_VERSION,
        "seconds": round(time.perf_counter() - start, 2),
    }
    (out / "dataset.json").write_text(json.dumps({k: v for k, v in report.items() if k not in ("out", "seconds")}, indent=2) + "\n")
    return report


def generate_dataset(out: str | os.PathLike, *, format: str = "voc", **kwargs) -> dict:
    """The generated dataset written to ``out`` in layout ``format`` ("voc", "coco" or "yolo"); the report of
    :func:`generate_voc_dataset` with ``format`` and, for COCO and YOLO, ``cannot_carry`` (what the layout
    loses: :data:`ssd_runtime.convert.CANNOT_CARRY`).

    COCO and YOLO are the VOC dataset (``kwargs`` as :func:`generate_voc_dataset`'s, ``overwrite``
    excepted) written in a temporary folder beside ``out`` and converted, its images moved; ``out`` must not
    exist or be empty.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    if format == "voc":
        return {**generate_voc_dataset(out, **kwargs), "format": format}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.voc.", dir=out.parent))
    try:
        report = generate_voc_dataset(tmp, **kwargs)
        converted = convert_dataset(tmp, out, format, images="move")
        facts = {**json.loads((tmp / "dataset.json").read_text()), "format": format}
        (out / "dataset.json").write_text(json.dumps(facts, indent=2) + "\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {**report, "out": str(out), "format": format, "cannot_carry": converted["cannot_carry"]}
