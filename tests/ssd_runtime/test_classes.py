"""Class lists: classes.txt, where a dataset's list comes from, and the warning that keeps a typo from becoming a class."""
from __future__ import annotations

import warnings

import pytest

from ssd_runtime.classes import (
    ANNOTATIONS_SOURCE,
    VOC_SOURCE,
    dataset_class_names,
    dataset_classes,
    read_class_file,
    write_class_file,
)
from ssd_runtime.errors import AnnotationError
from ssd_runtime.spec import VOC_CLASSES
from tests.helpers.voc_files import make_root, obj, xml


def test_voc_names_give_the_voc_list_silently(tmp_path):
    root = make_root(tmp_path, {"a": xml([obj("person"), obj("dog")]), "b": xml([obj("cat")])})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert dataset_classes(root) == (VOC_CLASSES, VOC_SOURCE)


def test_a_typo_in_a_voc_like_set_is_warned_with_the_file_and_the_likely_name(tmp_path):
    root = make_root(tmp_path, {"a": xml([obj("person"), obj("dog")]), "b": xml([obj("persn")]), "c": xml([obj("cat")])})
    with pytest.warns(UserWarning) as caught:
        names, source = dataset_classes([root])
    assert source == ANNOTATIONS_SOURCE and names == ("background", "cat", "dog", "persn", "person")
    (warning,) = caught
    message = str(warning.message)
    assert "classes inferred from the annotations" in message and "not Pascal VOC names: persn" in message
    assert "b.xml" in message and "did you mean 'person'" in message
    assert "if these are typos fix the XML, else write classes.txt" in message
    assert "dog" not in message.split("not Pascal VOC names:")[1]


def test_classes_txt_is_the_source_and_silences_the_warning(tmp_path):
    root = make_root(tmp_path, {"a": xml([obj("zebra"), obj("apple")])})
    with pytest.warns(UserWarning, match="not Pascal VOC names: apple .*, zebra"):
        assert dataset_classes(root)[0] == ("background", "apple", "zebra")
    write_class_file(root / "classes.txt", ("background", "zebra", "apple"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert dataset_classes(root) == (("background", "zebra", "apple"), str(root / "classes.txt"))


def test_dataset_class_names_is_unchanged_and_quiet(tmp_path):
    root = make_root(tmp_path, {"a": xml([obj("zebra"), obj("apple")])})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert dataset_class_names([root]) == ("background", "apple", "zebra")
        assert dataset_class_names(root) == dataset_classes(root, warn=False)[0]


def test_class_file_round_trip_and_discovery(tmp_path):
    root = make_root(tmp_path / "custom", {"a": xml([obj("zebra"), obj("apple")])})
    assert dataset_class_names([root]) == ("background", "apple", "zebra")
    write_class_file(root / "classes.txt", ("background", "zebra", "apple"))
    assert read_class_file(root / "classes.txt") == ("background", "zebra", "apple")
    assert dataset_class_names([root]) == ("background", "zebra", "apple")
    voc = make_root(tmp_path / "voc", {"a": xml([obj("cat"), obj("dog")])})
    assert dataset_class_names([voc]) == VOC_CLASSES


def test_class_file_errors(tmp_path):
    (tmp_path / "c.txt").write_text("\n\n")
    with pytest.raises(AnnotationError, match="empty"):
        read_class_file(tmp_path / "c.txt")
    (tmp_path / "c.txt").write_text("a\nb\na\n")
    with pytest.raises(AnnotationError, match="duplicate"):
        read_class_file(tmp_path / "c.txt")
