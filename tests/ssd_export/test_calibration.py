"""Calibration sets: deterministic class-balanced selection, hashed manifests, verification, runtime-identical batches."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ssd_export.int8.calibration import (
    CALIBRATION_IMAGES,
    MIN_IMAGES,
    CalibrationError,
    CalibrationSet,
    CalibrationWarning,
    build_manifest,
    select_images,
    write_manifest,
)
from ssd_export.cli import main
from ssd_runtime.classes import write_class_file
from ssd_runtime.errors import FormatError
from ssd_runtime.fileio import sha256_file
from ssd_runtime.preprocess import INPUT_KINDS, preprocess
from ssd_runtime.spec import ModelSpec
from tests.helpers.voc_files import make_root, obj, xml

CLASSES = ("background", "cat", "dog", "bird")
EMBEDDED = Path(__file__).resolve().parents[2] / "calibration" / "shapes_trainval_500.json"


def make_dataset(root: Path, classes_per_image: list[list[str]], split: str = "trainval") -> Path:
    """A VOC root with one distinct random-noise image per entry, holding one object of each class listed."""
    items = {f"{i:04d}": xml([obj(name) for name in names]) for i, names in enumerate(classes_per_image)}
    make_root(root, items, split)
    rng = np.random.default_rng(len(classes_per_image))
    for i, image_id in enumerate(items):
        pixels = rng.integers(0, 256, size=(60 + i % 7, 80 + i % 5, 3), dtype=np.uint8)
        Image.fromarray(pixels, "RGB").save(root / "JPEGImages" / f"{image_id}.jpg", quality=90)
    write_class_file(root / "classes.txt", CLASSES)
    return root


def rare_bird(root: Path) -> Path:
    """40 images: 30 cats, 9 dogs (3 with a cat), 1 bird, 3 without objects."""
    return make_dataset(root, [["cat"]] * 27 + [["cat", "dog"]] * 3 + [["dog"]] * 6 + [["bird"]] + [[]] * 3)


def quiet_build(*args, **kwargs) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        return build_manifest(*args, **kwargs)


# ----------------------------------------------------------------------------------------------
# Selection


def test_same_inputs_give_a_byte_identical_manifest(tmp_path):
    root = rare_bird(tmp_path / "data")
    first, second = quiet_build(root, images=12, seed=3), quiet_build(root, images=12, seed=3)
    assert first == second
    a, b = write_manifest(first, tmp_path / "a.json"), write_manifest(second, tmp_path / "b.json")
    assert a.read_bytes() == b.read_bytes()
    other = quiet_build(root, images=12, seed=4)
    assert [e["path"] for e in other["images"]] != [e["path"] for e in first["images"]]
    for image in (root / "JPEGImages").iterdir():  # file times are not part of it
        os.utime(image, (1, 1))
    assert write_manifest(quiet_build(root, images=12, seed=3), tmp_path / "c.json").read_bytes() == a.read_bytes()


def test_every_class_is_present_even_a_rare_one(tmp_path):
    root = rare_bird(tmp_path / "data")
    for seed in range(5):
        manifest = quiet_build(root, images=MIN_IMAGES, seed=seed)
        counts = manifest["selection"]["class_images"]
        assert set(counts) == {"cat", "dog", "bird"} and min(counts.values()) >= 1, counts
        assert counts["bird"] == 1 and counts["dog"] >= 3  # turns: bird, dog, cat, dog, cat, ...
        assert manifest["dataset"]["split_class_images"] == {"cat": 30, "dog": 9, "bird": 1}


def test_images_without_objects_only_fill_what_classes_leave(tmp_path):
    root = rare_bird(tmp_path / "data")
    some = quiet_build(root, images=20)
    assert all(entry["classes"] for entry in some["images"])
    everything = quiet_build(root, images=40)
    assert len(everything["images"]) == 40
    assert [e["classes"] for e in everything["images"][-3:]] == [[], [], []]


def test_select_images_depends_on_content_not_order():
    rng = np.random.default_rng(0)
    image_classes = {f"JPEGImages/{i:04d}.jpg": frozenset(int(c) for c in rng.choice(4, rng.integers(0, 3)) if c)
                     for i in range(60)}
    reversed_order = dict(reversed(list(image_classes.items())))
    for count in (1, 8, 30, 60, 100):
        chosen = select_images(image_classes, count, seed=1)
        assert chosen == select_images(reversed_order, count, seed=1)
        assert len(chosen) == min(count, 60) and len(set(chosen)) == len(chosen)


def test_paths_are_relative_to_the_root_as_given(tmp_path):
    devkit = tmp_path / "VOCdevkit"
    make_dataset(devkit / "VOC2007", [["cat"], ["dog"]] * 3)
    make_dataset(devkit / "VOC2012", [["bird"], ["cat"]] * 3)
    manifest = quiet_build(tmp_path, images=MIN_IMAGES)
    assert manifest["dataset"]["root"] == str(tmp_path.resolve())
    assert manifest["dataset"]["voc_roots"] == ["VOCdevkit/VOC2007", "VOCdevkit/VOC2012"]
    assert {e["path"].split("/JPEGImages/")[0] for e in manifest["images"]} == {"VOCdevkit/VOC2007", "VOCdevkit/VOC2012"}
    for entry in manifest["images"]:
        assert not Path(entry["path"]).is_absolute()
        assert sha256_file(tmp_path / entry["path"]) == entry["sha256"]
    assert manifest["class_names"] == list(CLASSES)
    assert manifest["dataset"]["generated"] is None and manifest["dataset"]["regenerate"] is None


# ----------------------------------------------------------------------------------------------
# Too few images


def test_fewer_images_than_asked_warns_with_the_count(tmp_path):
    root = rare_bird(tmp_path / "data")
    with pytest.warns(CalibrationWarning, match=r"of 40 image\(s\) \(500 asked for"):
        manifest = build_manifest(root)
    assert manifest["selection"]["selected"] == 40 and manifest["selection"]["requested"] == CALIBRATION_IMAGES
    with pytest.warns(CalibrationWarning, match=r"of 12 image\(s\) \(split 'trainval'.*at least 500"):
        build_manifest(root, images=12)


def test_empty_split_and_less_than_one_batch_are_errors(tmp_path):
    root = rare_bird(tmp_path / "data")
    (root / "ImageSets" / "Main" / "empty.txt").write_text("\n")
    with pytest.raises(CalibrationError, match="split 'empty' .* is empty"):
        build_manifest(root, split="empty")
    small = make_dataset(tmp_path / "small", [["cat"], ["dog"]] * 2)
    with pytest.raises(CalibrationError, match=r"has 4 image\(s\), fewer than one calibration batch \(8\)"):
        build_manifest(small)
    with pytest.raises(CalibrationError, match="at least 8"):
        build_manifest(root, images=MIN_IMAGES - 1)
    assert issubclass(CalibrationError, ValueError)


def test_a_spec_of_other_classes_is_refused(tmp_path):
    root = rare_bird(tmp_path / "data")
    with pytest.raises(CalibrationError, match="calibrate with data of the model's own classes"):
        build_manifest(root, images=MIN_IMAGES, spec=ModelSpec.create(("background", "cat", "dog")))


def test_preprocessing_recorded_default_spec_and_model(tmp_path, voc_root, runtime_onnx):
    root = rare_bird(tmp_path / "data")
    default = quiet_build(root, images=MIN_IMAGES)["preprocessing"]
    spec = ModelSpec.create(CLASSES)
    assert default["source"] == "default ModelSpec.create(class_names)"
    assert (default["input_size"], default["mean"], default["std"]) == (spec.input_size, list(spec.mean), list(spec.std))
    assert default["input_kinds"] == list(INPUT_KINDS) and "model" not in default
    assert default["name"] == spec.preprocessing == "rgb8-bilinear-q22-v1"

    from_model = quiet_build(voc_root, images=MIN_IMAGES, model=runtime_onnx)
    prep = from_model["preprocessing"]
    assert prep["source"] == "model" and prep["input_kinds"] == ["float32-nchw"]
    assert prep["model"] == {"path": str(Path(runtime_onnx).resolve()), "sha256": sha256_file(runtime_onnx)}
    assert from_model["dataset"]["regenerate"] == "ssd-train data --out DIR --images 24 --test 8 --seed 0"
    with pytest.raises(CalibrationError, match=str(Path(runtime_onnx).name)):
        build_manifest(root, images=MIN_IMAGES, model=runtime_onnx)


# ----------------------------------------------------------------------------------------------
# Using a set


@pytest.fixture
def written(tmp_path) -> tuple[Path, Path]:
    """(dataset root, manifest path) of a 12-image set of the rare-bird dataset."""
    root = rare_bird(tmp_path / "data")
    return root, write_manifest(quiet_build(root, images=12), tmp_path / "sets" / "birds.json")


def test_load_finds_the_images_and_hashes_the_manifest(written):
    root, path = written
    cal = CalibrationSet.load(path)
    assert cal.root == root.resolve() and cal.class_names == CLASSES and len(cal) == 12
    assert all(p.is_absolute() and p.is_file() for p in cal.image_paths)
    assert cal.sha256 == sha256_file(path)
    cal.verify()


def test_verify_names_every_missing_and_changed_file(written):
    root, path = written
    cal = CalibrationSet.load(path)
    changed, missing = cal.image_paths[0], cal.image_paths[5]
    Image.new("RGB", (10, 10), (1, 2, 3)).save(changed)
    missing.unlink()
    with pytest.raises(CalibrationError) as info:
        cal.verify()
    message = str(info.value)
    assert f"1 missing: {missing.relative_to(root).as_posix()}" in message
    assert f"1 changed (sha256 differs): {changed.relative_to(root).as_posix()}" in message
    with pytest.raises(CalibrationError):
        cal.batches(ModelSpec.create(CLASSES))  # verifies before the first batch


def test_data_root_and_relative_roots_after_moving_the_dataset(written, tmp_path):
    root, path = written
    moved = tmp_path / "elsewhere"
    shutil.move(root, moved)
    with pytest.raises(CalibrationError, match="pass data_root="):
        CalibrationSet.load(path).verify()
    CalibrationSet.load(path, data_root=moved).verify()
    manifest = json.loads(path.read_text())
    manifest["dataset"]["root"] = "../elsewhere"  # relative to the manifest's folder
    relative = write_manifest(manifest, path)
    cal = CalibrationSet.load(relative)
    assert cal.root == moved.resolve()
    cal.verify()


@pytest.mark.parametrize("input_kind", INPUT_KINDS)
def test_batches_are_the_runtime_preprocess_bit_for_bit(written, input_kind):
    _, path = written
    cal = CalibrationSet.load(path)
    spec = ModelSpec.create(CLASSES, input_size=300)
    batches = list(cal.batches(spec, batch_size=5, input_kind=input_kind))
    assert [len(b) for b in batches] == [5, 5, 2]
    for i, batch in enumerate(batches):
        expected = preprocess(cal.image_paths[5 * i : 5 * i + 5], spec, input_kind).pixels
        assert batch.dtype == expected.dtype and batch.shape == expected.shape
        assert batch.tobytes() == expected.tobytes()


def test_check_classes_names_the_manifest(written):
    _, path = written
    cal = CalibrationSet.load(path)
    cal.check_classes(ModelSpec.create(CLASSES))
    with pytest.raises(CalibrationError, match=f"calibration set {path} was built for classes"):
        cal.check_classes(ModelSpec.create(("background", "cat", "dog")))


def test_load_refuses_other_files_and_unsafe_paths(written, tmp_path):
    _, path = written
    (tmp_path / "other.json").write_text('{"format": "something"}')
    with pytest.raises(FormatError, match="expected a 'ssd300-calibration' file of schema_version 1, found format 'something'"):
        CalibrationSet.load(tmp_path / "other.json")
    manifest = json.loads(path.read_text())
    manifest["images"][0]["path"] = "../../etc/passwd"
    with pytest.raises(CalibrationError, match="without '..'"):
        CalibrationSet.load(write_manifest(manifest, tmp_path / "bad.json"))
    manifest["schema_version"] = 99
    with pytest.raises(FormatError, match=r"schema_version 99 \(written by a newer toolkit\); rebuild it"):
        CalibrationSet.load(write_manifest(manifest, tmp_path / "future.json"))


# ----------------------------------------------------------------------------------------------
# CLI


def test_cli_writes_the_manifest_and_prints_the_warning(tmp_path, capsys):
    root = rare_bird(tmp_path / "data")
    out = tmp_path / "sets" / "birds.json"
    assert main(["calibration", "--data", str(root), "--images", "12", "--seed", "2", "-o", str(out)]) == 0
    captured = capsys.readouterr()
    assert f"wrote {out}: 12 images" in captured.out and "bird" in captured.out
    assert "warning: calibration set of 12 image(s)" in captured.err
    assert out.read_bytes() == write_manifest(quiet_build(root, images=12, seed=2), tmp_path / "api.json").read_bytes()
    assert sorted(p.name for p in out.parent.iterdir()) == ["birds.json"]  # no temporary file left


def test_cli_writes_nothing_on_failure(tmp_path, capsys):
    small = make_dataset(tmp_path / "small", [["cat"], ["dog"]] * 2)
    out = tmp_path / "sets" / "small.json"
    assert main(["calibration", "--data", str(small), "-o", str(out)]) == 2
    assert "ssd-export calibration: error: split 'trainval'" in capsys.readouterr().err
    assert not out.exists()
    out.parent.mkdir(exist_ok=True)
    out.write_text("previous")
    assert main(["calibration", "--data", str(small), "-o", str(out)]) == 2
    assert out.read_text() == "previous"
    assert sorted(p.name for p in out.parent.iterdir()) == ["small.json"]


def test_calibration_imports_without_torch():
    code = "import sys, ssd_export.int8.calibration, ssd_export.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ----------------------------------------------------------------------------------------------
# The repository's set for the embedded generated dataset


def test_embedded_manifest_matches_the_regenerated_dataset(tmp_path):
    from ssd_train.synthetic import CLASS_NAMES, generate_voc_dataset

    cal = CalibrationSet.load(EMBEDDED, data_root=tmp_path)
    manifest = cal.manifest
    assert cal.class_names == CLASS_NAMES and len(cal) == CALIBRATION_IMAGES
    assert manifest["dataset"]["regenerate"] == "ssd-train data --out DIR --images 2500 --test 500 --seed 0"
    counts = manifest["selection"]["class_images"]
    assert set(counts) == set(CLASS_NAMES[1:]) and min(counts.values()) > 100
    # images are a pure function of (seed, index): the first 8 of the full set are these 8
    generate_voc_dataset(tmp_path, images=8, test=0, seed=manifest["dataset"]["generated"]["seed"])
    recorded = {entry["path"]: entry["sha256"] for entry in manifest["images"]}
    regenerated = sorted(p for p in recorded if (tmp_path / p).is_file())
    assert len(regenerated) >= 4, regenerated
    for rel in regenerated:
        assert sha256_file(tmp_path / rel) == recorded[rel], rel


@pytest.mark.parametrize("layout", ["coco", "yolo"])
def test_a_coco_or_yolo_dataset_calibrates_like_its_voc_twin(tmp_path, layout):
    from ssd_train.synthetic import generate_dataset

    generate_dataset(tmp_path / layout, format=layout, images=12, test=2, seed=0)
    manifest = quiet_build(tmp_path / layout, split="trainval", images=MIN_IMAGES)
    assert manifest["dataset"]["format"] == layout and manifest["dataset"]["voc_roots"] == []
    assert manifest["dataset"]["split_images"] == 10
    assert manifest["dataset"]["regenerate"] == f"ssd-train data --out DIR --images 12 --test 2 --seed 0 --format {layout}"
    assert all(entry["path"].startswith("images/trainval/") for entry in manifest["images"])
    calibration = CalibrationSet.load(write_manifest(manifest, tmp_path / "set.json"))
    calibration.verify()
    assert len(calibration) == MIN_IMAGES
