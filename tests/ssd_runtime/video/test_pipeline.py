"""The stream pipeline (ssd_runtime/video/pipeline.py) on real video: a lossless clip's detections equal
Detector.detect on the same frames for every backend, postprocess and batch size; stride and limits;
a live source faster than inference (latency bounded, drops counted); a network stream from a real
encoder read end to end, and one that stalls; memory flat over a long live run."""
from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest

from ssd_runtime import Detector
from ssd_runtime.video import open_source
pytest.importorskip("av", reason="PyAV is not installed: pip install 'ssd300-toolkit[video]'")
from tests.helpers.videos import LoopbackSender, scene_frames, write_video


def _assert_same(got, want) -> None:
    assert (got.width, got.height) == (want.width, want.height)
    assert got.class_names == want.class_names
    np.testing.assert_array_equal(got.labels, want.labels)
    np.testing.assert_array_equal(got.boxes, want.boxes)
    np.testing.assert_array_equal(got.scores, want.scores)


@pytest.fixture(scope="module")
def models(runtime_onnx, runtime_checkpoint, engine_sources):
    """Model files by name: the fp32 ONNX (ONNX Runtime), the checkpoint (PyTorch), the end2end ONNX."""
    return {"onnx": runtime_onnx, "checkpoint": runtime_checkpoint, "end2end": engine_sources["end2end"]}


@pytest.fixture
def one_torch_thread():
    """torch at one thread for the test. At its default (one per core) each thread that runs torch (the
    stream's infer thread, then this one) gets an OpenMP pool spinning against the others on 2 cores:
    Detector.detect of the checkpoint measured 0.94 s a frame after a stream had run, 38 ms at one thread."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("batch_size", [1, 4])
@pytest.mark.parametrize("model,postprocess", [("onnx", "numpy"), ("onnx", "torch"), ("checkpoint", "numpy"),
                                               ("checkpoint", "torch"), ("end2end", "numpy")])
def test_every_frame_of_a_lossless_video_equals_detect(models, lossless_clip, clip_frames, one_torch_thread, model, postprocess,
                                                      batch_size):
    detector = Detector.load(models[model], postprocess=postprocess)
    results = list(detector.stream(lossless_clip, batch_size=batch_size))

    assert [r.index for r in results] == list(range(len(clip_frames)))
    assert [r.pts for r in results] == pytest.approx([i / 25 for i in range(len(clip_frames))])
    # the same batches as the pipeline forms (4, 4, 2): a batch of 4 differs from 4 batches of 1 in the
    # last bits of ONNX Runtime's scores (measured: not bit-equal), so each is compared with its own grouping
    expected = []
    for start in range(0, len(clip_frames), batch_size):
        expected += detector.detect(clip_frames[start:start + batch_size])
    for result, want, rgb in zip(results, expected, clip_frames):
        np.testing.assert_array_equal(result.rgb, rgb)  # FFV1 in bgr0 decodes to the pixels written
        _assert_same(result.detections, want)
    assert sum(len(r.detections.scores) for r in results) > 0  # the model finds something to compare


@pytest.mark.parametrize("options,indices,counts", [
    ({"every": 3}, [0, 3, 6, 9], {"frames_in": 10, "skipped": 6, "processed": 4, "ended_by": "end"}),
    ({"max_frames": 4}, [0, 1, 2, 3], {"frames_in": 4, "skipped": 0, "processed": 4, "ended_by": "limit"}),
    ({"every": 3, "max_frames": 2}, [0, 3], {"frames_in": 4, "skipped": 2, "processed": 2, "ended_by": "limit"}),
    # a file's duration is its own time: frames with pts < 0.2 s (5 frames at 25 fps)
    ({"duration": 0.2}, [0, 1, 2, 3, 4], {"frames_in": 5, "skipped": 0, "processed": 5, "ended_by": "limit"}),
    ({"duration": 0.2, "every": 2}, [0, 2, 4], {"frames_in": 5, "skipped": 2, "processed": 3, "ended_by": "limit"}),
])
def test_stride_and_limits(detector, lossy_clip, options, indices, counts):
    stream = detector.stream(lossy_clip, batch_size=2, **options)
    assert [r.index for r in stream] == indices
    report = stream.report()
    assert {key: report[key] for key in counts} == counts
    assert report["dropped"] == 0  # a file drops nothing
    assert report["frames_in"] == report["processed"] + report["skipped"]


def test_live_source_faster_than_inference_keeps_latency_bounded_and_counts_drops(detector, tmp_path):
    fps, count = 250.0, 500  # a frame every 4 ms, 2 s of video; one frame takes ~50 ms here (2-core EPYC)
    clip = write_video(tmp_path / "fast.mp4", scene_frames(10, (64, 48)) * (count // 10), fps, "libx264")
    stream = detector.stream(open_source(clip, realtime=True))
    indices = [r.index for r in stream]
    report = stream.report()

    assert report["live"] and report["policy"] == "newest frame wins"
    assert report["frames_in"] == count == report["processed"] + report["dropped"] + report["skipped"]
    per_frame_ms = report["stages"]["infer"]["p50_ms"] + report["stages"]["postprocess"]["p50_ms"]
    assert per_frame_ms > 1e3 / fps, "the premise: inference slower than the source"
    assert report["dropped"] > 0
    assert indices == sorted(indices) and len(indices) == report["processed"]
    assert report["seconds"] < 2 * count / fps  # paced at the source's rate, not at inference's
    # every frame in order would finish its last frame ~count * 50 ms = 25 s after it was decoded; newest
    # frame wins keeps each result a few stage-times old (p99 0.24-0.37 s measured, 2 cores at load 6)
    assert report["latency"]["p99_ms"] < 0.5 * 1e3 * count / fps


def test_network_stream_from_a_loopback_encoder_end_to_end(detector):
    frames = scene_frames(30, (160, 128))
    with LoopbackSender(frames, fps=25) as sender:
        stream = detector.stream(sender.url, read_timeout=5.0)
        results = list(stream)
    report = stream.report()

    assert sender.errors == [] and sender.sent == [30]
    assert (report["kind"], report["live"], report["ended_by"]) == ("network", True, "end")
    assert report["frames_in"] == 30 == report["processed"] + report["dropped"]
    assert report["source_fps"] == 25
    indices = [r.index for r in results]
    assert indices == sorted(set(indices)) and indices
    for result in results:  # each result is the frame sent with its index (H.264: close, not equal)
        errors = [np.abs(result.rgb.astype(np.int16) - frame).mean() for frame in frames]
        assert int(np.argmin(errors)) == result.index and errors[result.index] < 20  # measured: <= 8.2, others >= 65
        assert result.pts == pytest.approx(result.index / 25, abs=1e-3)
        _assert_same(result.detections, detector.detect(result.rgb))


def test_a_stalled_network_stream_ends_the_run_after_the_read_timeout(detector):
    frames = scene_frames(40, (160, 128))
    with LoopbackSender(frames, fps=25, burst=40, stall=True) as sender:  # all at once, then nothing, open
        stream = detector.stream(sender.url, read_timeout=0.5)
        results = list(stream)
        ended = time.perf_counter()
        last_sent = sender.last_sent
    report = stream.report()

    assert (report["ended_by"], report["reconnects"]) == ("stalled", 0)
    assert sender.url in report["error"] and "timed out" in report["error"]
    assert ended - last_sent < 0.5 + 1.0  # the read timeout, then the stages stop at once
    assert report["processed"] == len(results) > 0
    assert report["frames_in"] == report["processed"] + report["dropped"] <= 40


def test_memory_stays_flat_over_a_long_live_run(runtime_onnx, tmp_path):
    count = 2000
    clip = write_video(tmp_path / "long.mp4", scene_frames(10, (64, 48)) * (count // 10), 250.0, "libx264")
    detector = Detector.load(runtime_onnx, intra_op_threads=1)  # a core left for decoding: 2000 frames in ~4 s
    samples: list[tuple[int, int]] = []  # (frames in, bytes traced) at each result
    tracemalloc.start()
    try:
        stream = detector.stream(open_source(clip, live=True),  # newest frame wins, not paced: decoded flat out
                                 callback=lambda result: samples.append((stream.stats.frames_in, tracemalloc.get_traced_memory()[0])))
        report = stream.run()
    finally:
        tracemalloc.stop()

    assert report["frames_in"] == count == report["processed"] + report["dropped"]
    # frames in flight (a 1 MB float32 input batch, decoded frames) swing the traced bytes between samples
    # (measured 1.4-10.9 MB); what is kept is the floor (measured: 4.6 MB early, 1.4 MB late). Keeping a
    # frame's 9 KB of pixels per frame would raise it by 7 MB or more (750+ frames between the windows)
    early = min(traced for frames_in, traced in samples if 250 <= frames_in < 750)
    late = min(traced for frames_in, traced in samples if frames_in >= count - 500)
    assert late - early < 1_000_000, (early, late)
