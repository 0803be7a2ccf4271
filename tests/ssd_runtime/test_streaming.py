"""Streaming evaluation and detection: the detections file, resume, bounded batches, exact mAP."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from ssd_runtime.cli import main
from ssd_runtime.detections import Detections
from ssd_runtime.detections_file import (
    DetectionsFileError, DetectionsHeader, DetectionsWriter, ImageRecord, read_detections, read_parts,
)  # fmt: skip
from ssd_runtime.detector import Detector
from ssd_runtime.evaluate import _ground_truth, map_report_of_model_file, detections_report, evaluate_to_file
from ssd_runtime.metric import map_of_detections
from ssd_runtime.preprocess import PreparedBatch
from ssd_runtime.streaming import ImageItem, run_detections
from ssd_runtime.voc import read_voc_split


def _header(**changes) -> DetectionsHeader:
    fields = dict(model_sha256="ab" * 32, class_names=("background", "a", "b"),
                  settings={"min_score": 0.01, "max_overlap": 0.45, "top_k": 200}, precision="fp32", batch_size=2,
                  num_images=4, image_list_sha256="cd" * 32)
    return DetectionsHeader(**{**fields, **changes})


def _record(index: int, rng: np.random.Generator, count: int = 5) -> ImageRecord:
    # awkward float32 values: tiny, subnormal, many significant digits
    boxes = rng.random((count, 4), dtype=np.float32) * np.float32(1.3) - np.float32(0.1)
    scores = np.concatenate([rng.random(count - 2, dtype=np.float32), np.float32([1e-8, 1.4e-45])])
    labels = rng.integers(1, 3, count).astype(np.int64)
    return ImageRecord(index, f"img{index}", 500 + index, 375, Detections(boxes, labels, scores))


def _same(a: ImageRecord, b: ImageRecord) -> bool:
    da, db = a.detections, b.detections
    return ((a.index, a.image_id, a.width, a.height) == (b.index, b.image_id, b.width, b.height)
            and da.boxes.dtype == db.boxes.dtype == np.float32 and da.scores.dtype == np.float32
            and np.array_equal(da.boxes, db.boxes) and np.array_equal(da.labels, db.labels)
            and np.array_equal(da.scores, db.scores))


def test_file_round_trip_is_bit_exact(tmp_path):
    rng = np.random.default_rng(0)
    records = [_record(i, rng) for i in range(4)]
    records[2] = ImageRecord(2, "empty", 10, 20, Detections.empty())
    with DetectionsWriter(tmp_path / "d.jsonl", _header()) as writer:
        writer.write(records[:2])
        writer.write(records[2:])
    header, back = read_detections(tmp_path / "d.jsonl")
    assert header == _header(source=None) and all(map(_same, records, back))


def test_an_existing_file_needs_resume_and_the_same_run(tmp_path):
    path = tmp_path / "d.jsonl"
    DetectionsWriter(path, _header()).close()
    with pytest.raises(DetectionsFileError, match="pass --resume"):
        DetectionsWriter(path, _header())
    for change in ({"model_sha256": "ef" * 32}, {"settings": {"min_score": 0.2, "max_overlap": 0.45, "top_k": 200}},
                   {"batch_size": 4}, {"image_list_sha256": "00" * 32}, {"shard": (1, 2)}):
        with pytest.raises(DetectionsFileError, match="another run") as info:
            DetectionsWriter(path, _header(**change), resume=True)
        assert next(iter(change)) in str(info.value)
    DetectionsWriter(path, _header(source={"model": "moved.onnx"}), resume=True).close()  # source is not the run


def test_a_torn_last_line_is_dropped_and_a_bad_middle_line_is_an_error(tmp_path):
    rng = np.random.default_rng(1)
    records = [_record(i, rng) for i in range(3)]
    path = tmp_path / "d.jsonl"
    with DetectionsWriter(path, _header()) as writer:
        writer.write(records)
    whole = path.read_bytes()
    path.write_bytes(whole[:-25])  # the last line cut mid-way, as by a crash during the append
    assert [r.index for r in read_detections(path)[1]] == [0, 1]
    with DetectionsWriter(path, _header(), resume=True) as writer:
        assert writer.done == {0, 1} and writer.torn
        writer.write(records[2:])
    assert path.read_bytes() == whole
    lines = whole.split(b"\n")
    lines[1] = lines[1][:40]
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(DetectionsFileError, match=r"d.jsonl:2: malformed"):
        read_detections(path)


def test_parts_must_cover_the_list_once(tmp_path):
    rng = np.random.default_rng(2)
    records = [_record(i, rng) for i in range(4)]
    parts = []
    for shard, chunk in ((0, records[:2]), (1, records[2:])):
        parts.append(tmp_path / f"d.part{shard}of2.jsonl")
        with DetectionsWriter(parts[-1], _header(shard=(shard, 2))) as writer:
            writer.write(chunk)
    header, merged = read_parts(parts[::-1])
    assert header.shard == (1, 2) and all(map(_same, records, merged))
    with pytest.raises(DetectionsFileError, match=r"indices 2-3\): shard\(s\) 1 of 2"):
        read_parts(parts[:1])
    with pytest.raises(DetectionsFileError, match="pass each part once"):
        read_parts([parts[0], parts[0], parts[1]])
    other = tmp_path / "other.jsonl"
    DetectionsWriter(other, _header(model_sha256="ef" * 32)).close()
    with pytest.raises(DetectionsFileError, match="not parts of one run"):
        read_parts([parts[0], other])


class _CountingDetector:
    """A stand-in detector: records which images each batch held and how many batches were decoded ahead."""

    def __init__(self, real: Detector) -> None:
        self.real, self.spec = real, real.spec
        self.batches: list[list[str]] = []
        self.ahead = self.max_ahead = 0
        self.lock = threading.Lock()

    def prepare(self, paths) -> PreparedBatch:
        with self.lock:
            self.ahead += 1
            self.max_ahead = max(self.max_ahead, self.ahead)
        self.batches.append([p.stem for p in paths])
        return self.real.prepare(paths)

    def fractional_detections(self, pixels, settings):
        with self.lock:
            self.ahead -= 1
        return self.real.fractional_detections(pixels, settings)


def test_batches_follow_the_grid_and_at_most_one_is_decoded_ahead(runtime_onnx, voc_root):
    real = Detector.load(runtime_onnx)
    records = read_voc_split(voc_root, "test", real.spec.class_names)
    items = [ImageItem(i, r.image_id, r.image_path) for i, r in enumerate(records)]
    fake = _CountingDetector(real)
    got: list[ImageRecord] = []
    facts = run_detections(fake, items, real.spec.evaluation, got.extend, batch_size=3, done={0, 4, 6, 7})
    ids = [r.image_id for r in records]
    # batches [0,1,2] and [3,4,5] run whole (1,2 and 3,5 left to do); [6,7] is done and skipped
    assert fake.batches == [ids[0:3], ids[3:6]] and fake.max_ahead <= 2
    assert [r.index for r in got] == [1, 2, 3, 5] and facts["images"] == 4 and facts["skipped"] == 4


def _reference_map(detector: Detector, records, batch_size: int = 8):
    """The pre-streaming loop, kept as the reference: everything in memory, batch after batch."""
    detections, truths = [], []
    for first in range(0, len(records), batch_size):
        chunk = records[first : first + batch_size]
        batch = detector.prepare([r.image_path for r in chunk])
        detections.extend(detector.fractional_detections(batch.pixels, detector.spec.evaluation))
        truths.extend(_ground_truth(r, size) for r, size in zip(chunk, batch.sizes))
    return map_of_detections(detections, truths, detector.spec.class_names)


def test_streamed_file_and_in_memory_maps_are_identical_to_the_reference(runtime_onnx, voc_root, tmp_path):
    detector = Detector.load(runtime_onnx)
    records = read_voc_split(voc_root, "test", detector.spec.class_names)
    reference = _reference_map(detector, records, batch_size=3)
    in_memory = map_report_of_model_file(runtime_onnx, voc_root, batch_size=3)["runtime"]
    out = tmp_path / "dets.jsonl"
    streamed = evaluate_to_file(runtime_onnx, voc_root, out, batch_size=3)
    from_file = detections_report([out], voc_root)
    assert reference.map > 0  # not 0 == 0; no quality bar: this model's mAP moves with the CPU that trained it
    for report in (in_memory, streamed["runtime"], from_file["runtime"]):
        assert report["map"] == reference.map  # identical, not approximately equal
        assert [c["ap"] for c in report["classes"]] == [c.to_dict()["ap"] for c in reference.classes]
    assert streamed["run"]["images"] == 8 and from_file["detections"] == [str(out)]


def test_an_interrupted_eval_resumes_to_the_same_file(runtime_onnx, voc_root, tmp_path):
    whole = tmp_path / "whole.jsonl"
    evaluate_to_file(runtime_onnx, voc_root, whole, batch_size=3)
    cut = tmp_path / "cut.jsonl"
    lines = whole.read_bytes().split(b"\n")
    cut.write_bytes(b"\n".join(lines[:5]) + b"\n" + lines[5][:33])  # header, 4 images, a torn 5th
    with pytest.raises(DetectionsFileError, match="pass --resume"):
        evaluate_to_file(runtime_onnx, voc_root, cut, batch_size=3)
    with pytest.raises(DetectionsFileError, match="batch_size: 3 vs 4"):
        evaluate_to_file(runtime_onnx, voc_root, cut, batch_size=4, resume=True)
    resumed = evaluate_to_file(runtime_onnx, voc_root, cut, batch_size=3, resume=True)
    assert resumed["run"]["images"] == 4 and resumed["run"]["resumed_images"] == 4 and resumed["run"]["torn_line_dropped"]
    assert cut.read_bytes() == whole.read_bytes()  # the same detections, bit for bit, in the same order


def test_eval_cli_streams_resumes_and_reads_files(runtime_onnx, voc_root, tmp_path, capsys):
    out = tmp_path / "d.jsonl"
    args = ["eval", "--model", str(runtime_onnx), "--data", str(voc_root), "--json"]
    assert main([*args, "--detections-out", str(out)]) == 0
    first = json.loads(capsys.readouterr().out)
    assert main([*args, "--detections-out", str(out)]) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert main([*args, "--detections-out", str(out), "--resume"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["run"]["images"] == 0 and again["runtime"]["map"] == first["runtime"]["map"]
    assert main(["eval", "--data", str(voc_root), "--detections", str(out)]) == 0
    assert f"{first['runtime']['map']:9.4f}" in capsys.readouterr().out
    assert main(["eval", "--data", str(voc_root), "--split", "trainval", "--detections", str(out)]) == 2
    assert "another list" in capsys.readouterr().err
    first_three = tmp_path / "three.jsonl"
    assert main([*args, "--max-images", "3", "--detections-out", str(first_three)]) == 0
    three = json.loads(capsys.readouterr().out)["runtime"]
    assert main(["eval", "--data", str(voc_root), "--detections", str(first_three), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)["runtime"]
    assert again["images"] == 3 and again["map"] == three["map"]
    assert main(["eval", "--data", str(voc_root)]) == 2
    assert "pass --model" in capsys.readouterr().err
    assert main([*args, "--shard", "0/2"]) == 2
    assert "pass --detections-out FILE" in capsys.readouterr().err
    assert main([*args, "--detections-out", str(tmp_path / "x.jsonl"), "--checkpoint", "c.pt"]) == 2
    assert "--checkpoint compares two models in one process" in capsys.readouterr().err
    assert main([*args, "--resume"]) == 2
    assert "--resume continues a --detections-out file" in capsys.readouterr().err
    assert main(["eval", "--model", str(runtime_onnx.with_suffix(".pt")), "--data", str(voc_root), "--threads", "1"]) == 2
    assert "applies to ONNX models only" in capsys.readouterr().err


def test_detect_streams_to_one_file(runtime_onnx, voc_root, tmp_path, capsys):
    images = sorted((voc_root / "JPEGImages").glob("*.jpg"))[:5]
    out = tmp_path / "d.jsonl"
    args = ["detect", "--model", str(runtime_onnx), *map(str, images), "--batch-size", "2", "--json"]
    assert main([*args, "--detections-out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 5
    header, records = read_detections(out)
    detector = Detector.load(runtime_onnx)
    assert header.settings == detector.settings.to_dict() and [r.image_id for r in records] == list(map(str, images))
    # batch by batch: ONNX Runtime's scores for an image in a batch of 2 and alone differ in the last bits
    expected_all = [d for first in range(0, 5, 2) for d in detector.detect(images[first : first + 2])]
    for record, expected in zip(records, expected_all):
        assert (record.width, record.height) == (expected.width, expected.height)
        assert np.array_equal(record.detections.labels, expected.labels)
        assert np.array_equal(record.detections.scores, expected.scores)
        assert np.array_equal(record.detections.to_pixels(record.width, record.height), expected.boxes)
    assert main([*args, "--detections-out", str(out), "--out", str(tmp_path / "drawn")]) == 2
    assert "choose one" in capsys.readouterr().err


class _SyntheticDetector:
    """Pixels of 1 MB per image and no detections: the loop's own memory, whatever the model."""

    spec = None

    def prepare(self, paths) -> PreparedBatch:
        return PreparedBatch(np.full((len(paths), 3, 300, 300), 0.5, np.float32), [(300, 300)] * len(paths))

    def fractional_detections(self, pixels, settings):
        return [Detections.empty() for _ in range(len(pixels))]


def test_loop_memory_does_not_grow_with_the_number_of_images():
    import tracemalloc

    from ssd_runtime.spec import PostprocessSettings

    def peak(count: int) -> int:
        items = [ImageItem(i, str(i), f"{i}.jpg") for i in range(count)]
        tracemalloc.start()
        run_detections(_SyntheticDetector(), items, PostprocessSettings(0.01, 0.45, 200), lambda records: None,
                       batch_size=4)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak

    batch_bytes = 4 * 3 * 300 * 300 * 4
    small, large = peak(8), peak(80)
    assert large <= 3 * batch_bytes  # the batch running, the next one decoded, one being freed
    assert large < small * 1.1 + 100_000
