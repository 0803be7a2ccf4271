"""The torch-free YOLO reader: data.yaml without PyYAML, layout, frame and every bad-input case."""
from __future__ import annotations

import numpy as np
import pytest

from ssd_runtime.errors import AnnotationError, DatasetError
from ssd_runtime.voc import ReadReport
from ssd_runtime.yolo import data_yaml_text, parse_data_yaml, read_yolo_split, split_images, yolo_classes
from tests.helpers.dataset_files import make_yolo

CLASSES = ("background", "cat", "dog")


def test_boxes_are_fractions_of_the_image_in_the_toolkit_frame(tmp_path):
    # the VOC box xmin=11 ymin=21 xmax=60 ymax=80 in a 100x90 image: x 10..60, y 20..80 as edges
    root = make_yolo(tmp_path, {"a": f"0 0.35 {50 / 90} 0.5 {60 / 90}\n\n1 0.5 0.5 1 1\n", "b": None}, ["cat", "dog"])
    a, b = read_yolo_split(root, "trainval", CLASSES)
    assert a.boxes.dtype == np.float32 and a.labels.dtype == np.int64
    np.testing.assert_allclose(a.boxes, [[10, 20, 59, 79], [0, 0, 99, 89]], atol=1e-4)
    assert a.labels.tolist() == [1, 2] and a.difficult.tolist() == [False, False] and a.crowd is None
    assert (a.width, a.height, a.image_id) == (100, 90, "a")
    assert b.num_objects == 0 and b.annotation_path.name == "b.txt"  # no label file: a background image


@pytest.mark.parametrize("names", [
    "names: [cat, dog]\n",
    "names: ['cat', \"dog\"]  # comment\n",
    "names:\n  - cat\n  - dog\n",
    "names:\n  0: cat\n  1: dog\nnc: 2\n",
    "names: {0: cat, 1: dog}\n",
])
def test_data_yaml_forms_give_the_same_names(tmp_path, names):
    root = make_yolo(tmp_path, {"a": ""}, [], yaml=f"# a dataset\npath: .\ntrain: images/train\nval: images/train\n{names}")
    assert yolo_classes(root)[0] == CLASSES


def test_written_data_yaml_reads_back():
    names = ("background", "cat", "dog: big", "true", "7", "a#b")
    text = data_yaml_text(names, {"train": "images/trainval", "val": "images/test"})
    parsed = parse_data_yaml(text, "data.yaml")
    assert parsed["train"] == "images/trainval" and parsed["nc"] == 5
    assert [parsed["names"][i] for i in range(5)] == list(names[1:])


def test_without_a_yaml_names_come_from_a_names_file_and_roboflow_paths_are_found(tmp_path):
    root = make_yolo(tmp_path / "ls", {"a": "1 0.5 0.5 0.2 0.2\n"}, [], split="test")
    (root / "data.yaml").unlink()
    (root / "classes.txt").write_text("cat\ndog\n")
    (rec,) = read_yolo_split(root, "test", CLASSES)
    assert rec.labels.tolist() == [2]
    rf = tmp_path / "rf"
    (rf / "train").mkdir(parents=True)
    make_yolo(tmp_path / "tmp", {"a": "0 0.5 0.5 0.2 0.2\n"}, ["cat"]).joinpath("images", "train").rename(rf / "train" / "images")
    (tmp_path / "tmp" / "labels" / "train").rename(rf / "train" / "labels")
    (rf / "data.yaml").write_text("train: ../train/images\nval: ../valid/images\nnc: 1\nnames: ['cat']\n")
    (rec,) = read_yolo_split(rf, "trainval", CLASSES)
    assert rec.image_path == rf / "train" / "images" / "a.jpg" and rec.labels.tolist() == [1]


def test_image_lists_in_text_files(tmp_path):
    root = make_yolo(tmp_path, {"a": "0 0.5 0.5 0.2 0.2\n", "b": "1 0.5 0.5 0.2 0.2\n"}, ["cat", "dog"],
                     yaml="train: train.txt\nnames: [cat, dog]\n")
    (root / "train.txt").write_text("./images/train/b.jpg\nimages/train/a.jpg\n")
    assert [(i, p.name) for i, p in split_images(root, "trainval")] == [("images/train/b", "b.jpg"), ("images/train/a", "a.jpg")]
    (root / "train.txt").write_text("../../etc/passwd.jpg\n")
    with pytest.raises(AnnotationError, match=r"train\.txt:1: '\.\./\.\./etc/passwd\.jpg' leaves the dataset root"):
        split_images(root, "trainval")


def test_boxes_outside_the_image_are_clipped_and_malformed_lines_dropped_or_refused(tmp_path):
    root = make_yolo(tmp_path, {"a": "0 0.9 0.5 0.4 0.2\n0 1.5 0.5 0.2 0.2\n0 0.5 0.5\n0 nan 0.5 0.1 0.1\n"}, ["cat", "dog"])
    report = ReadReport()
    with pytest.warns(UserWarning, match="malformed_box: 2"):
        (rec,) = read_yolo_split(root, "trainval", CLASSES, report=report)
    np.testing.assert_allclose(rec.boxes, [[70, 36, 100, 53]], atol=1e-4)
    assert report.counts == {"clipped_box": 2, "degenerate_box": 1, "malformed_box": 2}
    with pytest.raises(AnnotationError, match=r"a\.txt:2 \(cat\): degenerate box"):
        read_yolo_split(root, "trainval", CLASSES, strict=True, report=ReadReport())


def test_unknown_class_names_are_collected_and_can_be_skipped(tmp_path):
    root = make_yolo(tmp_path, {"a": "2 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2\n", "b": "2 0.5 0.5 0.2 0.2\n"}, ["cat", "dog", "zebra"])
    with pytest.raises(AnnotationError) as err:
        read_yolo_split(root, "trainval", CLASSES)
    assert "'zebra' in 2 file(s)" in str(err.value) and "a.txt:1" in str(err.value) and "b.txt:1" in str(err.value)
    with pytest.warns(UserWarning, match="unknown_class: 2"):
        a, b = read_yolo_split(root, "trainval", CLASSES, skip_unknown=True)
    assert a.labels.tolist() == [1] and b.num_objects == 0


@pytest.mark.parametrize(("labels", "yaml", "error", "match"), [
    ({"a": "5 0.5 0.5 0.1 0.1\n"}, None, AnnotationError, r"a\.txt:1: class 5 but the dataset names 2 classes"),
    ({"a": None}, None, DatasetError, "no image has a label file"),
    ({}, None, DatasetError, "has no images"),
    ({"a": ""}, "train: ../../elsewhere\nnames: [cat, dog]\n", AnnotationError, "leaves the dataset root"),
    ({"a": ""}, "train: /abs/images\nnames: [cat, dog]\n", AnnotationError, "absolute path"),
    ({"a": ""}, "train: images/train\nnames: [cat, cat]\n", AnnotationError, "unique"),
    ({"a": ""}, "train: images/train\nnc: 3\nnames: [cat, dog]\n", AnnotationError, "nc is 3"),
    ({"a": ""}, "val: images/train\nnames: [cat, dog]\n", DatasetError, "no entry for split 'trainval'"),
    ({"a": ""}, "train: images/train\nnames: &anchor [cat]\n", AnnotationError, r"data\.yaml:2: .* YAML this reader does not parse"),
], ids=["class-index", "no-labels", "empty-split", "dotdot", "absolute", "dup-names", "nc", "no-split", "yaml-anchor"])
def test_bad_input_is_refused_naming_the_file(tmp_path, labels, yaml, error, match):
    root = make_yolo(tmp_path, labels, ["cat", "dog"], yaml=yaml)
    with pytest.raises(error, match=match):
        read_yolo_split(root, "trainval", CLASSES)


def test_an_unreadable_image_is_named(tmp_path):
    root = make_yolo(tmp_path, {"a": "0 0.5 0.5 0.1 0.1\n"}, ["cat", "dog"])
    (root / "images" / "train" / "a.jpg").write_bytes(b"GIF89a not a jpeg")
    with pytest.raises(AnnotationError, match=r"a\.jpg: YOLO labels are fractions of the image size"):
        read_yolo_split(root, "trainval", CLASSES)
