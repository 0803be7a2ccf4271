"""COCO detection metrics (AP at IoU 0.50:0.95, AP50, AP75, AP by object size, AR at 1/10/100), computed by a
library made for them: faster-coco-eval (imported here lazily), with pycocotools as the reference it is held
equal to (``library="pycocotools"``; tests/ssd_runtime/test_coco_metric.py: 1e-6).

The toolkit's records and detections are turned into COCO's two documents, one image per record:

- ground truth: the record's objects (:func:`ssd_runtime.voc.fit_to_image` to the decoded image, as the VOC
  mAP takes them) as ``[x, y, w, h]`` pixels with ``w = x2 - x1 + 1`` (the frame of
  :mod:`ssd_runtime.coco`: a COCO dataset's boxes come back as they were), a COCO file's own ``area``
  (a segment's: what COCO sorts objects by size with) where the record has it, else ``w * h``; crowd
  regions ``iscrowd: 1``, and VOC's difficult objects ``iscrowd: 1`` too (COCO's one way to ignore an object);
- detections (the results format): each box, fractions times the decoded size, in the same frame, its
  ``category_id`` the dataset's (:func:`ssd_runtime.coco.category_ids` for COCO data; else the label).

:func:`coco_results_json` writes the detections for any other tool.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ssd_runtime.detections_file import ImageRecord
from ssd_runtime.coco import box_areas
from ssd_runtime.fileio import atomic_write_bytes
from ssd_runtime.options import METRICS  # --metric's values: "auto" is COCO's for COCO data, VOC's for the rest
from ssd_runtime.voc import VOCRecord, fit_to_image

#: The twelve numbers of COCO's summary, in its order (``stats``).
COCO_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
#: The libraries that compute them: the one used, and the reference.
LIBRARIES = ("faster-coco-eval", "pycocotools")


@dataclass(frozen=True)
class COCOResult:
    """COCO metrics of one evaluation: ``stats`` (name -> value, -1 where COCO has nothing to measure, e.g.
    no large objects), per class AP and AP50 (``nan`` for a class without ground truth), the library."""

    stats: dict[str, float]
    classes: list[dict[str, Any]]
    library: str
    images: int

    def to_dict(self) -> dict[str, Any]:
        return {"stats": dict(self.stats), "classes": [dict(c) for c in self.classes], "library": self.library,
                "images": self.images}


def _xywh(box: Sequence[float]) -> list[float]:
    x1, y1, x2, y2 = box
    return [float(x1), float(y1), float(x2 - x1 + 1.0), float(y2 - y1 + 1.0)]


def coco_documents(
    records: Sequence[VOCRecord], images: Sequence[ImageRecord], class_names: Sequence[str],
    category_ids: Mapping[int, int] | None = None, image_ids: Sequence[int] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(ground-truth document, detections in the results format) of ``records`` and their detections
    (``images[i]`` of ``records[i]``); see the module docstring for the frame. Image ids: ``image_ids``
    (a COCO dataset's own: :func:`ssd_runtime.coco.image_ids`), else 1..N."""
    ids = dict(category_ids) if category_ids else {label: label for label in range(1, len(class_names))}
    gt_images, annotations, results = [], [], []
    for image_id, record, image in zip(image_ids or range(1, len(records) + 1), records, images):
        width, height = image.width, image.height
        gt_images.append({"id": image_id, "width": width, "height": height, "file_name": record.image_id})
        boxes, labels, difficult = fit_to_image(record, (width, height))
        # the annotated areas (COCO's own, a segment's) while the boxes are the record's; else the boxes'
        areas = box_areas(record) if boxes is record.boxes else [None] * len(boxes)
        for box, label, ignore, area in zip(boxes.tolist(), labels.tolist(), difficult.tolist(), areas):
            xywh = _xywh(box)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": ids[label],
                                "bbox": xywh, "area": xywh[2] * xywh[3] if area is None else area, "iscrowd": int(ignore)})
        d = image.detections
        scale = np.asarray([width, height, width, height], dtype=np.float64)
        for box, label, score in zip((d.boxes.astype(np.float64) * scale).tolist(), d.labels.tolist(), d.scores.tolist()):
            results.append({"image_id": image_id, "category_id": ids[label], "bbox": _xywh(box), "score": float(score)})
    categories = [{"id": ids[label], "name": class_names[label]} for label in range(1, len(class_names))]
    return {"images": gt_images, "annotations": annotations, "categories": categories}, results


def _evaluate(gt: dict[str, Any], results: list[dict[str, Any]], library: str):
    """The library's evaluation object after evaluate, accumulate, summarize (its printing swallowed)."""
    quiet = contextlib.redirect_stdout(io.StringIO())
    if library == "faster-coco-eval":
        try:
            from faster_coco_eval import COCO, COCOeval_faster
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ImportError("COCO metrics need faster-coco-eval: pip install 'ssd300-toolkit[coco]'") from exc
        coco_gt = COCO(gt)
        coco_dt = coco_gt.loadRes(results) if results else COCO()
        if not results:  # an empty results document over the same images and categories
            coco_dt.dataset = {"images": gt["images"], "categories": gt["categories"], "annotations": []}
            coco_dt.createIndex()
        evaluator = COCOeval_faster(coco_gt, coco_dt, "bbox", print_function=lambda *a, **k: None)
    elif library == "pycocotools":
        try:
            from pycocotools.coco import COCO
            from pycocotools.cocoeval import COCOeval
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ImportError("the reference COCO metrics need pycocotools: pip install pycocotools") from exc
        with quiet:
            coco_gt = COCO()
            coco_gt.dataset = json.loads(json.dumps(gt))
            coco_gt.createIndex()
            coco_dt = coco_gt.loadRes(results) if results else COCO()
            if not results:
                coco_dt.dataset = {"images": gt["images"], "categories": gt["categories"], "annotations": []}
                coco_dt.createIndex()
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
    else:
        raise ValueError(f"library must be one of {LIBRARIES}, got {library!r}")
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def coco_metrics(
    records: Sequence[VOCRecord], images: Sequence[ImageRecord], class_names: Sequence[str], *,
    category_ids: Mapping[int, int] | None = None, image_ids: Sequence[int] | None = None,
    library: str = "faster-coco-eval",
) -> COCOResult:
    """COCO metrics of per-image detections (``images[i]`` of ``records[i]``) against the records' ground
    truth, computed by ``library`` (:data:`LIBRARIES`)."""
    if len(records) != len(images):
        raise ValueError(f"{len(images)} detection records for {len(records)} images: pass one per image, in order")
    gt, results = coco_documents(records, images, class_names, category_ids, image_ids)
    evaluator = _evaluate(gt, results, library)
    stats = {name: float(value) for name, value in zip(COCO_STATS, evaluator.stats[: len(COCO_STATS)])}
    # precision: (IoU thresholds T, recall points R, categories K, area ranges A, max dets M); A=0 all, M=-1 100
    precision = np.asarray(evaluator.eval["precision"])
    category_order = list(evaluator.params.catIds)
    ids = dict(category_ids) if category_ids else {label: label for label in range(1, len(class_names))}
    classes = []
    for label in range(1, len(class_names)):
        k = category_order.index(ids[label])
        every, at50 = precision[:, :, k, 0, -1], precision[0, :, k, 0, -1]
        classes.append({"name": class_names[label], "category_id": ids[label],
                        "ap": float(every[every > -1].mean()) if (every > -1).any() else float("nan"),
                        "ap50": float(at50[at50 > -1].mean()) if (at50 > -1).any() else float("nan")})
    return COCOResult(stats, classes, library, len(records))


def coco_results_json(path: str | os.PathLike, results: list[dict[str, Any]]) -> Path:
    """Write detections in COCO's results format (a JSON list of ``{image_id, category_id, bbox, score}``), atomically."""
    path = Path(path)
    atomic_write_bytes(path, json.dumps(results, separators=(",", ":")).encode("utf-8"))
    return path




def resolve_metric(metric: str, data: Any, data_format: str = "auto") -> str:
    """"voc" or "coco": ``metric``, or for "auto" COCO's on a COCO dataset (when faster-coco-eval is installed;
    else VOC's, with a warning saying how to get COCO's) and VOC's on any other."""
    import importlib.util
    import warnings

    from ssd_runtime.datasets import resolve_format

    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if metric != "auto":
        return metric
    if resolve_format(data, data_format) != "coco":
        return "voc"
    if importlib.util.find_spec("faster_coco_eval") is None:
        warnings.warn("COCO data: reporting the VOC mAP only; COCO's metrics need faster-coco-eval "
                      "(pip install 'ssd300-toolkit[coco]')", stacklevel=2)
        return "voc"
    return "coco"


def dataset_ids(data: Any, split: str, records: Sequence[VOCRecord], class_names: Sequence[str],
                data_format: str = "auto") -> tuple[dict[int, int] | None, list[int] | None]:
    """(label -> category id, image id per record) of a COCO dataset, so results name its own ids; (None,
    None) for other layouts. A model class the dataset has no category for gets an id above the dataset's."""
    from ssd_runtime.coco import category_ids, coco_classes, image_ids
    from ssd_runtime.datasets import resolve_format

    if resolve_format(data, data_format) != "coco":
        return None, None
    root = data if isinstance(data, (str, os.PathLike)) else list(data)[0]
    ids = category_ids(root, class_names, split)
    top = max(coco_classes(root, split)[1], default=0)
    for label in range(1, len(class_names)):
        ids.setdefault(label, top + label)
    by_record = image_ids(root, split)
    return ids, [by_record[r.image_id] for r in records]


def coco_section(
    metric: str, data: Any, split: str, records: Sequence[VOCRecord], images: Sequence[ImageRecord],
    class_names: Sequence[str], results_path: str | os.PathLike | None = None, data_format: str = "auto",
) -> dict[str, Any] | None:
    """The evaluation report's ``"coco"`` entry (:class:`COCOResult` as a dict) when ``metric`` is "coco", and
    the detections written to ``results_path`` in COCO's results format when given (the dataset's own
    image and category ids for COCO data); None when neither is asked."""
    if metric != "coco" and results_path is None:
        return None
    category_ids, image_ids = dataset_ids(data, split, records, class_names, data_format)
    if results_path is not None:
        coco_results_json(results_path, coco_documents(records, images, class_names, category_ids, image_ids)[1])
    if metric != "coco":
        return None
    return coco_metrics(records, images, class_names, category_ids=category_ids, image_ids=image_ids).to_dict()


def format_coco(section: dict[str, Any]) -> list[str]:
    """Text lines of a report's ``"coco"`` entry: the twelve numbers, then AP and AP50 per class."""
    stats = section["stats"]
    lines = [f"COCO metrics ({section['library']}, {section['images']} images):",
             "  " + "  ".join(f"{name} {stats[name]:.4f}" for name in COCO_STATS[:6]),
             "  " + "  ".join(f"{name} {stats[name]:.4f}" for name in COCO_STATS[6:]),
             f"  {'class':<16} {'AP':>8} {'AP50':>8}"]
    lines += [f"  {c['name']:<16} {c['ap']:8.4f} {c['ap50']:8.4f}" for c in section["classes"]]
    return lines
