"""Test videos made with PyAV from the generated scenes, read back, and a network stream on the loopback.

- :func:`scene_frames`: the generated dataset's scenes (:func:`ssd_runtime.scenes.render_image`) as video
  frames of one size, each scene a frame, so that frames differ and order shows in their detections.
- :func:`write_video`: ``"ffv1"`` (lossless: FFV1 in .mkv, pix_fmt bgr0, which decodes back to the exact
  RGB pixels) where detections are compared for equality, ``"libx264"`` (H.264, yuv420p) for the rest.
- :func:`read_video`: every frame of a video and its frame rate, as a player would read it.
- :class:`LoopbackSender`: an H.264 encoder sending MPEG-TS over TCP on 127.0.0.1, paced at a frame
  rate; it can stall (stop sending, connection open) and serve several connections in turn.
"""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from ssd_runtime.scenes import noise_tile, render_image

__all__ = ["CODECS", "VIDEO_SEED", "LoopbackSender", "read_video", "scene_frames", "write_video"]

#: Scenes of the test videos: a seed no training or verification uses.
VIDEO_SEED = 26
#: codec -> pixel format. FFV1 in bgr0 keeps RGB exactly (yuv formats would round the colours).
CODECS = {"ffv1": "bgr0", "libx264": "yuv420p"}


def scene_frames(count: int, size: tuple[int, int] = (320, 240), seed: int = VIDEO_SEED) -> list[np.ndarray]:
    """``count`` generated scenes (indices 0..count-1 of ``seed``), each resized (bilinear) to ``size``
    (width, height; even, as H.264 in yuv420p needs): uint8 (H, W, 3) RGB arrays."""
    noise = noise_tile(seed)
    return [np.asarray(render_image(seed, index, noise)[0].resize(size, Image.BILINEAR)) for index in range(count)]


def _add_video_stream(container: av.container.OutputContainer, codec: str, fps: float, width: int, height: int):
    stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
    stream.width, stream.height, stream.pix_fmt = width, height, CODECS[codec]
    if codec == "libx264":  # no encoder delay: a network reader gets each frame as it is sent
        stream.options = {"preset": "ultrafast", "tune": "zerolatency"}
    return stream


def write_video(path: str | Path, frames: Sequence[np.ndarray], fps: float = 25.0, codec: str = "ffv1") -> Path:
    """Encode uint8 (H, W, 3) RGB frames at ``fps`` (frame i at pts i / fps) into ``path`` (the container
    from its suffix: .mkv for FFV1; .mp4, .mkv for H.264). Returns the path."""
    height, width = frames[0].shape[:2]
    with av.open(str(path), mode="w") as container:
        stream = _add_video_stream(container, codec, fps, width, height)
        for index, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = index, 1 / stream.codec_context.framerate
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))  # the encoder's delayed frames
    return Path(path)


def read_video(path: str | Path) -> tuple[list[np.ndarray], float]:
    """Every frame of a video file (uint8 (H, W, 3) RGB) and its average frame rate."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)], float(stream.average_rate)


class LoopbackSender:
    """A live network source on the loopback: ``frames`` encoded (H.264, zerolatency) as MPEG-TS and sent
    over TCP to whoever connects to :attr:`url` (``tcp://127.0.0.1:PORT``), paced at ``fps``.

    burst: frames sent at once, unpaced, before the pacing starts (FFmpeg's MPEG-TS probe reads about
    1.6 s of a 25 fps stream before its open returns; a burst lets it return at once). connections:
    readers served one after another, each sent every frame, then its connection closed (a disconnect).
    stall: after the frames, send nothing more and keep the connection open until :meth:`close`.

    The server is this thread's socket, PyAV writing into it: an FFmpeg ``tcp://...?listen=1`` output
    opens its socket (``avio_open``) holding the GIL, so a reader in the same process could not run
    while it waits in ``accept`` (tried: both hung until killed).
    """

    def __init__(self, frames: Sequence[np.ndarray], fps: float = 25.0, *, burst: int = 0, connections: int = 1,
                 stall: bool = False) -> None:
        self.frames, self.fps, self.burst = frames, fps, burst
        self.connections, self.stall = connections, stall
        self.sent: list[int] = []  # frames sent per connection
        self.last_sent: float | None = None  # time.perf_counter() when the last frame went out
        self.errors: list[BaseException] = []
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.05)  # accept() is not woken by close(): look at the stop flag between waits
        self.url = f"tcp://127.0.0.1:{self._server.getsockname()[1]}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="loopback-sender", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            for _ in range(self.connections):
                connection = self._accept()
                if connection is None:
                    return
                with connection, connection.makefile("wb") as out:
                    self.sent.append(0)
                    self._send(out)
        except (OSError, av.FFmpegError) as exc:  # the reader went away, or close() shut the server
            if not self._stop.is_set():
                self.errors.append(exc)

    def _accept(self) -> socket.socket | None:
        while not self._stop.is_set():
            try:
                return self._server.accept()[0]
            except TimeoutError:
                continue
        return None

    def _send(self, out) -> None:
        height, width = self.frames[0].shape[:2]
        with av.open(out, mode="w", format="mpegts", options={"flush_packets": "1"}) as container:
            stream = _add_video_stream(container, "libx264", self.fps, width, height)
            start = time.perf_counter()
            for index, rgb in enumerate(self.frames):
                if self._stop.is_set():
                    return
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                frame.pts, frame.time_base = index, 1 / stream.codec_context.framerate
                container.mux(stream.encode(frame))
                self.sent[-1] += 1
                self.last_sent = time.perf_counter()
                if index >= self.burst:
                    time.sleep(max(0.0, start + (index - self.burst + 1) / self.fps - time.perf_counter()))
                else:
                    start = time.perf_counter()
            if self.stall:
                self._stop.wait()
                return
            container.mux(stream.encode(None))

    def close(self) -> None:
        """Stop sending, close the server and wait for the thread (a stalled connection is closed)."""
        self._stop.set()
        self._server.close()
        self._thread.join(timeout=10)

    def __enter__(self) -> LoopbackSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
