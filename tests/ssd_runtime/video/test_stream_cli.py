"""``ssd-runtime stream`` (ssd_runtime/cli.py) on a small video: the annotated video and JSON Lines it
writes, the report as JSON and as text, and exit code 2 with the error for a source it cannot open."""
from __future__ import annotations

import json

import pytest

from ssd_runtime.cli import main
pytest.importorskip("av", reason="PyAV is not installed: pip install 'ssd300-toolkit[video]'")
from tests.helpers.videos import read_video


def test_stream_writes_the_video_and_json_lines_and_reports_json(runtime_onnx, lossy_clip, tmp_path, capsys):
    video, jsonl = tmp_path / "out" / "annotated.mp4", tmp_path / "detections.jsonl"
    code = main(["stream", str(lossy_clip), "--model", str(runtime_onnx), "--video-out", str(video),
                 "--jsonl-out", str(jsonl), "--every", "2", "--batch-size", "2", "--json", "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err

    report = json.loads(captured.out)
    assert {k: report[k] for k in ("frames_in", "skipped", "dropped", "processed", "every", "batch_size", "ended_by")} == {
        "frames_in": 10, "skipped": 5, "dropped": 0, "processed": 5, "every": 2, "batch_size": 2, "ended_by": "end"}
    assert (report["video_out"], report["jsonl_out"], report["model"]) == (str(video), str(jsonl), str(runtime_onnx))
    assert report["stages"]["infer"]["count"] == 5 and report["throughput_fps"] > 0
    frames, fps = read_video(video)
    assert len(frames) == 5 and fps == pytest.approx(12.5)  # the source's 25 fps over the stride
    assert [json.loads(line)["frame"] for line in jsonl.read_text().splitlines()] == [0, 2, 4, 6, 8]
    assert captured.err == ""  # --quiet: no progress lines


def test_stream_prints_a_text_report(runtime_onnx, lossy_clip, capsys):
    assert main(["stream", str(lossy_clip), "--model", str(runtime_onnx), "--max-frames", "3", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"{lossy_clip} (file, every frame, in order): ended by limit" in out
    assert "frames: 3 in, 0 skipped (every 1), 0 dropped, 3 processed" in out
    assert "infer" in out and "latency" in out


def test_a_missing_source_exits_2_naming_it(runtime_onnx, tmp_path, capsys):
    missing = tmp_path / "missing.mp4"
    out = tmp_path / "out.mp4"
    assert main(["stream", str(missing), "--model", str(runtime_onnx), "--video-out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"ssd-runtime stream: error: video file not found: {missing}"
    assert list(tmp_path.iterdir()) == []  # no output started
