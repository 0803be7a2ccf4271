"""Where a stream's results go: an annotated video file, JSON Lines of detections, a callback.

Each sink has ``write(result)`` and ``close()``; the pipeline calls ``write`` from its sink stage, in
frame order, and ``close`` once when the run ends, however it ends (the source's end, a limit, an
error, Ctrl-C). Files are written beside their destination under a temporary name and moved into place
by ``close`` (:func:`ssd_runtime.fileio.atomic_path`): an interrupted run leaves a complete, playable
video of the frames processed so far, and a file the user already had is never half-overwritten.
``abort()`` (an error) removes the temporary file and leaves the destination untouched.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ssd_runtime.fileio import atomic_path
from ssd_runtime.video.sources import INSTALL_HINT

__all__ = ["CONTAINERS", "CallbackSink", "JsonLinesSink", "Sink", "VideoFileSink", "VideoWriter"]

#: Output container by suffix -> (FFmpeg muxer, video codec). H.264 plays everywhere; AVI takes MPEG-4 Part 2.
CONTAINERS = {".mp4": ("mp4", "libx264"), ".mkv": ("matroska", "libx264"), ".mov": ("mov", "libx264"),
              ".avi": ("avi", "mpeg4")}


class Sink(Protocol):
    def write(self, result: Any) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


class _AtomicFile:
    """A destination written under a temporary name, moved into place on ``commit`` (removed on ``abort``)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._context: AbstractContextManager[Path] = atomic_path(self.path)
        self.tmp = self._context.__enter__()

    def commit(self) -> None:
        self._context.__exit__(None, None, None)

    def abort(self) -> None:
        try:
            self._context.__exit__(RuntimeError, RuntimeError("aborted"), None)
        except RuntimeError:
            pass


class JsonLinesSink:
    """One JSON object per processed frame: frame (index), pts (seconds), captured (wall clock, Unix
    seconds), latency_ms, width, height, detections (box in pixels, label, class name, score)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self._file = _AtomicFile(path)
        self._out = open(self._file.tmp, "w", encoding="utf-8")
        self.path = self._file.path

    def write(self, result: Any) -> None:
        self._out.write(json.dumps(result.to_dict()) + "\n")

    def close(self) -> None:
        self._out.close()
        self._file.commit()

    def abort(self) -> None:
        self._out.close()
        self._file.abort()


class CallbackSink:
    """Calls ``fn(result)`` for each processed frame (in the sink stage's thread, in order)."""

    def __init__(self, fn: Callable[[Any], None]) -> None:
        self.fn = fn

    def write(self, result: Any) -> None:
        self.fn(result)

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


class VideoWriter:
    """uint8 (H, W, 3) RGB frames (or PIL images) -> a video file at ``fps``, frame i at i / fps, written
    atomically (:meth:`close` moves it into place, :meth:`abort` removes it).

    The container comes from the suffix (:data:`CONTAINERS`), and so does the codec unless ``codec`` is
    given (with its ``pix_fmt``: FFV1 in ``bgr0`` is lossless RGB). The size is the first frame's; in
    yuv420p an odd width or height loses its last column or row (H.264 needs even sizes). ``quality``:
    x264's crf (18 is near-transparent, 23 its default).
    """

    def __init__(self, path: str | os.PathLike, fps: float, *, codec: str | None = None, pix_fmt: str = "yuv420p",
                 quality: int = 23) -> None:
        try:
            import av
        except ImportError as exc:
            raise ValueError(f"writing a video needs PyAV: {INSTALL_HINT}") from exc
        path = Path(path)
        if path.suffix.lower() not in CONTAINERS:
            raise ValueError(f"video output {path}: the suffix picks the container, one of {', '.join(CONTAINERS)}")
        self.muxer, default_codec = CONTAINERS[path.suffix.lower()]
        self.codec, self.pix_fmt, self.quality = codec or default_codec, pix_fmt, quality
        self.fps = Fraction(fps).limit_denominator(1001) if fps and fps > 0 else Fraction(25)
        self._av = av
        self._file = _AtomicFile(path)
        self.path = self._file.path
        self._container: Any = None
        self._stream: Any = None
        self.frames = 0

    def _open(self, width: int, height: int) -> None:
        self._container = self._av.open(str(self._file.tmp), mode="w", format=self.muxer)
        stream = self._container.add_stream(self.codec, rate=self.fps)
        even = self.pix_fmt == "yuv420p"
        stream.width, stream.height = (width - width % 2, height - height % 2) if even else (width, height)
        stream.pix_fmt = self.pix_fmt
        if self.codec == "libx264":
            stream.options = {"crf": str(self.quality), "preset": "veryfast"}
        self._stream = stream

    def write(self, image: Any) -> None:
        """Append one frame: a uint8 (H, W, 3) RGB array or a PIL image."""
        if isinstance(image, np.ndarray):
            frame = self._av.VideoFrame.from_ndarray(image, format="rgb24")
        else:
            frame = self._av.VideoFrame.from_image(image.convert("RGB"))
        if self._container is None:
            self._open(frame.width, frame.height)
        frame.pts, frame.time_base = self.frames, 1 / self.fps
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        """Flush the encoder and move the file into place (no frame written: no file)."""
        if self._container is None:
            self._file.abort()
            return
        for packet in self._stream.encode(None):  # the encoder's delayed frames
            self._container.mux(packet)
        self._container.close()
        self._file.commit()

    def abort(self) -> None:
        if self._container is not None:
            self._container.close()
        self._file.abort()


class VideoFileSink:
    """The processed frames with their detections drawn (boxes, labels, scores) and the running frame
    rate in the corner, encoded at ``fps`` (the source's rate divided by the stride) by a
    :class:`VideoWriter` (container and codec from the suffix)."""

    def __init__(self, path: str | os.PathLike, fps: float, *, draw_rate: bool = True, quality: int = 23) -> None:
        self._writer = VideoWriter(path, fps, quality=quality)
        self.path, self.fps, self.draw_rate = self._writer.path, self._writer.fps, draw_rate

    @property
    def frames(self) -> int:
        return self._writer.frames

    def write(self, result: Any) -> None:
        from PIL import Image

        from ssd_runtime.draw import draw_detections, draw_label

        image = draw_detections(Image.fromarray(result.rgb), result.detections)
        if self.draw_rate and result.rate_fps is not None:
            draw_label(image, f"{result.rate_fps:.1f} fps", (4, 4))
        self._writer.write(image)

    def close(self) -> None:
        self._writer.close()

    def abort(self) -> None:
        self._writer.abort()
