"""Video sources (ssd_runtime/video/sources.py) on real files and a real network stream: frames, their
timestamps and pacing; clear errors naming the source (missing, cut short, corrupt, unknown codec,
missing camera); a stalled or disconnected network stream ends or reconnects."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest

from ssd_runtime.errors import SourceError
from ssd_runtime.video import open_source
pytest.importorskip("av", reason="PyAV is not installed: pip install 'ssd300-toolkit[video]'")
from tests.helpers.videos import LoopbackSender, scene_frames, write_video


def test_lossless_file_gives_every_frame_exactly_with_its_pts(lossless_clip, clip_frames):
    source = open_source(lossless_clip)
    frames = list(source.frames())

    assert (source.kind, source.live, source.fps, source.ended_by) == ("file", False, 25.0, "end")
    assert [f.index for f in frames] == list(range(len(clip_frames)))
    assert [f.pts for f in frames] == pytest.approx([i / 25 for i in range(len(clip_frames))])
    for frame, rgb in zip(frames, clip_frames):
        assert frame.rgb.dtype == np.uint8
        np.testing.assert_array_equal(frame.rgb, rgb)


def test_realtime_paces_a_file_at_its_frame_rate(lossy_clip):
    source = open_source(lossy_clip, realtime=True)
    start = time.perf_counter()
    frames = list(source.frames())

    assert source.live
    for frame in frames:  # frame i is delivered no sooner than i / 25 s after the reading started
        assert frame.clock - start >= frame.pts
    assert frames[-1].clock - start < frames[-1].pts + 1.0  # and not much later (scheduling on a busy CPU)


@pytest.mark.parametrize("text,message", [
    ("missing.mp4", "video file not found: {path}"),
    ("no_folder/missing.mkv", "(no folder"),
])
def test_a_missing_file_is_a_source_error_naming_it(tmp_path, text, message):
    path = tmp_path / text
    with pytest.raises(SourceError, match="not found") as info:
        open_source(path)
    assert str(path) in str(info.value) and message.format(path=path) in str(info.value)


def _cut_in_half(path, out):
    data = path.read_bytes()
    out.write_bytes(data[: len(data) // 2])
    return out


def test_an_mp4_cut_in_half_fails_at_open(lossy_clip, tmp_path):
    cut = _cut_in_half(lossy_clip, tmp_path / "cut.mp4")  # the moov atom (the index) is at the end: gone
    with pytest.raises(SourceError, match="cannot open video source") as info:
        open_source(cut)
    assert str(cut) in str(info.value)


@pytest.mark.parametrize("codec", ["ffv1", "libx264"])
def test_an_mkv_cut_mid_stream_gives_its_frames_then_an_error(clip_frames, tmp_path, codec):
    clip = write_video(tmp_path / "whole.mkv", clip_frames, 25.0, codec)
    cut = _cut_in_half(clip, tmp_path / "cut.mkv")
    source = open_source(cut)
    frames = []
    started = time.perf_counter()
    # FFmpeg's Matroska demuxer ends at the cut without an error (5-6 of the 10 frames); the source
    # compares where the frames end with the length the header declares, so the run fails, naming the
    # file, rather than ending as if the file were complete
    with pytest.raises(SourceError, match="cut short") as info:
        for frame in source.frames():
            frames.append(frame)
    assert time.perf_counter() - started < 5  # no hang at the cut
    assert str(cut) in str(info.value) and "0.40 s its header declares" in str(info.value)
    assert 0 < len(frames) < len(clip_frames)
    for frame in frames:  # what is before the cut decodes as written
        assert np.abs(frame.rgb.astype(np.int16) - clip_frames[frame.index]).mean() < 8


def test_a_complete_file_is_not_taken_for_a_cut_one(clip_frames, tmp_path):
    for name, codec in (("a.mkv", "ffv1"), ("b.mkv", "libx264"), ("c.mp4", "libx264")):
        for count in (1, 2, len(clip_frames)):
            source = open_source(write_video(tmp_path / f"{count}{name}", clip_frames[:count], 25.0, codec))
            assert len(list(source.frames())) == count and source.ended_by == "end"


def test_random_bytes_are_a_source_error_naming_the_file(tmp_path):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 100_000, dtype=np.uint8).tobytes())
    with pytest.raises(SourceError, match="cannot open video source") as info:
        open_source(corrupt)
    assert str(corrupt) in str(info.value)


def test_an_unknown_codec_is_a_source_error_naming_the_file(lossless_clip, tmp_path):
    data = lossless_clip.read_bytes()
    assert data.count(b"V_FFV1") == 1  # Matroska's CodecID element
    unknown = tmp_path / "unknown.mkv"
    unknown.write_bytes(data.replace(b"V_FFV1", b"V_QQQQ"))  # same length: the file stays well formed
    with pytest.raises(SourceError, match="codec is unknown") as info:
        open_source(unknown)
    assert str(unknown) in str(info.value)


@pytest.mark.parametrize("camera", ["/dev/video7", "7", 7])
def test_a_missing_camera_is_a_source_error_naming_the_device(camera):
    if os.path.exists("/dev/video7"):
        pytest.skip("this machine has a /dev/video7")
    with pytest.raises(SourceError, match="no such device /dev/video7") as info:
        open_source(camera)
    assert str(info.value).startswith(f"camera {camera}:")


def test_a_stalled_network_stream_ends_after_the_read_timeout():
    frames = scene_frames(60, (160, 128))
    # 50 frames at once (FFmpeg's MPEG-TS probe has what it reads before its open returns), 10 more at
    # 25 fps, then nothing, the connection open
    with LoopbackSender(frames, fps=25, burst=50, stall=True) as sender:
        source = open_source(sender.url, read_timeout=0.5)
        got = list(source.frames())
        ended = time.perf_counter()
        last_sent = sender.last_sent

    assert (source.kind, source.live, source.ended_by) == ("network", True, "stalled")
    assert sender.url in source.error and "timed out" in source.error
    # the read timeout after the last packet (last_sent is taken just after it went out: up to a GIL
    # switch late), and not much more
    assert 0.5 - 0.05 <= ended - last_sent < 0.5 + 1.0
    # the decoder's threads hold the last few frames (measured: 3) when the data stops
    assert [f.index for f in got] == list(range(len(got))) and len(frames) - 5 <= len(got) <= len(frames)


def test_reconnect_reopens_a_disconnected_network_stream_up_to_the_limit():
    frames = scene_frames(8, (160, 128))
    with LoopbackSender(frames, fps=50, connections=3) as sender:  # serves 3 readers, 8 frames each
        source = open_source(sender.url, reconnect=2, reconnect_delay=0.05, read_timeout=2.0)
        got = list(source.frames())

    assert sender.errors == [] and sender.sent == [8, 8, 8]
    assert source.reconnects == 2 and source.ended_by == "end"
    assert [f.index for f in got] == list(range(24))  # indices keep counting across reconnects
    assert [round(f.pts, 2) for f in got] == [round(i / 50, 2) for i in range(8)] * 3


def test_a_network_stream_that_refuses_is_a_source_error_naming_it():
    with LoopbackSender(scene_frames(1, (160, 128))) as sender:
        url = sender.url
    with pytest.raises(SourceError, match="cannot open video source") as info:  # the server is closed
        open_source(url, open_timeout=2.0)
    assert url in str(info.value)
