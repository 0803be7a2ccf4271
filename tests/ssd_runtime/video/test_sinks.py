"""The sinks (ssd_runtime/video/sinks.py) behind a real stream: JSON Lines equal to the results, an
annotated video that plays back with every processed frame at the stride's rate, a callback in order;
Ctrl-C keeps complete files of what was processed, an error keeps what the user had."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ssd_runtime.video import JsonLinesSink, VideoFileSink
av = pytest.importorskip("av", reason="PyAV is not installed: pip install 'ssd300-toolkit[video]'")
from tests.helpers.videos import read_video


def test_json_lines_are_each_results_to_dict_in_order(detector, lossy_clip, tmp_path):
    out = tmp_path / "detections.jsonl"
    results = list(detector.stream(lossy_clip, every=2, sinks=[JsonLinesSink(out)]))

    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines == [json.loads(json.dumps(result.to_dict())) for result in results]
    assert [line["frame"] for line in lines] == [0, 2, 4, 6, 8]
    assert {"frame", "pts", "captured", "latency_ms", "width", "height", "detections"} <= set(lines[0])
    assert sum(len(line["detections"]) for line in lines) > 0


@pytest.mark.parametrize("suffix,codec", [(".mp4", "h264"), (".avi", "mpeg4")])
def test_annotated_video_plays_back_with_every_processed_frame_at_the_strides_rate(detector, lossless_clip, clip_frames,
                                                                                   tmp_path, suffix, codec):
    out = tmp_path / f"annotated{suffix}"
    sink = VideoFileSink(out, 25.0 / 3)
    results = list(detector.stream(lossless_clip, every=3, top_k=3, sinks=[sink]))  # 3 boxes: the frame shows

    frames, fps = read_video(out)
    assert len(frames) == len(results) == sink.frames == 4
    assert fps == pytest.approx(25.0 / 3, rel=1e-3)
    assert frames[0].shape == clip_frames[0].shape
    with av.open(str(out)) as container:
        assert container.streams.video[0].codec_context.name == codec
    for frame, result in zip(frames, results):  # the frame itself, with boxes and labels drawn over it
        assert len(result.detections.scores) == 3
        difference = np.abs(frame.astype(np.int16) - result.rgb).mean(axis=2)
        assert np.median(difference) < 6 and difference.max() > 100, (np.median(difference), difference.max())


def test_callback_sees_every_result_in_order_before_it_is_yielded(detector, lossy_clip):
    seen = []
    yielded = []
    for result in detector.stream(lossy_clip, batch_size=4, callback=seen.append):
        assert seen[-1] is result
        yielded.append(result)
    assert seen == yielded and [r.index for r in seen] == list(range(10))


def _outputs(video, jsonl):
    """The user's files already there, and the sinks that will replace them."""
    video.write_bytes(b"the user's old video")
    jsonl.write_text("the user's old detections\n")
    return [VideoFileSink(video, 25.0), JsonLinesSink(jsonl)]


def test_ctrl_c_leaves_complete_files_of_the_frames_processed(detector, lossless_clip, tmp_path):
    video, jsonl = tmp_path / "out.mp4", tmp_path / "out.jsonl"
    sinks = _outputs(video, jsonl)
    untouched = []

    def interrupt_after_four(result):
        untouched.append(video.read_bytes() == b"the user's old video" and jsonl.read_text().startswith("the user's"))
        if result.index == 3:
            raise KeyboardInterrupt  # as Ctrl-C in the consumer's thread

    stream = detector.stream(lossless_clip, sinks=sinks, callback=interrupt_after_four)
    with pytest.raises(KeyboardInterrupt):
        stream.run()

    report = stream.report()
    assert report["ended_by"] == "interrupted"
    assert untouched == [True] * 4  # the old files stay until the run ends
    frames, _ = read_video(video)
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(frames) == len(lines) == report["processed"] == 4
    assert [line["frame"] for line in lines] == [0, 1, 2, 3]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl", "out.mp4"]  # no temporary file left


def test_an_error_mid_run_leaves_what_the_user_had(detector, lossless_clip, tmp_path):
    video, jsonl = tmp_path / "out.mp4", tmp_path / "out.jsonl"
    sinks = _outputs(video, jsonl)

    def fail_at_the_third(result):
        if result.index == 2:
            raise ValueError("the consumer failed")

    with pytest.raises(ValueError, match="the consumer failed"):
        detector.stream(lossless_clip, sinks=sinks, callback=fail_at_the_third).run()

    assert video.read_bytes() == b"the user's old video"
    assert jsonl.read_text() == "the user's old detections\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl", "out.mp4"]
