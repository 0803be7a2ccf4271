"""COCO metrics through faster-coco-eval, held equal to pycocotools (the reference) to 1e-6: random detections
with crowd regions and empty images, and a real model's detections through ``ssd-runtime eval --metric coco``,
whose results file names the dataset's own (non-contiguous) image and category ids, objects sized by the
dataset's own areas."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ssd_runtime.coco_metric import COCO_STATS, coco_metrics, dataset_ids, resolve_metric
from ssd_runtime.convert import convert_dataset
from ssd_runtime.datasets import read_split
from ssd_runtime.detections import Detections
from ssd_runtime.detections_file import ImageRecord, read_parts
from ssd_runtime.voc import VOCRecord

TOLERANCE = 1e-6


def _random_set(seed: int, num_images: int = 40, classes: int = 3):
    """Records with crowd and difficult objects, some images empty, and noisy detections of them."""
    rng = np.random.default_rng(seed)
    records, images = [], []
    for i in range(num_images):
        width, height = int(rng.integers(80, 400)), int(rng.integers(80, 400))
        k = int(rng.integers(0, 6)) if i % 7 else 0
        xy = rng.uniform(0, 0.6, (k, 2)) * [width, height]
        boxes = np.concatenate([xy, xy + rng.uniform(4, 0.4 * min(width, height), (k, 2))], 1).astype(np.float32)
        labels = rng.integers(1, classes + 1, k)
        crowd = rng.random(k) < 0.15
        difficult = crowd | (rng.random(k) < 0.1)
        records.append(VOCRecord(f"{i:04d}", Path(f"{i}.jpg"), Path("gt.json"), width, height, boxes, labels, difficult, crowd))
        hits = min(k, int(rng.integers(0, 8)))
        extra = int(rng.integers(0, 6)) if i % 5 else 0
        noise = np.concatenate([xy[:0], rng.uniform(0, 0.7, (extra, 2)) * [width, height]])
        det = np.concatenate([boxes[:hits] + rng.normal(0, 5, (hits, 4)), np.concatenate([noise, noise + 25], 1)])
        scores = rng.random(hits + extra).astype(np.float32)
        order = np.argsort(-scores)
        det_labels = np.concatenate([labels[:hits], rng.integers(1, classes + 1, extra)])
        fractions = (det / [width, height, width, height]).astype(np.float32)
        images.append(ImageRecord(i, f"{i:04d}", width, height,
                                  Detections(fractions[order], det_labels[order].astype(np.int64), scores[order])))
    return records, images


def _assert_equal(result, reference):
    assert result.library == "faster-coco-eval" and reference.library == "pycocotools"
    for name in COCO_STATS:
        assert result.stats[name] == pytest.approx(reference.stats[name], abs=TOLERANCE), name
    for ours, theirs in zip(result.classes, reference.classes):
        assert ours["name"] == theirs["name"] and ours["category_id"] == theirs["category_id"]
        for key in ("ap", "ap50"):
            assert ours[key] == pytest.approx(theirs[key], abs=TOLERANCE, nan_ok=True)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_detections_equal_pycocotools(seed):
    records, images = _random_set(seed)
    names = ("background", "a", "b", "c")
    ids = {1: 17, 2: 3, 3: 90}
    result = coco_metrics(records, images, names, category_ids=ids)
    _assert_equal(result, coco_metrics(records, images, names, category_ids=ids, library="pycocotools"))
    assert 0 < result.stats["AP"] < result.stats["AP50"] <= 1
    empty = [ImageRecord(i.index, i.image_id, i.width, i.height, Detections.empty()) for i in images]
    nothing = coco_metrics(records, empty, names)
    _assert_equal(nothing, coco_metrics(records, empty, names, library="pycocotools"))
    assert nothing.stats["AP"] == 0 and nothing.stats["AR100"] == 0


def test_crowd_regions_are_ignored_not_missed():
    names = ("background", "a")
    box = np.asarray([[10, 10, 59, 59]], dtype=np.float32)
    record = VOCRecord("x", Path("x.jpg"), Path("gt.json"), 100, 100, np.concatenate([box, box + 30]),
                       np.asarray([1, 1]), np.asarray([False, True]), np.asarray([False, True]))
    found = Detections(box / 100, np.asarray([1]), np.asarray([0.9], dtype=np.float32))
    result = coco_metrics([record], [ImageRecord(0, "x", 100, 100, found)], names)
    assert result.stats["AP"] == pytest.approx(1.0) and result.stats["AR100"] == pytest.approx(1.0)


def test_ssd_runtime_eval_metric_coco_and_its_results_file(voc_root, runtime_onnx, tmp_path, capsys):
    """A real model's detections on a COCO dataset with ids 3, 13, 23, ... and image ids 100 + 7i: the toolkit's
    metrics equal pycocotools reading the dataset's own JSON and the results file the toolkit wrote."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from ssd_runtime.cli import main

    root = tmp_path / "coco"
    convert_dataset(voc_root, root, "coco", splits=("test",), images="link")
    path = root / "annotations" / "instances_test.json"
    doc = json.loads(path.read_text())
    for cat in doc["categories"]:
        cat["id"] = cat["id"] * 10 - 7
    for image in doc["images"]:
        image["id"] = 100 + 7 * image["id"]
    for k, ann in enumerate(doc["annotations"]):
        ann.update(category_id=ann["category_id"] * 10 - 7, image_id=100 + 7 * ann["image_id"],
                   iscrowd=ann.pop("difficult", 0),  # COCO's way to ignore an object, read back as a crowd region
                   area=ann["area"] * (0.3 + 0.1 * (k % 7)))  # a segment's area, as COCO's: what sizes go by
    path.write_text(json.dumps(doc))
    assert resolve_metric("auto", root) == "coco" and resolve_metric("auto", voc_root) == "voc"
    results = tmp_path / "results.json"
    assert main(["eval", "--model", str(runtime_onnx), "--data", str(root), "--coco-results", str(results),
                 "--detections-out", str(tmp_path / "dets.jsonl"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["metric"] == "coco" and report["coco"]["images"] == 8 and report["runtime"]["map"] > 0
    written = json.loads(results.read_text())
    assert written and {r["image_id"] for r in written} <= {image["id"] for image in doc["images"]}
    assert {r["category_id"] for r in written} <= {cat["id"] for cat in doc["categories"]}
    reference_gt = COCO(str(path))
    evaluator = COCOeval(reference_gt, reference_gt.loadRes(str(results)), "bbox")
    evaluator.evaluate(), evaluator.accumulate(), evaluator.summarize()
    for name, value in zip(COCO_STATS, evaluator.stats):
        assert report["coco"]["stats"][name] == pytest.approx(value, abs=TOLERANCE), name
    assert report["coco"]["stats"]["AP"] > 0
    capsys.readouterr()  # pycocotools' progress lines
    # the detections file, evaluated again: the same numbers, pycocotools on the same detections too
    assert main(["eval", "--data", str(root), "--detections", str(tmp_path / "dets.jsonl"), "--metric", "coco",
                 "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["coco"] == report["coco"]
    _, images = read_parts([tmp_path / "dets.jsonl"])
    names = ("background", *[c["name"] for c in report["coco"]["classes"]])
    records = read_split(root, "test", names)
    category_ids, image_ids = dataset_ids(root, "test", records, names)
    reference = coco_metrics(records, images, names, category_ids=category_ids, image_ids=image_ids, library="pycocotools")
    assert {k: pytest.approx(v, abs=TOLERANCE) for k, v in reference.stats.items()} == report["coco"]["stats"]
    assert main(["eval", "--data", str(root), "--detections", str(tmp_path / "dets.jsonl"), "--metric", "voc",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["coco"] is None
