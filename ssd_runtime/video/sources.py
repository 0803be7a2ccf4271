"""Video sources: files, numbered image sequences, cameras, network streams and GStreamer pipelines.

:func:`open_source` tells the kind from the text a user gives (``SOURCE`` of ``ssd-runtime stream``):

===================================  =========  ================================================================
source                               kind       read by
===================================  =========  ================================================================
``clip.mp4`` (.mkv .avi .mov ...)    file       PyAV (FFmpeg), in order, every frame
``frames/%06d.png``                  sequence   PyAV's image2 demuxer (a printf pattern, numbered from 0 or 1)
``/dev/video0``, ``0``               camera     PyAV's v4l2 input (Linux); an index N is ``/dev/videoN``
``rtsp://``, ``rtmp://``, ``http(s)://``,  network  PyAV; RTSP over TCP; a read that waits longer than
``udp://``, ``tcp://``, ``srt://``                  ``read_timeout`` seconds ends the stream (or reconnects)
``nvarguscamerasrc ! ... ! appsink`` gstreamer  OpenCV built with GStreamer (Jetson's system OpenCV)
``csi://0``                          gstreamer  the same, CSI camera N through :data:`CSI_PIPELINE` (1280x720 at 30)
===================================  =========  ================================================================

A file or sequence is *not live*: the pipeline reads all of it, in order, dropping nothing. A camera,
network stream or pipeline is *live*: frames come at the sender's pace and the pipeline keeps only the
newest. ``realtime=True`` paces a file at its own frame rate, as a camera would deliver it (a live
source simulated from a file, used by the tests and the benchmark).

Every source yields :class:`Frame` records; a source that cannot be opened, a missing file or camera,
an unknown codec, data that does not decode and a file that ends well before the length its header
declares (cut short) raise :class:`~ssd_runtime.errors.SourceError` naming the source. A live source
that stalls or disconnects ends (``ended_by``), or reopens up to ``reconnect`` times. PyAV (``pip install 'ssd300-toolkit[video]'``) and OpenCV are imported on use.
"""
from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ssd_runtime.errors import SourceError

__all__ = ["CSI_PIPELINE", "INSTALL_HINT", "NETWORK_SCHEMES", "Frame", "Source", "open_source"]

INSTALL_HINT = "pip install 'ssd300-toolkit[video]'"
NETWORK_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt", "rtp")
#: A Jetson CSI camera (``csi://N``) as jetson-inference and NVIDIA's samples open it: the Argus camera
#: source, NVMM to BGR in the video converter, the newest frame only at the appsink.
CSI_PIPELINE = ("nvarguscamerasrc sensor-id={sensor} ! video/x-raw(memory:NVMM),width=1280,height=720,framerate=30/1 "
                "! nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! appsink drop=1 max-buffers=1")
_PATTERN = re.compile(r"%0?\d*d")


@dataclass
class Frame:
    """One decoded frame.

    index: its position in the source (0-based, decode order, counting every frame decoded); pts: its
    presentation time in seconds from the source's timestamps (None where the source has none);
    captured: the wall-clock time (``time.time()``) it was decoded; clock: the same instant on
    ``time.perf_counter()`` (latency is measured from it); rgb: uint8 (H, W, 3) RGB pixels; decode_s:
    the seconds its read and decode took (a live source's wait for data included, pacing excluded).
    """

    index: int
    pts: float | None
    captured: float
    clock: float
    rgb: np.ndarray = field(repr=False)
    decode_s: float | None = None


def _import_av() -> Any:
    try:
        import av
    except ImportError as exc:
        raise SourceError(f"reading video needs PyAV: {INSTALL_HINT}") from exc
    return av


def _kind_of(text: str) -> str:
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme in NETWORK_SCHEMES:
        return "network"
    if scheme == "csi" or " ! " in text:
        return "gstreamer"
    if text.isdigit() or text.startswith("/dev/video"):
        return "camera"
    if _PATTERN.search(text):
        return "sequence"
    return "file"


class Source:
    """A video source, opened by :func:`open_source`; iterate :meth:`frames`, then :meth:`close`.

    Attributes: text (what the user gave), kind, live, fps (the source's nominal frame rate, None where
    unknown), ended_by ("end", "stalled", "disconnected", "limit", "closed"), reconnects.
    """

    def __init__(self, text: str, kind: str, *, live: bool, realtime: bool = False, reconnect: int = 0,
                 reconnect_delay: float = 1.0, open_timeout: float = 10.0, read_timeout: float = 5.0,
                 fps: float | None = None) -> None:
        self.text, self.kind, self.live = text, kind, live
        self.realtime = realtime
        self.reconnect, self.reconnect_delay = reconnect, reconnect_delay
        self.open_timeout, self.read_timeout = open_timeout, read_timeout
        self.fps: float | None = fps
        self.ended_by: str | None = None
        self.reconnects = 0
        self._closed = False
        self._reader: Any = None
        self._open()

    # --- opening -----------------------------------------------------------------------------------

    def _open(self) -> None:
        if self.kind == "gstreamer":
            self._reader = _GStreamerReader(self.text)
        else:
            self._reader = _AvReader(self.text, self.kind, self.open_timeout, self.read_timeout, self.fps)
        self.fps = self.fps or self._reader.fps

    def close(self) -> None:
        """Release the decoder or device; :meth:`frames` ends at its next frame."""
        self._closed = True
        if self._reader is not None:
            self._reader.close()

    # --- reading -----------------------------------------------------------------------------------

    def frames(self) -> Iterator[Frame]:
        """Every frame, in order; for a live source, across reconnects (indices keep counting)."""
        index = 0
        start = time.perf_counter()
        while True:
            try:
                reader = self._reader.frames()
                while True:
                    started = time.perf_counter()
                    item = next(reader, None)
                    decode_s = time.perf_counter() - started
                    if item is None:
                        break
                    if self._closed:
                        self.ended_by = "closed"
                        return
                    rgb, pts = item
                    if self.realtime:  # a file delivered at its frame rate, as a camera would
                        due = start + (pts if pts is not None else index / (self.fps or 25.0))
                        time.sleep(max(0.0, due - time.perf_counter()))
                    yield Frame(index, pts, time.time(), time.perf_counter(), rgb, decode_s)
                    index += 1
                self.ended_by = "end"
            except SourceError as exc:
                if self._closed:
                    self.ended_by = "closed"
                    return
                if not self.live:
                    raise
                self.ended_by = "stalled" if "timed out" in str(exc) else "disconnected"
                self.error = str(exc)
            if self._closed or not self.live or self.reconnects >= self.reconnect:
                return
            self.reconnects += 1
            time.sleep(self.reconnect_delay)
            try:
                self._reader.close()
                self._open()
            except SourceError as exc:
                self.error = str(exc)
                self.ended_by = "disconnected"
                if self.reconnects >= self.reconnect:
                    return

    def __repr__(self) -> str:
        return f"Source({self.text!r}, kind={self.kind!r}, live={self.live}, fps={self.fps})"


def open_source(
    text: str | os.PathLike | int, *, live: bool | None = None, realtime: bool = False, reconnect: int = 0,
    reconnect_delay: float = 1.0, open_timeout: float = 10.0, read_timeout: float = 5.0, fps: float | None = None,
) -> Source:
    """Open a video source (see the module docstring for the kinds and how they are told apart).

    live: override the kind's policy (None: cameras, network streams and pipelines are live, files and
    sequences are not; ``realtime=True`` makes a file live). reconnect: how many times a live source
    that stalls or disconnects is reopened (after ``reconnect_delay`` seconds) before the stream ends.
    open_timeout / read_timeout: seconds a network source may take to open / between two packets.
    fps: the frame rate of an image sequence (default 25) or the one to assume where a source has none.
    """
    text = str(text)
    kind = _kind_of(text)
    if kind == "file" and not Path(text).is_file():
        raise SourceError(f"video file not found: {text}" + ("" if Path(text).parent.is_dir() else
                          f" (no folder {Path(text).parent})"))
    if live is None:
        live = kind in ("camera", "network", "gstreamer") or realtime
    return Source(text, kind, live=live, realtime=realtime, reconnect=reconnect, reconnect_delay=reconnect_delay,
                  open_timeout=open_timeout, read_timeout=read_timeout, fps=fps)


# --- readers: one per library -----------------------------------------------------------------------


class _AvReader:
    """Frames through PyAV: (rgb (H, W, 3) uint8, pts seconds or None) pairs."""

    def __init__(self, text: str, kind: str, open_timeout: float, read_timeout: float, fps: float | None) -> None:
        av = _import_av()
        self.text, self.kind = text, kind
        url, fmt, options = text, None, {}
        if kind == "camera":
            url = f"/dev/video{text}" if text.isdigit() else text
            if not os.path.exists(url):
                found = sorted(str(p) for p in Path("/dev").glob("video*"))
                raise SourceError(f"camera {text}: no such device {url} (cameras here: {', '.join(found) or 'none'})")
            fmt = "v4l2"
        elif kind == "sequence":
            fmt, options = "image2", {"framerate": str(fps or 25)}
        elif kind == "network" and text.lower().startswith("rtsp"):
            options = {"rtsp_transport": "tcp"}  # UDP loses packets behind NAT and on busy links
        try:
            self.container = av.open(url, format=fmt, options=options, timeout=(open_timeout, read_timeout))
        except (av.FFmpegError, OSError) as exc:
            raise SourceError(f"cannot open video source {text}: {_reason(exc)}") from exc
        if not self.container.streams.video:
            self.container.close()
            raise SourceError(f"video source {text} has no video stream")
        self.stream = self.container.streams.video[0]
        if self.stream.codec_context is None:  # PyAV gives no codec context where FFmpeg has no decoder
            self.container.close()
            raise SourceError(f"video source {text}: its video codec is unknown to this FFmpeg ({av.ffmpeg_version_info}), "
                              "which has no decoder for it; re-encode it, e.g. ffmpeg -i SOURCE -c:v libx264 out.mp4")
        self.stream.thread_type = "AUTO"  # FFmpeg's frame and slice threads
        rate = self.stream.average_rate or self.stream.guessed_rate
        self.fps = float(rate) if rate else None
        self._av = av

    def frames(self) -> Iterator[tuple[np.ndarray, float | None]]:
        av = self._av
        time_base = self.stream.time_base
        last_pts: float | None = None
        try:
            for frame in self.container.decode(self.stream):
                pts = float(frame.pts * time_base) if frame.pts is not None and time_base else None
                last_pts = last_pts if pts is None else pts
                yield frame.to_ndarray(format="rgb24"), pts
        except av.error.ExitError as exc:  # the read timeout's interrupt
            raise SourceError(f"video source {self.text}: no data for the read timeout; timed out ({_reason(exc)})") from exc
        except (av.FFmpegError, OSError) as exc:
            raise SourceError(f"video source {self.text}: cannot decode: {_reason(exc)}") from exc
        if self.kind == "file":
            self._check_complete(last_pts)

    def _check_complete(self, last_pts: float | None) -> None:
        """Raise if a file's frames stop well short of the length its header declares: a file cut short (an
        interrupted copy or recording). FFmpeg's Matroska demuxer ends such a file silently at the cut (an
        .mkv of 12 frames cut in half gave its first 6 frames and no error); an .mp4 cut short fails to
        open or to decode instead. The margin (2 frames, at least 2 % of the length) leaves the rounding
        of a complete file's declared length alone."""
        container, stream = self.container, self.stream
        if len(container.streams) == 1 and container.duration:  # the container's length is the video's
            declared = ((container.start_time or 0) + container.duration) / 1e6
        elif stream.duration and stream.time_base:
            declared = float(((stream.start_time or 0) + stream.duration) * stream.time_base)
        else:
            return
        if not self.fps:
            return
        end = (last_pts if last_pts is not None else float((stream.start_time or 0) * stream.time_base)) + 1 / self.fps
        if declared - end > max(2 / self.fps, 0.02 * declared):
            raise SourceError(f"video file {self.text} ends at {end:.2f} s of the {declared:.2f} s its header declares: "
                              "it was cut short (an interrupted copy or recording?); copy it again, or keep what is "
                              f"there with ffmpeg -i {self.text} -c copy fixed.mkv")

    def close(self) -> None:
        self.container.close()


class _GStreamerReader:
    """Frames through OpenCV's GStreamer backend (a pipeline string ending in ``appsink``)."""

    def __init__(self, text: str) -> None:
        try:
            import cv2
        except ImportError as exc:
            raise SourceError(f"GStreamer pipeline {text!r} needs OpenCV built with GStreamer (Jetson's system "
                              "python3-opencv; PyPI's opencv-python has no GStreamer)") from exc
        if not re.search(r"GStreamer:\s+YES", cv2.getBuildInformation()):
            raise SourceError(f"GStreamer pipeline {text!r}: this OpenCV ({cv2.__version__}) was built without "
                              "GStreamer; use the system OpenCV (JetPack's python3-opencv)")
        self.text = text
        if text.lower().startswith("csi://"):
            text = CSI_PIPELINE.format(sensor=int(text[6:] or 0))
        self.capture = cv2.VideoCapture(text, cv2.CAP_GSTREAMER)
        if not self.capture.isOpened():
            raise SourceError(f"GStreamer pipeline {text!r} did not open (gst-launch-1.0 with the same pipeline "
                              "and a fakesink shows why)")
        fps = self.capture.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and fps > 0 else None
        self._cv2 = cv2

    def frames(self) -> Iterator[tuple[np.ndarray, float | None]]:
        while True:
            ok, bgr = self.capture.read()
            if not ok:
                return
            pts_ms = self.capture.get(self._cv2.CAP_PROP_POS_MSEC)
            yield np.ascontiguousarray(bgr[:, :, ::-1]), (pts_ms / 1e3 if pts_ms and pts_ms > 0 else None)

    def close(self) -> None:
        self.capture.release()


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
