"""The same dataset in the Pascal VOC, COCO and YOLO layouts: identical records, identical VOC mAP through
``ssd-runtime eval``, what each layout cannot carry, COCO category ids kept, and the converter's refusals."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from ssd_runtime.classes import read_class_file
from ssd_runtime.coco import category_ids, coco_classes
from ssd_runtime.convert import convert_dataset
from ssd_runtime.datasets import dataset_classes, detect_format, read_split
from ssd_runtime.errors import DatasetError
from tests.helpers.dataset_files import coco_ann, coco_image, make_coco


def _facts(records, *, difficult: bool = True):
    """What a layout must give back identically: ids, sizes, boxes, labels (and difficult flags)."""
    return [(r.image_id, r.width, r.height, r.boxes.tobytes(), r.labels.tolist(), r.difficult.tolist() if difficult else None)
            for r in records]


@pytest.fixture(scope="module")
def layouts(voc_root, tmp_path_factory):
    """The session's generated VOC dataset converted to COCO and YOLO, and each of those back to VOC."""
    folder = tmp_path_factory.mktemp("layouts")
    paths = {"voc": voc_root}
    reports = {}
    for to in ("coco", "yolo"):
        reports[to] = convert_dataset(voc_root, folder / to, to, images="link")
        paths[to] = folder / to
        reports[f"{to}-voc"] = convert_dataset(folder / to, folder / f"{to}-voc", "voc", images="link")
        paths[f"{to}-voc"] = folder / f"{to}-voc"
    return paths, reports


def test_every_layout_gives_the_same_records(layouts):
    paths, reports = layouts
    names = read_class_file(paths["voc"] / "classes.txt")
    assert {name: detect_format(path) for name, path in paths.items()} == {
        "voc": "voc", "coco": "coco", "yolo": "yolo", "coco-voc": "voc", "yolo-voc": "voc"}
    for name, path in paths.items():
        assert dataset_classes(path, warn=False)[0] == names
    for split in ("trainval", "test"):
        voc = read_split(paths["voc"], split, names)
        assert sum(r.difficult.sum() for r in voc) > 0  # the generated set has difficult objects to lose
        assert _facts(read_split(paths["coco"], split, names)) == _facts(voc)
        assert _facts(read_split(paths["coco-voc"], split, names)) == _facts(voc)
        yolo = read_split(paths["yolo"], split, names)
        assert _facts(yolo, difficult=False) == _facts(voc, difficult=False)  # YOLO has no difficult flag
        assert not any(r.difficult.any() for r in yolo)
        assert _facts(read_split(paths["yolo-voc"], split, names)) == _facts(yolo)
    difficult = sum(int(r.difficult.sum()) for s in ("trainval", "test") for r in read_split(paths["voc"], s, names))
    assert reports["yolo"]["cannot_carry"]["difficult"]["count"] == difficult
    assert reports["coco"]["cannot_carry"]["difficult"]["count"] == difficult
    assert "difficult" not in reports["coco-voc"]["cannot_carry"]


def test_every_layout_gives_the_same_map_through_ssd_runtime_eval(layouts, runtime_onnx, capsys):
    from ssd_runtime.cli import main

    paths, _ = layouts
    reports = {}
    for name in ("voc", "coco", "yolo", "yolo-voc"):
        assert main(["eval", "--model", str(runtime_onnx), "--data", str(paths[name]), "--json"]) == 0
        reports[name] = json.loads(capsys.readouterr().out)["runtime"]
    assert reports["voc"]["images"] == 8 and reports["voc"]["map"] > 0
    assert reports["coco"]["map"] == reports["voc"]["map"] and reports["coco"]["classes"] == reports["voc"]["classes"]
    # YOLO loses the difficult flags: its mAP is that of the VOC set without them, exactly
    assert reports["yolo"]["map"] == reports["yolo-voc"]["map"] and reports["yolo"]["classes"] == reports["yolo-voc"]["classes"]


def test_non_contiguous_coco_ids_and_fractional_boxes_round_trip(tmp_path):
    categories = [(42, "dog"), (7, "cat"), (90, "bird")]
    src = make_coco(tmp_path / "src", [coco_image(3, "x/a.jpg"), coco_image(9, "b.jpg", size=(100, 90))],
                    [coco_ann(5, 3, 42, [10.25, 20.5, 30.125, 40.3], area=512.5), coco_ann(6, 3, 90, [1, 2, 3, 4], iscrowd=1),
                     coco_ann(8, 9, 7, [0.1, 0.2, 50.7, 60.9], difficult=1)], categories)
    names, ids, _ = coco_classes(src)
    assert names == ("background", "cat", "dog", "bird") and ids == (7, 42, 90)
    coco = convert_dataset(src, tmp_path / "coco", "coco")
    assert set(coco["cannot_carry"]) == {"difficult"}  # kept, under the extra key other tools ignore
    assert coco_classes(tmp_path / "coco")[1] == (7, 42, 90) and category_ids(tmp_path / "coco", names) == {1: 7, 2: 42, 3: 90}
    written = json.loads((tmp_path / "coco" / "annotations" / "instances_trainval.json").read_text())
    assert sorted((a["category_id"], a["iscrowd"], a.get("difficult", 0)) for a in written["annotations"]) == [
        (7, 0, 1), (42, 0, 0), (90, 1, 0)]
    # a segment's area is kept; where the file gives none, the box's
    assert sorted((a["category_id"], a["area"]) for a in written["annotations"]) == [
        (7, pytest.approx(50.7 * 60.9)), (42, 512.5), (90, 12)]
    original = read_split(src, "trainval", names)
    assert _facts(read_split(tmp_path / "coco", "trainval", names)) == _facts(original)
    assert [r.crowd.tolist() for r in read_split(tmp_path / "coco", "trainval", names)] == [[False, True], [False]]
    voc = convert_dataset(src, tmp_path / "voc", "voc")
    assert set(voc["cannot_carry"]) == {"area", "category_ids", "crowd", "flattened_ids"}
    assert voc["cannot_carry"]["area"]["count"] == 1  # the one annotation whose area is not its box's
    assert _facts(read_split(tmp_path / "voc", "trainval", names))[1] == _facts(original)[1]  # floats kept exactly
    yolo = convert_dataset(tmp_path / "coco", tmp_path / "yolo", "yolo")
    assert set(yolo["cannot_carry"]) == {"area", "category_ids", "crowd", "difficult", "image_size"}
    yolo_records = {r.image_id: r for r in read_split(tmp_path / "yolo", "trainval", names)}
    assert sorted(yolo_records) == ["b", "x/a"]  # sorted by path
    np.testing.assert_array_equal(yolo_records["x/a"].boxes, original[0].boxes[:1])  # the crowd region left out, the box exact
    np.testing.assert_array_equal(yolo_records["b"].boxes, original[1].boxes)


def test_conversion_refusals(tmp_path, voc_root):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(FileExistsError, match="not an empty folder"):
        convert_dataset(voc_root, tmp_path / "full", "coco")
    with pytest.raises(DatasetError, match="none of the splits"):
        convert_dataset(voc_root, tmp_path / "none", "coco", splits=("nosuch",))
    src = make_coco(tmp_path / "two", [coco_image(1, "a.jpg")], [], [(1, "cat")])
    make_coco(src, [coco_image(1, "a.jpg")], [], [(1, "cat")], split="test")
    (src / "images" / "test").mkdir()
    (src / "images" / "a.jpg").rename(src / "images" / "test" / "a.jpg")
    (src / "images" / "trainval").mkdir()
    make_coco(tmp_path / "tmp", [coco_image(1, "a.jpg")], [], [(1, "cat")], image_size=(50, 50))
    (tmp_path / "tmp" / "images" / "a.jpg").rename(src / "images" / "trainval" / "a.jpg")
    with pytest.raises(DatasetError, match="would both be VOC id 'a'"):
        convert_dataset(src, tmp_path / "clash", "voc")
    assert not (tmp_path / "clash").exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_an_explicit_data_format_reads_a_folder_that_holds_two_layouts(layouts, runtime_onnx, tmp_path, capsys):
    from ssd_runtime.cli import main

    paths, _ = layouts
    both = tmp_path / "both"
    shutil.copytree(paths["coco"], both)
    shutil.copytree(paths["yolo"] / "labels", both / "labels")
    shutil.copy(paths["yolo"] / "data.yaml", both / "data.yaml")
    names = read_class_file(paths["voc"] / "classes.txt")
    assert detect_format(both) == "coco"
    assert _facts(read_split(both, "test", names, format="yolo")) == _facts(read_split(paths["yolo"], "test", names))
    assert _facts(read_split(both, "test", names)) == _facts(read_split(paths["coco"], "test", names))
    reports = {}
    for name, data, layout in (("yolo", paths["yolo"], "auto"), ("both-as-yolo", both, "yolo")):
        assert main(["eval", "--model", str(runtime_onnx), "--data", str(data), "--data-format", layout, "--json"]) == 0
        reports[name] = json.loads(capsys.readouterr().out)
    assert reports["both-as-yolo"]["runtime"] == {**reports["yolo"]["runtime"], "seconds": reports["both-as-yolo"]["runtime"]["seconds"],
                                                  "images_per_s": reports["both-as-yolo"]["runtime"]["images_per_s"]}
    assert reports["both-as-yolo"]["metric"] == "voc"  # COCO's metrics are the default on data read as COCO only
    with pytest.raises(ValueError, match="dataset format must be one of"):
        read_split(both, "test", names, format="kitti")
