"""The torch-free VOC reader: layout, coordinates and every bad-annotation case."""
from __future__ import annotations

import time

import numpy as np
import pytest

from ssd_runtime.errors import AnnotationError, DatasetError
from ssd_runtime.voc import (
    ReadReport,
    fit_to_image,
    parse_annotation,
    read_voc_split,
    split_roots,
)
from tests.helpers.voc_files import make_root, obj, xml

CLASSES = ("background", "cat", "dog")


def test_coordinates_are_one_based_minus_one(tmp_path):
    root = make_root(tmp_path, {"a": xml([obj("cat", (11, 21, 60, 80)), obj("dog", (1, 1, 100, 90), "1")])})
    (rec,) = read_voc_split([root], "trainval", CLASSES)
    assert rec.boxes.dtype == np.float32 and rec.labels.dtype == np.int64 and rec.difficult.dtype == bool
    np.testing.assert_array_equal(rec.boxes, [[10, 20, 59, 79], [0, 0, 99, 89]])
    assert rec.labels.tolist() == [1, 2] and rec.difficult.tolist() == [False, True]
    assert (rec.width, rec.height) == (100, 90) and rec.image_id == "a"


def test_missing_size_uses_the_image_header(tmp_path):
    root = make_root(tmp_path, {"a": xml([obj()], size=None)}, image_size=(120, 70))
    report = ReadReport()
    (rec,) = read_voc_split([root], "trainval", CLASSES, report=report, warn=False)
    assert (rec.width, rec.height) == (120, 70)
    assert report.counts["size_from_image"] == 1


def test_missing_difficult_defaults_to_zero(tmp_path):
    root = make_root(tmp_path, {"a": xml([obj(difficult=None), obj(difficult="")])})
    (rec,) = read_voc_split([root], "trainval", CLASSES)
    assert rec.difficult.tolist() == [False, False]


def test_unknown_class_error_lists_names_and_files(tmp_path):
    root = make_root(tmp_path, {"a": xml([obj("zebra")]), "b": xml([obj("unicorn"), obj("zebra")])})
    with pytest.raises(AnnotationError) as err:
        read_voc_split([root], "trainval", CLASSES)
    message = str(err.value)
    assert "'zebra' in 2 file(s)" in message and "'unicorn' in 1 file(s)" in message
    assert "a.xml" in message and "b.xml" in message and "skip_unknown" in message


def test_unknown_class_can_be_skipped_with_a_count(tmp_path):
    root = make_root(tmp_path, {"a": xml([obj("zebra"), obj("cat")])})
    report = ReadReport()
    with pytest.warns(UserWarning, match="unknown_class: 1"):
        (rec,) = read_voc_split([root], "trainval", CLASSES, skip_unknown=True, report=report)
    assert rec.labels.tolist() == [1] and report.counts["unknown_class"] == 1


def test_background_is_not_a_class_name_in_annotations(tmp_path):
    root = make_root(tmp_path, {"a": xml([obj("background")])})
    with pytest.raises(AnnotationError, match="background"):
        read_voc_split([root], "trainval", CLASSES)


@pytest.mark.parametrize(
    "box",
    [(60, 21, 11, 80), (11, 21, 11, 80), (11, 80, 60, 21), (150, 10, 200, 50), (-30, -30, -5, -5)],
    ids=["xmin>xmax", "xmin=xmax", "ymin>ymax", "right-of-image", "left-of-image"],
)
def test_degenerate_boxes_dropped_with_count_or_strict_error(tmp_path, box):
    root = make_root(tmp_path, {"a": xml([obj(box=box), obj("dog")])})
    report = ReadReport()
    with pytest.warns(UserWarning, match="degenerate_box: 1"):
        (rec,) = read_voc_split([root], "trainval", CLASSES, report=report)
    assert rec.labels.tolist() == [2] and report.counts["degenerate_box"] == 1
    with pytest.raises(AnnotationError, match=r"a\.xml object 0 \(cat\): degenerate box"):
        read_voc_split([root], "trainval", CLASSES, strict=True)


def test_boxes_outside_the_image_are_clipped(tmp_path):
    root = make_root(tmp_path, {"a": xml([obj(box=(-5, 0, 150, 200))])})
    report = ReadReport()
    (rec,) = read_voc_split([root], "trainval", CLASSES, report=report, warn=False)
    np.testing.assert_array_equal(rec.boxes, [[0, 0, 100, 90]])
    assert report.counts["clipped_box"] == 1


def test_non_integer_coordinates_parse_as_float(tmp_path):
    root = make_root(tmp_path, {"a": xml([obj(box=("273.5", " 21.25 ", "300", "80"))])}, image_size=(500, 375))
    text = (root / "Annotations" / "a.xml").read_text().replace("<width>100", "<width>500").replace("<height>90", "<height>375")
    (root / "Annotations" / "a.xml").write_text(text)
    (rec,) = read_voc_split([root], "trainval", CLASSES)
    np.testing.assert_allclose(rec.boxes, [[272.5, 20.25, 299, 79]])


@pytest.mark.parametrize("bad", ["abc", "nan", "inf", ""])
def test_malformed_coordinates_dropped_or_strict_error(tmp_path, bad):
    root = make_root(tmp_path, {"a": xml([obj(box=(11, bad, 60, 80)), obj("dog")])})
    report = ReadReport()
    (rec,) = read_voc_split([root], "trainval", CLASSES, report=report, warn=False)
    assert rec.labels.tolist() == [2] and report.counts["malformed_box"] == 1
    with pytest.raises(AnnotationError, match=r"object 0 \(cat\): malformed box: <ymin>"):
        read_voc_split([root], "trainval", CLASSES, strict=True)


def test_missing_bndbox_or_name(tmp_path):
    root = make_root(tmp_path, {"a": xml(["<object><name>cat</name></object>", "<object><bndbox/></object>", obj()])})
    report = ReadReport()
    (rec,) = read_voc_split([root], "trainval", CLASSES, report=report, warn=False)
    assert rec.num_objects == 1
    assert report.counts["malformed_box"] == 1 and report.counts["missing_name"] == 1


def test_all_difficult_and_empty_images_are_kept(tmp_path):
    root = make_root(tmp_path, {"a": xml([obj(difficult="1")]), "b": xml([])})
    a, b = read_voc_split([root], "trainval", CLASSES)
    assert a.difficult.tolist() == [True]
    assert b.num_objects == 0 and b.boxes.shape == (0, 4) and b.labels.shape == (0,)


def test_preflight_lists_every_missing_file_at_once(tmp_path):
    root = make_root(tmp_path, {"a": xml([obj()]), "b": xml([obj()]), "c": xml([obj()])})
    (root / "JPEGImages" / "a.jpg").unlink()
    (root / "Annotations" / "c.xml").unlink()
    with open(root / "ImageSets" / "Main" / "trainval.txt", "a") as f:
        f.write("\nghost\n")
    with pytest.raises(DatasetError) as err:
        read_voc_split([root], "trainval", CLASSES)
    message = str(err.value)
    assert "4 file(s)" in message
    for name in ("a.jpg", "c.xml", "ghost.jpg", "ghost.xml"):
        assert name in message


def test_missing_split_file_and_bad_ids(tmp_path):
    root = make_root(tmp_path, {"a": xml([obj()])})
    with pytest.raises(DatasetError, match="test.txt"):
        read_voc_split([root], "test", CLASSES)
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("a\na\n")
    with pytest.raises(AnnotationError, match="listed twice"):
        read_voc_split([root], "trainval", CLASSES)
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("../../etc/passwd\n")
    with pytest.raises(AnnotationError, match="plain file stem"):
        read_voc_split([root], "trainval", CLASSES)


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
<!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
<!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
<!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
<!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
<!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">]>
<annotation><object><name>&lol9;</name></object></annotation>"""

XXE = """<?xml version="1.0"?>
<!DOCTYPE a [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<annotation><filename>&xxe;</filename></annotation>"""

XXE_HTTP = """<?xml version="1.0"?>
<!DOCTYPE a [<!ENTITY % remote SYSTEM "http://127.0.0.1:9/evil.dtd"> %remote;]>
<annotation/>"""


@pytest.mark.parametrize("text", [BILLION_LAUGHS, XXE, XXE_HTTP], ids=["billion-laughs", "xxe-file", "xxe-http"])
def test_unsafe_xml_refused_quickly(tmp_path, text):
    root = make_root(tmp_path, {"a": text})
    start = time.perf_counter()
    with pytest.raises(AnnotationError, match=r"a\.xml: refused unsafe XML"):
        read_voc_split([root], "trainval", CLASSES)
    assert time.perf_counter() - start < 2.0


@pytest.mark.parametrize("text", ["<annotation><object>", "not xml at all", "<other/>", ""])
def test_malformed_xml_names_the_file(tmp_path, text):
    root = make_root(tmp_path, {"a": text})
    with pytest.raises(AnnotationError, match=r"a\.xml"):
        read_voc_split([root], "trainval", CLASSES)


def test_devkit_layout_reads_07_and_12_for_trainval_and_07_for_test(tmp_path):
    devkit = tmp_path / "VOCdevkit"
    make_root(devkit / "VOC2007", {"000001": xml([obj()])})
    make_root(devkit / "VOC2007", {"000002": xml([obj("dog")])}, split="test")
    make_root(devkit / "VOC2012", {"2008_000001": xml([obj()])})
    assert split_roots(tmp_path, "trainval") == [devkit / "VOC2007", devkit / "VOC2012"]
    assert split_roots(devkit, "test") == [devkit / "VOC2007"]
    assert split_roots([devkit], "test") == [devkit / "VOC2007"]  # a list of one is that path
    assert split_roots([devkit / "VOC2007", devkit / "VOC2012"], "test") == [devkit / "VOC2007", devkit / "VOC2012"]
    train = read_voc_split(tmp_path, "trainval", CLASSES)
    assert [r.image_id for r in train] == ["000001", "2008_000001"]
    assert [r.image_id for r in read_voc_split(devkit, "test", CLASSES)] == ["000002"]
    with pytest.raises(DatasetError, match="ssd-train data"):
        split_roots(tmp_path / "empty", "trainval")


def test_read_voc_split_is_the_one_reader_of_any_layout_and_keeps_the_first_max_images(tmp_path):
    devkit = tmp_path / "VOCdevkit"
    make_root(devkit / "VOC2007", {"000001": xml([obj()]), "000002": xml([obj("dog")])})
    make_root(devkit / "VOC2012", {"2008_000001": xml([obj()])})
    ids = ["000001", "000002", "2008_000001"]
    for data in (tmp_path, devkit, [devkit], str(devkit), [devkit / "VOC2007", devkit / "VOC2012"]):
        assert [r.image_id for r in read_voc_split(data, "trainval", CLASSES)] == ids
    assert [r.image_id for r in read_voc_split(devkit, "trainval", CLASSES, max_images=2)] == ids[:2]
    assert [r.image_id for r in read_voc_split(devkit, "trainval", CLASSES, max_images=9)] == ids
    # the whole split is still read: a bad annotation past the first max_images is reported
    make_root(devkit / "VOC2012", {"2008_000001": xml([obj("horse")])})
    with pytest.raises(AnnotationError, match="horse"):
        read_voc_split(devkit, "trainval", CLASSES, max_images=1)


def test_png_and_jpeg_extensions_found(tmp_path):
    root = make_root(tmp_path, {"a": xml([obj()])})
    (root / "JPEGImages" / "a.jpg").rename(root / "JPEGImages" / "a.png")
    (rec,) = read_voc_split([root], "trainval", CLASSES)
    assert rec.image_path.name == "a.png"


def test_parse_annotation_directly(tmp_path):
    path = tmp_path / "a.xml"
    path.write_text(xml([obj()]))
    width, height, boxes, labels, difficult = parse_annotation(path, CLASSES)
    assert (width, height) == (100, 90) and boxes.shape == (1, 4)


def test_class_names_must_start_with_background(tmp_path):
    root = make_root(tmp_path, {"a": xml([obj()])})
    with pytest.raises(AnnotationError, match="background"):
        read_voc_split([root], "trainval", ("cat", "dog"))


def test_person_parts_are_not_objects(tmp_path):
    part = "<part><name>head</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></part>"
    root = make_root(tmp_path, {"a": xml([obj("cat", extra=part)])})
    (rec,) = read_voc_split([root], "trainval", CLASSES)
    assert rec.labels.tolist() == [1]
    np.testing.assert_array_equal(rec.boxes, [[10, 20, 59, 79]])


@pytest.mark.parametrize("size", ["<size><width>0</width><height>0</height></size>", "<size><width>abc</width></size>", "<size/>"])
def test_invalid_size_falls_back_to_the_image(tmp_path, size):
    text = f"<annotation>{size}{obj()}</annotation>"
    root = make_root(tmp_path, {"a": text}, image_size=(130, 95))
    (rec,) = read_voc_split([root], "trainval", CLASSES, warn=False)
    assert (rec.width, rec.height) == (130, 95)


def test_crlf_split_file_extra_columns_and_latin1_xml(tmp_path):
    text = '<?xml version="1.0" encoding="ISO-8859-1"?>\n' + xml([obj()]).replace("x.jpg", "caf\xe9.jpg")
    root = make_root(tmp_path, {"a": "", "b": xml([obj("dog")])})
    (root / "Annotations" / "a.xml").write_bytes(text.encode("latin-1"))
    (root / "ImageSets" / "Main" / "trainval.txt").write_bytes(b"a\r\n\r\nb  1\r\n")
    a, b = read_voc_split([root], "trainval", CLASSES)
    assert a.labels.tolist() == [1] and b.labels.tolist() == [2]


def test_fit_to_image_clips_to_the_decoded_size_and_drops_emptied_boxes(tmp_path):
    make_root(tmp_path, {"a": xml([obj(box=(10, 10, 50, 50)), obj("dog", box=(70, 20, 90, 40))])})
    record = read_voc_split(tmp_path, "trainval", CLASSES)[0]
    same = fit_to_image(record, (record.width, record.height))
    assert same[0] is record.boxes and same[1] is record.labels
    boxes, labels, difficult = fit_to_image(record, (60, 45))
    assert boxes.tolist() == [[9.0, 9.0, 49.0, 45.0]] and labels.tolist() == [record.labels[0]]
    assert difficult.shape == (1,)
