"""COCO and YOLO datasets written for a test (grey images, annotations given): ``make_coco`` and ``make_yolo``,
the counterparts of :mod:`tests.helpers.voc_files`."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PIL import Image


def coco_image(image_id: int, file_name: str, size: tuple[int, int] | None = (100, 90)) -> dict[str, Any]:
    """One ``images`` entry; ``size`` (width, height), None leaves them out."""
    entry: dict[str, Any] = {"id": image_id, "file_name": file_name}
    if size is not None:
        entry.update(width=size[0], height=size[1])
    return entry


def coco_ann(ann_id: int, image_id: int, category_id: int, bbox, **extra) -> dict[str, Any]:
    """One ``annotations`` entry (``bbox`` [x, y, w, h])."""
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": list(bbox), "iscrowd": 0, **extra}


def make_coco(root: Path, images: list[dict], annotations: list[dict], categories: list[tuple[int, str]],
              split: str = "trainval", image_size=(100, 90)) -> Path:
    """A COCO root (annotations/instances_<split>.json, images/<file_name>) with one grey image per entry."""
    for sub in ("annotations", "images"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for entry in images:
        path = root / "images" / entry["file_name"]
        if ".." not in entry["file_name"] and not entry["file_name"].startswith("/"):
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", image_size, (90, 90, 90)).save(path)
    doc = {"images": images, "annotations": annotations, "categories": [{"id": i, "name": n} for i, n in categories]}
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(doc))
    return root


def make_yolo(root: Path, labels: dict[str, str | None], names: list[str], split: str = "train",
              image_size=(100, 90), yaml: str | None = None) -> Path:
    """A YOLO root (data.yaml, images/<split>/<id>.jpg, labels/<split>/<id>.txt); a label of None writes no file."""
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "labels" / split).mkdir(parents=True, exist_ok=True)
    for image_id, text in labels.items():
        Image.new("RGB", image_size, (90, 90, 90)).save(root / "images" / split / f"{image_id}.jpg")
        if text is not None:
            (root / "labels" / split / f"{image_id}.txt").write_text(text)
    if yaml is None:
        yaml = f"path: .\ntrain: images/{split}\nnames: [{', '.join(names)}]\n"
    (root / "data.yaml").write_text(yaml)
    return root
