"""``ssd-train fit`` on data with broken images and odd class names: errors a user can act on.

Real files and the real CLI: a generated dataset whose JPEGs are broken on disk, a DataLoader with a
worker process, the class list read from classes.txt, the Pascal VOC names or the annotations.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from ssd_runtime.image_check import BadImagesError
from ssd_runtime.spec import VOC_CLASSES
from ssd_runtime.voc import read_split_ids
from ssd_train.synthetic import generate_voc_dataset
from ssd_train.training_set import load_training_set
from tests.helpers.image_faults import corrupt_huffman_table, truncate


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes") / "data"
    generate_voc_dataset(root, images=12, test=4, seed=1)
    return root


@pytest.fixture
def data(shapes, tmp_path):
    """A private copy of the generated dataset (8 trainval images) that a test may break."""
    return shutil.copytree(shapes, tmp_path / "data")


def _image(root, index: int):
    return root / "JPEGImages" / f"{read_split_ids(root, 'trainval')[index]}.jpg"


def _fit_cli(data, out, *extra: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """``ssd-train fit`` in a fresh process: one tiny iteration over all 8 trainval images at once."""
    argv = [sys.executable, "-m", "ssd_train.cli", "fit", "--data", str(data), "--out", str(out),
            "--width", "0.0625", "--batch-size", "8", "--iterations", "1", "--no-progress", "--json", *extra]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def test_an_image_that_fails_in_a_dataloader_worker_is_one_line_naming_the_file(data, tmp_path):
    # a broken Huffman table passes the quick check (header and end marker are intact): the decode in
    # the DataLoader worker is what fails, and torch re-raises it in the main process
    bad = _image(data, 3)
    corrupt_huffman_table(bad)
    result = _fit_cli(data, tmp_path / "run", "--workers", "1")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "Caught" not in result.stderr
    (error,) = [line for line in result.stderr.splitlines() if "error:" in line]
    assert error.startswith(f"ssd-train fit: error: {bad}: truncated or corrupt image data")
    # nothing of the worker's traceback follows the message (a worker's own warnings may print around it)
    assert not any(line.startswith("  File ") for line in result.stderr.splitlines())
    assert not (tmp_path / "run" / "last.pt").exists()


# ----------------------------------------------------------------------------------------------
# load_training_set: the class list and its source, the image check before training


def _rename_classes(root, mapping: dict[str, str], typo: tuple[str, str] | None = None) -> None:
    """Give the generated objects other names (e.g. Pascal VOC ones); ``typo`` = (id, name) renames one file's."""
    (root / "classes.txt").unlink()
    for xml_path in (root / "Annotations").glob("*.xml"):
        text = xml_path.read_text()
        for old, new in mapping.items():
            text = text.replace(f"<name>{old}</name>", f"<name>{new}</name>")
        xml_path.write_text(text)
    if typo is not None:
        image_id, name = typo
        xml_path = root / "Annotations" / f"{image_id}.xml"
        head, sep, tail = xml_path.read_text().partition("<name>")
        xml_path.write_text(head + sep + name + tail[tail.index("</name>") :])


VOC_NAMES = dict(zip(["circle", "square", "triangle", "star", "cross", "ring", "crescent"],
                     ["person", "dog", "cat", "car", "bus", "bird", "boat"]))  # fmt: skip


def test_the_class_list_and_where_it_came_from_is_said_first(data):
    notes: list[str] = []
    train_set, report = load_training_set(data, note=notes.append)
    assert report.class_source == str(data / "classes.txt") and report.class_names == train_set.class_names
    assert notes[0] == f"training 7 classes from {data / 'classes.txt'}: " + ", ".join(train_set.class_names[1:])
    assert notes[1].startswith("checked 8 images (quick) in ")
    with pytest.warns(UserWarning, match="unknown_class"):  # the other shapes' objects are dropped, counted
        _, given = load_training_set(data, classes=["circle", "square"], skip_unknown_classes=True, note=notes.append)
    assert given.class_source == "given" and notes[-2] == "training 2 classes given by --classes: circle, square"
    _rename_classes(data, VOC_NAMES)
    voc, _ = load_training_set(data, note=notes.append, check_images="off")
    assert voc.class_names == VOC_CLASSES and notes[-1].startswith("training the 20 Pascal VOC classes")


def test_an_inferred_class_that_is_no_voc_name_is_warned_about(data):
    ids = read_split_ids(data, "trainval")
    _rename_classes(data, VOC_NAMES, typo=(ids[2], "persn"))
    notes: list[str] = []
    with pytest.warns(UserWarning, match=rf"not Pascal VOC names: persn \(1 object\(s\), e\.g\. {ids[2]}\.xml, "
                                         r"did you mean 'person'\?\) - if these are typos fix the XML"):
        train_set, report = load_training_set(data, note=notes.append, check_images="off")
    assert report.class_source == "annotations" and "persn" in train_set.class_names
    assert notes[0].startswith("training 8 classes inferred from the annotations: ")


def test_every_unreadable_image_is_reported_before_training_and_the_check_is_cached(data, tmp_path):
    truncate(_image(data, 1))
    _image(data, 5).write_text("not a picture")
    cache = tmp_path / "run" / "image-check.json"
    with pytest.raises(BadImagesError) as caught:
        load_training_set(data, cache_path=cache, note=None)
    message = str(caught.value)
    assert message.startswith("2 of 8 images of split 'trainval' cannot be read")
    assert str(_image(data, 1)) in message and str(_image(data, 5)) in message and "--skip-bad-images" in message
    with pytest.warns(UserWarning, match="skipping 2 of 8 images"):
        train_set, report = load_training_set(data, cache_path=cache, skip_bad_images=True, note=None)
    assert len(train_set) == 6 and report.image_check.cached == 8 and train_set.on_bad_image == "skip"
    assert len(report.to_dict()["image_check"]["bad"]) == 2


def test_fit_lists_every_bad_image_and_trains_on_the_rest_with_skip_bad_images(data, tmp_path):
    truncate(_image(data, 0))
    truncate(_image(data, 6))
    refused = _fit_cli(data, tmp_path / "run", "--workers", "0", "--batch-size", "4")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "error: 2 of 8 images of split 'trainval' cannot be read" in refused.stderr
    assert str(_image(data, 0)) in refused.stderr and str(_image(data, 6)) in refused.stderr
    assert not (tmp_path / "run" / "last.pt").exists()

    done = _fit_cli(data, tmp_path / "run", "--workers", "0", "--batch-size", "4", "--skip-bad-images")
    assert done.returncode == 0, done.stderr
    assert "skipping 2 of 8 images" in done.stderr and "checked 8 images (quick, 8 from the cache" in done.stderr
    assert done.stderr.splitlines()[0].startswith(f"training 7 classes from {data / 'classes.txt'}")
    summary = json.loads(done.stdout)
    assert summary["iteration"] == 1 and summary["classes"][0] == "circle"
    assert summary["image_check"]["checked"] == 8 and len(summary["image_check"]["bad"]) == 2
