"""The versioned-file helper: one key spelling on write, old spellings on read, one error when refused."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ssd_runtime.bootstrap import MatchesFileError, load_matches, save_matches
from ssd_runtime.detections_file import DetectionsHeader, read_header
from ssd_runtime.errors import FormatError
from ssd_runtime.formats import (
    DETECTIONS,
    ENGINE_SIDECAR,
    FORMAT_KEY,
    FORMATS,
    IMAGE_CHECK_CACHE,
    MATCHES,
    MODEL_SPEC,
    OLD_VERSION_KEYS,
    VERSION_KEY,
    FileFormat,
)
from ssd_runtime.metric import ClassMatches, Matches

FMT = FileFormat("ssd300-example", 2, (1, 2), "rebuild it")


def test_stamp_puts_one_spelling_first_and_check_reads_it_back():
    data = FMT.stamp({"a": 1, "format": "old", "schema_version": 0})
    assert list(data) == ["format", "schema_version", "a"] and data == {**FMT.header(), "a": 1}
    assert FMT.check(data, "x.json") == 2


@pytest.mark.parametrize("key", OLD_VERSION_KEYS)
def test_old_version_spellings_still_load(key):
    assert FMT.check({"format": FMT.name, key: 1}, "old.json") == 1


@pytest.mark.parametrize("data, found", [
    ({"format": "ssd300-other", VERSION_KEY: 2}, "found format 'ssd300-other' schema_version 2;"),
    ({"format": "ssd300-example", VERSION_KEY: 3}, "schema_version 3 (written by a newer toolkit);"),
    ({"format": "ssd300-example", "version": True}, "schema_version True;"),
    ({VERSION_KEY: 2}, "found format None"),  # a name is required unless old files had none
    ([1, 2], "found format 'a JSON list, not an object'"),
])  # fmt: skip
def test_other_formats_and_newer_versions_are_refused_with_one_error(data, found):
    with pytest.raises(FormatError, match="x.json: expected a 'ssd300-example' file of schema_version 1 or 2, ") as e:
        FMT.check(data, "x.json")
    assert found in str(e.value) and str(e.value).endswith("; rebuild it")


def test_every_format_is_one_record_keyed_by_its_name():
    assert all(name == f.name and f.version in f.readable for name, f in FORMATS.items())


def _header() -> DetectionsHeader:
    return DetectionsHeader("ab" * 32, ("background", "a"), {"min_score": 0.01}, "fp32", 2, 4, "cd" * 32)


def test_detections_header_is_stamped_and_an_old_version_spelling_still_loads(tmp_path):
    data = _header().to_dict()
    assert data["format"] == "ssd300-detections" and data[VERSION_KEY] == 1 and "version" not in data
    old = {**{k: v for k, v in data.items() if k != VERSION_KEY}, "version": 1}  # as written before
    (tmp_path / "old.jsonl").write_text(json.dumps(old) + "\n")
    assert read_header(tmp_path / "old.jsonl") == _header()


@pytest.mark.parametrize("change", [{"format": "ssd300-matches"}, {VERSION_KEY: DETECTIONS.version + 1}])
def test_detections_file_of_another_format_or_a_newer_version_is_refused(tmp_path, change):
    (tmp_path / "d.jsonl").write_text(json.dumps({**_header().to_dict(), **change}) + "\n")
    with pytest.raises(FormatError, match=r"d.jsonl: expected a 'ssd300-detections' file of schema_version 1"):
        read_header(tmp_path / "d.jsonl")


def _matches() -> Matches:
    one = ClassMatches(np.array([0, 1]), np.array([True, False]), np.array([0.9, 0.4]), 2)
    return Matches(("background", "a"), 2, "11point", 0.5, np.array([[1], [0]], dtype=np.int64), (one,))


def test_matches_file_header_is_the_stamp_and_its_check_is_the_records(tmp_path):
    save_matches(tmp_path / "m.npz", _matches())
    with np.load(tmp_path / "m.npz") as data:
        assert (str(data[FORMAT_KEY]), int(data[VERSION_KEY])) == (MATCHES.name, MATCHES.version)
        arrays = {k: data[k] for k in data.files}
    assert load_matches(tmp_path / "m.npz")[0].num_images == 2
    np.savez(tmp_path / "newer.npz", **{**arrays, VERSION_KEY: np.array(MATCHES.version + 1)})
    with pytest.raises(FormatError, match=r"newer.npz: expected a 'ssd300-matches' file of schema_version 1, found "
                       r"format 'ssd300-matches' schema_version 2 \(written by a newer toolkit\); rerun") as caught:
        load_matches(tmp_path / "newer.npz")
    assert isinstance(caught.value, MatchesFileError)


def test_formats_read_through_their_record_accept_the_stamp_and_refuse_other_names():
    """The engine sidecar, the model spec and the image-check cache had no name before the stamp."""
    for fmt in (ENGINE_SIDECAR, MODEL_SPEC, IMAGE_CHECK_CACHE):
        assert fmt.unnamed_before and fmt.check({VERSION_KEY: fmt.version}, "old") == fmt.version
        assert fmt.check(fmt.header(), "new") == fmt.version
    assert ENGINE_SIDECAR.check({"schema": 1}, "old.engine.json") == 1  # the sidecar's old spelling
    assert IMAGE_CHECK_CACHE.check({"version": 1}, "old-cache.json") == 1
    with pytest.raises(FormatError, match="found format 'ssd300-model-spec'"):
        ENGINE_SIDECAR.check(MODEL_SPEC.header(), "x.engine.json")
