"""The image check before a long run: every bad file in one report, cached by (path, size, mtime)."""
from __future__ import annotations

import json
import os
import shutil
import warnings

import numpy as np
import pytest
from PIL import Image

from ssd_runtime.formats import IMAGE_CHECK_CACHE
from ssd_runtime.image_check import BadImagesError, check_images, check_records
from ssd_runtime.voc import read_voc_split
from tests.helpers.image_faults import corrupt_huffman_table, truncate


def _images(folder, n: int = 5) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"{i}.jpg"
        Image.fromarray(rng.integers(0, 256, (60 + i, 80, 3), dtype=np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


@pytest.fixture
def voc_copy(voc_root, tmp_path):
    """A private copy of the tiny generated dataset (tests break its files)."""
    return shutil.copytree(voc_root, tmp_path / "data")


def test_every_bad_file_is_listed_with_its_reason(tmp_path):
    paths = _images(tmp_path / "img")
    truncate(paths[1])
    paths[3].write_text("not an image")
    paths.append(tmp_path / "img" / "missing.jpg")
    report = check_images(paths)
    assert report.checked == 6 and report.cached == 0 and report.mode == "quick"
    assert [p for p, _ in report.bad] == [paths[1], paths[3], paths[5]]
    reasons = [r for _, r in report.bad]
    assert reasons[0].startswith("truncated or corrupt") and "not a JPEG or PNG" in reasons[1]
    assert "file not found" in reasons[2]
    assert not any(str(tmp_path) in r for r in reasons)  # the path is listed once, beside the reason
    assert report.seconds > 0 and json.dumps(report.to_dict())


def test_full_mode_decodes_and_finds_what_the_quick_check_cannot(tmp_path):
    paths = _images(tmp_path / "img", 3)
    corrupt_huffman_table(paths[2])
    assert check_images(paths).bad == []
    assert [p for p, _ in check_images(paths, mode="full").bad] == [paths[2]]
    with pytest.raises(ValueError, match="mode must be one of"):
        check_images(paths, mode="fast")


def test_threads_give_the_same_report(tmp_path):
    paths = _images(tmp_path / "img", 8)
    truncate(paths[5])
    assert check_images(paths, workers=2).bad == check_images(paths).bad


def test_a_rerun_is_served_from_the_cache_and_changed_files_are_checked_again(tmp_path):
    paths = _images(tmp_path / "img")
    truncate(paths[2])
    cache = tmp_path / "run" / "image-check.json"
    first = check_images(paths, cache_path=cache)
    assert first.cached == 0 and cache.is_file()
    assert [f for f in os.listdir(cache.parent)] == ["image-check.json"]  # no temporary file left
    again = check_images(paths, cache_path=cache)
    assert again.cached == 5 and again.bad == first.bad
    # the fix of a file changes its size and mtime: only it is checked again, and it is good now
    Image.fromarray(np.zeros((10, 10, 3), dtype=np.uint8)).save(paths[2])
    fixed = check_images(paths, cache_path=cache)
    assert fixed.cached == 4 and fixed.bad == []
    # a file broken in place (same size, new mtime) is caught
    data = bytearray(paths[0].read_bytes())
    paths[0].write_bytes(bytes(data[:-2]) + b"\x00\x00")
    os.utime(paths[0], ns=(paths[0].stat().st_atime_ns, paths[0].stat().st_mtime_ns + 10**9))
    rerun = check_images(paths, cache_path=cache)
    assert rerun.cached == 4 and [p for p, _ in rerun.bad] == [paths[0]]


def test_cache_of_another_mode_or_unreadable_is_ignored_and_read_only_use_writes_nothing(tmp_path):
    paths = _images(tmp_path / "img", 3)
    cache = tmp_path / "cache.json"
    check_images(paths, cache_path=cache)
    assert check_images(paths, cache_path=cache, mode="full", update_cache=False).cached == 0
    assert json.loads(cache.read_text())["mode"] == "quick"  # update_cache=False: not rewritten
    cache.write_text("{ truncated")
    report = check_images(paths, cache_path=cache)
    assert report.cached == 0 and report.bad == []
    assert check_images(paths, cache_path=cache).cached == 3


def test_cache_is_stamped_an_old_spelling_is_read_and_another_format_or_newer_version_is_ignored(tmp_path):
    paths = _images(tmp_path / "img", 3)
    cache = tmp_path / "cache.json"
    check_images(paths, cache_path=cache)
    data = json.loads(cache.read_text())
    assert data["format"] == IMAGE_CHECK_CACHE.name and data["schema_version"] == IMAGE_CHECK_CACHE.version
    old = {**{k: v for k, v in data.items() if k not in ("format", "schema_version")}, "version": 1}
    cache.write_text(json.dumps(old))  # as written before the stamp
    assert check_images(paths, cache_path=cache, update_cache=False).cached == 3
    for change in ({"schema_version": IMAGE_CHECK_CACHE.version + 1}, {"format": "ssd300-detections"}):
        cache.write_text(json.dumps({**data, **change}))
        assert check_images(paths, cache_path=cache, update_cache=False).cached == 0  # a cache: never an error


def test_sizes_that_differ_from_the_annotation_are_listed_apart(tmp_path):
    paths = _images(tmp_path / "img", 2)
    report = check_images(paths, expected_sizes=[(80, 60), (80, 99)])
    assert report.bad == [] and [p for p, _ in report.mismatched] == [paths[1]]
    assert "says 80x99, the image is 80x61" in report.mismatched[0][1]
    with pytest.raises(ValueError, match="expected_sizes"):
        check_images(paths, expected_sizes=[(80, 60)])


def test_check_records_raises_one_error_naming_every_bad_file(voc_copy):
    records = read_voc_split([voc_copy], "trainval", _names(voc_copy))
    truncate(records[0].image_path)
    records[3].image_path.write_bytes(b"GIF89a not really")
    with pytest.raises(BadImagesError) as caught:
        check_records(records)
    message = str(caught.value)
    assert message.startswith(f"2 of {len(records)} images of the dataset cannot be read (quick image check)")
    assert str(records[0].image_path) in message and str(records[3].image_path) in message
    assert "fix or remove them" in message and "--skip-bad-images" in message
    assert len(caught.value.report.bad) == 2


def test_check_records_skips_bad_images_with_a_counted_warning(voc_copy, tmp_path):
    records = read_voc_split([voc_copy], "trainval", _names(voc_copy))
    truncate(records[1].image_path)
    with pytest.warns(UserWarning, match=rf"skipping 1 of {len(records)} images .*--skip-bad-images.*{records[1].image_id}"):
        kept, report = check_records(records, skip_bad=True, cache_path=tmp_path / "c.json")
    assert [r.image_id for r in kept] == [r.image_id for r in records if r is not records[1]]
    assert report.checked == len(records)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clean, _ = check_records(kept)
    assert clean == kept
    for record in records:
        truncate(record.image_path)
    with pytest.raises(BadImagesError, match=f"{len(records)} of {len(records)} images"):
        check_records(records, skip_bad=True)


def _names(root) -> tuple[str, ...]:
    from ssd_runtime.classes import dataset_class_names

    return dataset_class_names([root])
