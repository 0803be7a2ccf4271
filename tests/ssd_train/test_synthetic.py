"""The generated VOC-format dataset: layout, exact round trip through the VOC reader, determinism."""
from __future__ import annotations

import json
import warnings
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from ssd_runtime.classes import dataset_class_names
from ssd_runtime.images import load_image
from ssd_runtime.voc import read_voc_split
from ssd_train.cli import main
from ssd_train.synthetic import CLASS_NAMES, CLASSES, generate_voc_dataset, render_image


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    report = generate_voc_dataset(out, images=40, test=10, seed=3)
    return out, report


def test_layout_and_splits(dataset):
    out, report = dataset
    assert (out / "classes.txt").is_file() and (out / "dataset.json").is_file()
    trainval = (out / "ImageSets/Main/trainval.txt").read_text().split()
    test = (out / "ImageSets/Main/test.txt").read_text().split()
    assert len(trainval) == 30 and len(test) == 10 and not set(trainval) & set(test)
    assert report["trainval"] == 30 and report["test"] == 10
    assert len(list((out / "JPEGImages").glob("*.jpg"))) == 40 == len(list((out / "Annotations").glob("*.xml")))
    assert len(CLASSES) >= 6 and dataset_class_names([out]) == CLASS_NAMES


def test_round_trip_exactly_the_objects_written(dataset):
    out, report = dataset
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing clipped, dropped or defaulted
        records = read_voc_split([out], "trainval", CLASS_NAMES) + read_voc_split([out], "test", CLASS_NAMES)
    assert sum(r.num_objects for r in records) == report["objects"]
    assert sum(int(r.difficult.sum()) for r in records) == report["difficult"]
    for record in records:
        _, objects = render_image(3, int(record.image_id))
        expected = np.array([[o.xmin - 1, o.ymin - 1, o.xmax - 1, o.ymax - 1] for o in objects], np.float32).reshape(-1, 4)
        np.testing.assert_array_equal(record.boxes, expected)
        assert record.labels.tolist() == [CLASS_NAMES.index(o.name) for o in objects]
        assert record.difficult.tolist() == [o.difficult for o in objects]
        image = load_image(record.image_path)
        assert image.shape == (record.height, record.width, 3)


def test_images_are_voc_sized_and_objects_varied(dataset):
    out, _ = dataset
    records = read_voc_split([out], "trainval", CLASS_NAMES)
    sizes = {(r.width, r.height) for r in records}
    assert len(sizes) > 5 and all(max(s) == 500 and min(s) >= 300 for s in sizes)
    counts = [r.num_objects for r in records]
    assert max(counts) >= 3 and min(counts) >= 0
    boxes = np.concatenate([r.boxes for r in records])
    sides = np.concatenate([np.minimum(r.boxes[:, 2] - r.boxes[:, 0] + 1, r.boxes[:, 3] - r.boxes[:, 1] + 1) / min(r.width, r.height) for r in records])
    assert sides.min() < 0.08 and sides.max() > 0.4
    assert len(set(np.concatenate([r.labels for r in records]).tolist())) >= 5
    assert boxes.shape[0] > 60


def test_difficult_flags_on_tiny_or_occluded(tmp_path):
    report = generate_voc_dataset(tmp_path, images=120, test=0, seed=0)
    assert 0 < report["difficult"] < 0.4 * report["objects"]
    # overlapping objects exist; no box is empty in the reference frame (no warning)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        records = read_voc_split([tmp_path], "trainval", CLASS_NAMES)
    assert all(((r.boxes[:, 2:] - r.boxes[:, :2]) >= 2).all() for r in records)
    from ssd_runtime.boxes import iou

    overlaps = [iou(r.boxes, r.boxes)[np.triu_indices(r.num_objects, 1)].max() for r in records if r.num_objects > 1]
    assert max(overlaps) > 0.1


def test_deterministic_from_the_seed(tmp_path):
    generate_voc_dataset(tmp_path / "a", images=4, seed=5)
    generate_voc_dataset(tmp_path / "b", images=4, seed=5, workers=2)
    generate_voc_dataset(tmp_path / "c", images=4, seed=6)
    for sub in ("JPEGImages/000002.jpg", "Annotations/000003.xml", "ImageSets/Main/test.txt"):
        assert (tmp_path / "a" / sub).read_bytes() == (tmp_path / "b" / sub).read_bytes()
    assert (tmp_path / "a/JPEGImages/000002.jpg").read_bytes() != (tmp_path / "c/JPEGImages/000002.jpg").read_bytes()


def test_annotations_are_plain_voc_xml(dataset):
    out, _ = dataset
    root = ET.parse(out / "Annotations" / "000000.xml").getroot()
    assert root.tag == "annotation" and root.find("size/width") is not None
    for obj in root.findall("object"):
        assert obj.findtext("name") in CLASSES and obj.findtext("difficult") in ("0", "1")


def test_cli_writes_dataset_and_refuses_overwrite(tmp_path, capsys):
    assert main(["data", "--out", str(tmp_path / "d"), "--images", "5", "--seed", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == 5 and report["test"] == 1 and report["trainval"] == 4
    assert main(["data", "--out", str(tmp_path / "d"), "--images", "5"]) == 2
    assert "already holds a dataset" in capsys.readouterr().err
    assert main(["data", "--out", str(tmp_path / "d"), "--images", "5", "--overwrite", "--json"]) == 0


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="images"):
        generate_voc_dataset(tmp_path, images=0)
    with pytest.raises(ValueError, match="test"):
        generate_voc_dataset(tmp_path, images=3, test=5)


@pytest.mark.parametrize("layout", ["coco", "yolo"])
def test_the_generated_dataset_in_coco_and_yolo_layouts_reads_back_the_same(dataset, tmp_path, capsys, layout):
    from ssd_runtime.datasets import dataset_classes, detect_format, read_split

    voc, report = dataset
    out = tmp_path / layout
    assert main(["data", "--out", str(out), "--format", layout, "--num-images", "40", "--test", "10", "--seed", "3",
                 "--json"]) == 0
    written = json.loads(capsys.readouterr().out)
    assert written["format"] == layout and written["objects"] == report["objects"]
    assert json.loads((out / "dataset.json").read_text())["format"] == layout
    assert detect_format(out) == layout and dataset_classes(out)[0] == CLASS_NAMES
    assert [p.name for p in tmp_path.iterdir()] == [layout]  # the VOC folder it was converted from is gone
    lost = written["cannot_carry"]["difficult"]
    assert lost["count"] == report["difficult"] > 0
    for split in ("trainval", "test"):
        expected, got = read_voc_split([voc], split, CLASS_NAMES), read_split(out, split, CLASS_NAMES)
        assert [r.image_id for r in got] == [r.image_id for r in expected]
        for e, g in zip(expected, got):
            assert (g.width, g.height) == (e.width, e.height) and g.labels.tolist() == e.labels.tolist()
            np.testing.assert_array_equal(g.boxes, e.boxes)
            assert g.difficult.tolist() == (e.difficult.tolist() if layout == "coco" else [False] * e.num_objects)
            assert g.image_path.read_bytes() == e.image_path.read_bytes()


def test_ssd_train_convert_says_what_the_target_cannot_carry(dataset, tmp_path, capsys):
    voc, report = dataset
    out = tmp_path / "yolo"
    assert main(["convert", "--data", str(voc), "--out", str(out), "--to", "yolo", "--images", "link", "--json"]) == 0
    captured = capsys.readouterr()
    converted = json.loads(captured.out)
    assert converted["from"] == "voc" and {s: v["images"] for s, v in converted["splits"].items()} == {"trainval": 30, "test": 10}
    assert sum(v["objects"] for v in converted["splits"].values()) == report["objects"]
    assert f"note: yolo cannot carry difficult ({report['difficult']}): difficult flags dropped" in captured.err
    assert main(["convert", "--data", str(voc), "--out", str(out), "--to", "coco"]) == 2
    assert "exists and is not an empty folder" in capsys.readouterr().err
