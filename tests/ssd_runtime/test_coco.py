"""The torch-free COCO reader: layout, frame, category ids, crowd regions and every bad-input case."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ssd_runtime.coco import category_ids, coco_classes, read_coco_split, split_files
from ssd_runtime.errors import AnnotationError, DatasetError
from ssd_runtime.voc import ReadReport
from tests.helpers.dataset_files import coco_ann, coco_image, make_coco

CLASSES = ("background", "cat", "dog")
CATEGORIES = [(7, "dog"), (3, "cat")]  # non-contiguous ids, listed out of order


def test_boxes_are_in_the_toolkit_frame_and_labels_follow_the_class_list(tmp_path):
    root = make_coco(tmp_path, [coco_image(5, "a.jpg")],
                     [coco_ann(1, 5, 3, [10, 20, 50, 60]), coco_ann(2, 5, 7, [0, 0, 100, 90], difficult=1)], CATEGORIES)
    (rec,) = read_coco_split(root, "trainval", CLASSES)
    assert rec.boxes.dtype == np.float32 and rec.labels.dtype == np.int64 and rec.difficult.dtype == bool
    # the VOC box xmin=11 ymin=21 xmax=60 ymax=80 is COCO [10, 20, 50, 60]: the same record
    np.testing.assert_array_equal(rec.boxes, [[10, 20, 59, 79], [0, 0, 99, 89]])
    assert rec.labels.tolist() == [1, 2] and rec.difficult.tolist() == [False, True] and rec.crowd.tolist() == [False, False]
    assert (rec.width, rec.height, rec.image_id) == (100, 90, "a")


def test_categories_in_id_order_map_back_to_their_ids(tmp_path):
    root = make_coco(tmp_path, [coco_image(1, "a.jpg")], [], CATEGORIES)
    names, ids, _ = coco_classes(root)
    assert names == ("background", "cat", "dog") and ids == (3, 7)
    assert category_ids(root, names) == {1: 3, 2: 7}
    assert category_ids(root, ("background", "dog", "cat", "bird")) == {1: 7, 2: 3}


def test_crowd_regions_are_difficult_and_marked_crowd(tmp_path):
    root = make_coco(tmp_path, [coco_image(1, "a.jpg"), coco_image(2, "b.jpg")],
                     [coco_ann(1, 1, 3, [10, 10, 30, 30], iscrowd=1), coco_ann(2, 1, 7, [50, 50, 20, 20])], CATEGORIES)
    a, b = read_coco_split(root, "trainval", CLASSES)
    assert a.difficult.tolist() == [True, False] and a.crowd.tolist() == [True, False]
    assert b.num_objects == 0 and b.boxes.shape == (0, 4)  # an image without annotations is a negative


def test_layout_aliases_and_roboflow(tmp_path):
    make_coco(tmp_path / "coco", [coco_image(1, "a.jpg")], [], CATEGORIES, split="val")
    assert split_files(tmp_path / "coco", "test") == (tmp_path / "coco/annotations/instances_val.json", tmp_path / "coco/images")
    rf = tmp_path / "rf" / "valid"
    make_coco(rf, [coco_image(1, "a.jpg")], [], CATEGORIES)
    (rf / "annotations" / "instances_trainval.json").rename(rf / "_annotations.coco.json")
    (rf / "images" / "a.jpg").rename(rf / "a.jpg")
    (rec,) = read_coco_split(tmp_path / "rf", "test", CLASSES)
    assert rec.image_path == rf / "a.jpg"
    with pytest.raises(DatasetError, match="instances_trainval.json"):
        read_coco_split(tmp_path / "rf", "trainval", CLASSES)


def test_boxes_outside_the_image_are_clipped_and_degenerate_ones_dropped_or_refused(tmp_path):
    root = make_coco(tmp_path, [coco_image(1, "a.jpg")],
                     [coco_ann(11, 1, 3, [-5, 10, 200, 20]), coco_ann(12, 1, 3, [150, 10, 20, 20]),
                      coco_ann(13, 1, 3, [10, 10, "x", 20])], CATEGORIES)
    report = ReadReport()
    with pytest.warns(UserWarning, match="degenerate_box: 1"):
        (rec,) = read_coco_split(root, "trainval", CLASSES, report=report)
    np.testing.assert_array_equal(rec.boxes, [[0, 10, 100, 29]])
    assert report.counts == {"clipped_box": 2, "degenerate_box": 1, "malformed_box": 1}
    with pytest.raises(AnnotationError, match=r"instances_trainval\.json annotation id 12 \(cat\): degenerate box"):
        read_coco_split(root, "trainval", CLASSES, strict=True, report=ReadReport())


def test_unknown_class_names_are_collected_and_can_be_skipped(tmp_path):
    root = make_coco(tmp_path, [coco_image(1, "a.jpg")],
                     [coco_ann(1, 1, 9, [1, 1, 5, 5]), coco_ann(2, 1, 9, [1, 1, 5, 5]), coco_ann(3, 1, 3, [1, 1, 5, 5])],
                     [*CATEGORIES, (9, "zebra")])
    with pytest.raises(AnnotationError) as err:
        read_coco_split(root, "trainval", CLASSES)
    assert "'zebra' in 2 file(s)" in str(err.value) and "annotation id 1" in str(err.value) and "skip_unknown" in str(err.value)
    with pytest.warns(UserWarning, match="unknown_class: 2"):
        (rec,) = read_coco_split(root, "trainval", CLASSES, skip_unknown=True)
    assert rec.labels.tolist() == [1]


@pytest.mark.parametrize(("images", "annotations", "error", "match"), [
    ([coco_image(1, "../outside.jpg")], [], AnnotationError, r"image id 1: file_name '\.\./outside\.jpg' leaves the image folder"),
    ([coco_image(1, "/etc/passwd")], [], AnnotationError, "leaves the image folder"),
    ([coco_image(1, "a.jpg"), coco_image(1, "b.jpg")], [], AnnotationError, "image id 1: image id listed twice"),
    ([coco_image(1, "a.jpg"), coco_image(2, "a.jpg")], [], AnnotationError, "image id 2: file_name 'a.jpg' listed twice"),
    ([coco_image(1, "a.jpg")], [coco_ann(4, 2, 3, [1, 1, 5, 5])], AnnotationError, r"annotation id 4: image_id 2 is not in 'images'"),
    ([coco_image(1, "a.jpg")], [coco_ann(4, 1, 5, [1, 1, 5, 5])], AnnotationError, r"annotation id 4: category_id 5 is not in 'categories' \[3, 7\]"),
    ([coco_image(1, "a.jpg")], [coco_ann(4, 1, 3, [1, 1, 5, 5]), coco_ann(4, 1, 3, [1, 1, 5, 5])], AnnotationError, "annotation id 4: annotation id listed twice"),
    ([], [], DatasetError, "has no images"),
], ids=["dotdot", "absolute", "dup-image-id", "dup-file", "unknown-image", "unknown-category", "dup-annotation", "empty-split"])
def test_bad_input_is_refused_naming_the_file_and_the_id(tmp_path, images, annotations, error, match):
    root = make_coco(tmp_path, images, annotations, CATEGORIES)
    with pytest.raises(error, match=match):
        read_coco_split(root, "trainval", CLASSES)


def test_missing_images_are_listed_together_and_bad_files_refused(tmp_path):
    root = make_coco(tmp_path, [coco_image(1, "a.jpg"), coco_image(2, "b.jpg"), coco_image(3, "c.jpg")], [], CATEGORIES)
    (root / "images" / "a.jpg").unlink()
    (root / "images" / "c.jpg").unlink()
    with pytest.raises(DatasetError, match=r"2 file\(s\) listed by .*instances_trainval\.json are missing") as err:
        read_coco_split(root, "trainval", CLASSES)
    assert "a.jpg" in str(err.value) and "c.jpg" in str(err.value)
    path = root / "annotations" / "instances_trainval.json"
    for text, match in (("{not json", "not valid JSON"), ("[]", "JSON object"), ('{"images": []}', "no 'categories' list"),
                        ('{"images": [], "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "a"}]}', "duplicate category names")):
        path.write_text(text)
        with pytest.raises(AnnotationError, match=match):
            read_coco_split(root, "trainval", CLASSES)


def test_missing_size_is_read_from_the_image_and_a_broken_image_named(tmp_path):
    root = make_coco(tmp_path, [coco_image(1, "a.jpg", size=None)], [coco_ann(1, 1, 3, [1, 1, 5, 5])], CATEGORIES, image_size=(64, 48))
    report = ReadReport()
    (rec,) = read_coco_split(root, "trainval", CLASSES, report=report, warn=False)
    assert (rec.width, rec.height) == (64, 48) and report.counts["size_from_image"] == 1
    (root / "images" / "a.jpg").write_bytes(b"not an image")
    with pytest.raises(AnnotationError, match=r"image id 1: no valid width/height, and the image cannot be read"):
        read_coco_split(root, "trainval", CLASSES)
    doc = json.loads((root / "annotations" / "instances_trainval.json").read_text())
    assert doc["images"][0]["file_name"] == "a.jpg"
