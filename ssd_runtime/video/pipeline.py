"""The stream pipeline: decode, preprocess, infer, postprocess and the sinks overlap in their own stages.

Stages and what joins them::

    source --decode--> [frames] --preprocess--> [batches] --infer--> [outputs] --postprocess--> [results] --sink-->
    thread             queue    thread          queue     thread     queue     thread           queue     caller

Each arrow is a bounded queue, so memory is bounded however long a stream runs. The first hop depends
on the source's policy (:attr:`Source.live <ssd_runtime.video.sources.Source>`):

- **every frame, in order** (files, image sequences): the decoder waits when the queue is full; frames
  are batched ``batch_size`` at a time; nothing is dropped.
- **newest frame wins** (cameras, network streams, a file paced with ``realtime``): the decoder never
  waits (a camera's own buffer would fill and age instead): it puts each frame in a one-frame slot,
  replacing a frame inference has not taken yet, which is counted as dropped. Batches are of one frame
  and every queue holds one item, so a result is at most a few stage-times old.

The sink stage is the caller's thread: iterating a :class:`Stream` yields :class:`FrameResult` records
in frame order after the sinks have had them. Nothing here knows the backend: the stages call the
:class:`~ssd_runtime.detector.Detector`'s ``prepare``, ``infer`` and ``outputs_to_detections``, so every
backend and both postprocesses run unchanged.
"""
from __future__ import annotations

import collections
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ssd_runtime.detections import ImageDetections
from ssd_runtime.end2end import check_settings
from ssd_runtime.spec import PostprocessSettings
from ssd_runtime.video.sinks import Sink
from ssd_runtime.video.sources import Frame, Source
from ssd_runtime.video.stats import StreamStats

__all__ = ["FrameResult", "Stream"]

_END = object()  # the end-of-stream marker every stage passes on
_POLL = 0.05  # seconds a blocked stage waits before looking at the stop flag again


@dataclass
class FrameResult:
    """One processed frame. index, pts, captured: the :class:`Frame`'s; latency_s: from its decode to
    its detections; detections: in the frame's pixels; rgb: the frame, uint8 (H, W, 3); rate_fps: the
    stream's processing rate over its last frames (None for the first)."""

    index: int
    pts: float | None
    captured: float
    latency_s: float
    detections: ImageDetections
    rgb: np.ndarray = field(repr=False)
    rate_fps: float | None = None

    def to_dict(self) -> dict:
        """JSON-able: frame, pts (s), captured (Unix s), latency_ms, width, height, detections."""
        return {"frame": self.index, "pts": None if self.pts is None else round(self.pts, 6),
                "captured": round(self.captured, 6), "latency_ms": round(1e3 * self.latency_s, 3),
                **self.detections.to_dict()}


class _LatestSlot:
    """A one-item mailbox where a new item replaces an unread one (``on_drop`` counts the replaced)."""

    def __init__(self, on_drop: Callable[[], None]) -> None:
        self._item: Any = None
        self._full = False
        self._cond = threading.Condition()
        self._on_drop = on_drop

    def put(self, item: Any) -> None:
        with self._cond:
            if self._full and self._item is not _END:
                self._on_drop()
            self._item, self._full = item, True
            self._cond.notify()

    def get(self, timeout: float) -> Any:
        with self._cond:
            if not self._cond.wait_for(lambda: self._full, timeout):
                raise queue.Empty
            item, self._item, self._full = self._item, None, False
            return item


class Stream:
    """Detections on every frame of a source (see the module docstring); make one with
    :meth:`Detector.stream <ssd_runtime.detector.Detector.stream>` (``detector``: that Detector, not
    imported here: the detector imports this room, never the reverse).

    Iterate it for :class:`FrameResult` records (the pipeline starts on the first ``next``); or call
    :meth:`run`. :meth:`report` gives the numbers at any time; :meth:`close` (also on leaving a ``with``
    block, on the end of the iteration, or on Ctrl-C in it) stops the stages, closes the source and
    finishes the sinks' files.
    """

    def __init__(
        self, detector: Any, source: Source, *, settings: PostprocessSettings, batch_size: int = 1, every: int = 1,
        max_frames: int | None = None, duration: float | None = None, sinks: Sequence[Sink] = (), queue_size: int = 2,
    ) -> None:
        if batch_size < 1 or every < 1 or queue_size < 1:
            raise ValueError(f"batch_size, every and queue_size must be >= 1, got {batch_size}, {every}, {queue_size}")
        if max_frames is not None and max_frames < 1 or duration is not None and duration <= 0:
            raise ValueError(f"max_frames must be >= 1 and duration > 0 seconds, got {max_frames}, {duration}")
        if detector.output_kind == "detections":
            check_settings(detector.backend.end2end.settings, settings)  # before the first frame, not at it
        self.detector, self.source, self.settings = detector, source, settings
        self.live = source.live
        self.batch_size = 1 if self.live else batch_size  # live: a batch would wait for frames, adding latency
        self.every, self.max_frames, self.duration = every, max_frames, duration
        self.sinks = list(sinks)
        self.stats = StreamStats()
        self.ended_by: str | None = None
        self._stop = threading.Event()
        self._errors: list[BaseException] = []
        size = 1 if self.live else queue_size
        first: Any = _LatestSlot(lambda: self.stats.count("dropped")) if self.live else queue.Queue(size * self.batch_size)
        self._queues = [first, queue.Queue(size), queue.Queue(size), queue.Queue(size * self.batch_size)]
        self._threads: list[threading.Thread] = []
        self._started = False
        self._closed = False

    # --- the caller's side: the sink stage ----------------------------------------------------------

    def __iter__(self) -> Iterator[FrameResult]:
        if self._started:
            raise RuntimeError("a Stream is iterated once: make another with Detector.stream")
        self._start()
        completed: collections.deque[float] = collections.deque(maxlen=30)  # the rate drawn: over the last 30 frames
        keep = False
        try:
            while True:
                result = self._get(self._queues[3])
                if result is _END:
                    break
                completed.append(time.perf_counter())
                if len(completed) > 1:
                    result.rate_fps = (len(completed) - 1) / max(completed[-1] - completed[0], 1e-9)
                self.stats.count("processed")  # before the sinks: Ctrl-C in a callback comes after the files have the frame
                started = time.perf_counter()
                for sink in self.sinks:
                    sink.write(result)
                self.stats.stages["sink"].add(time.perf_counter() - started)
                yield result
            keep = True
        except (KeyboardInterrupt, GeneratorExit) as exc:  # the user stopped it: keep what was written
            self.ended_by = "interrupted" if isinstance(exc, KeyboardInterrupt) else "stopped"
            keep = True
            raise
        finally:
            self.close(keep_outputs=keep)

    def run(self, progress: Callable[[dict], None] | None = None, every_s: float = 1.0) -> dict:
        """Process the whole stream (sinks only) and return :meth:`report`; ``progress(report)`` is called at
        most once per ``every_s`` seconds while it runs."""
        last = time.perf_counter()
        for _ in self:
            if progress is not None and time.perf_counter() - last >= every_s:
                last = time.perf_counter()
                progress(self.report())
        return self.report()

    def report(self) -> dict:
        """Frames in / skipped / dropped / processed, throughput, per-stage times and latency (ms), and the
        source, policy and settings they were measured with."""
        return {
            "source": self.source.text, "kind": self.source.kind, "live": self.live, "source_fps": self.source.fps,
            "policy": "newest frame wins" if self.live else "every frame, in order",
            "ended_by": self.ended_by or self.source.ended_by, "error": getattr(self.source, "error", None),
            "batch_size": self.batch_size, "every": self.every, "max_frames": self.max_frames, "duration": self.duration,
            "backend": type(self.detector.backend).__name__, "postprocess": self.detector.postprocess,
            "settings": {"min_score": self.settings.min_score, "max_overlap": self.settings.max_overlap,
                         "top_k": self.settings.top_k},
            **self.stats.report(), "reconnects": self.source.reconnects,
        }  # fmt: skip

    def close(self, keep_outputs: bool = True) -> None:
        """Stop every stage, close the source and finish (``keep_outputs``) or discard the sinks' files."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.source.read_timeout + 5)
        if not self._threads:
            self.source.close()
        self.stats.ended = time.perf_counter()
        for sink in self.sinks:
            if keep_outputs:
                sink.close()
            else:
                sink.abort()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close(keep_outputs=exc[0] is None or issubclass(exc[0], KeyboardInterrupt))

    # --- the stages -----------------------------------------------------------------------------------

    def _start(self) -> None:
        self._started = True
        for name, target in (("decode", self._decode), ("preprocess", self._preprocess), ("infer", self._infer),
                             ("postprocess", self._postprocess)):
            thread = threading.Thread(target=self._guarded, args=(target,), name=f"ssd-stream-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _guarded(self, stage: Callable[[], None]) -> None:
        try:
            stage()
        except BaseException as exc:  # handed to the caller's thread, which raises it
            self._errors.append(exc)
            self._stop.set()

    def _put(self, q: Any, item: Any) -> None:
        if isinstance(q, _LatestSlot):
            q.put(item)
            return
        while not self._stop.is_set():
            try:
                q.put(item, timeout=_POLL)
                return
            except queue.Full:
                continue

    def _get(self, q: Any) -> Any:
        while True:
            if self._errors:
                raise self._errors[0]
            if self._stop.is_set():
                return _END
            try:
                return q.get(timeout=_POLL)
            except queue.Empty:
                continue

    def _decode(self) -> None:
        taken = 0
        first_clock: float | None = None
        try:
            frames = self.source.frames()
            while not self._stop.is_set():
                frame = next(frames, None)
                if frame is None:
                    break
                self.stats.stages["decode"].add(frame.decode_s)
                first_clock = frame.clock if first_clock is None else first_clock
                if self._past_duration(frame, first_clock):  # not counted: frames_in = processed + dropped + skipped
                    self.ended_by = "limit"
                    break
                self.stats.count("frames_in")
                if frame.index % self.every:
                    self.stats.count("skipped")
                    continue
                self._put(self._queues[0], frame)
                taken += 1
                if self.max_frames is not None and taken >= self.max_frames:
                    self.ended_by = "limit"
                    break
        finally:
            self.source.close()
            self._put(self._queues[0], _END)

    def _past_duration(self, frame: Frame, first_clock: float) -> bool:
        """duration: seconds of the source's own time (pts) for a file; of wall-clock time for a live source."""
        if self.duration is None:
            return False
        if self.live or frame.pts is None:
            return frame.clock - first_clock >= self.duration
        return frame.pts >= self.duration

    def _preprocess(self) -> None:
        source, out = self._queues[0], self._queues[1]
        ended = False
        while not ended:
            frame = self._get(source)
            if frame is _END:
                break
            frames = [frame]
            while len(frames) < self.batch_size:  # files only: live batches are of one frame
                frame = self._get(source)
                if frame is _END:
                    ended = True
                    break
                frames.append(frame)
            started = time.perf_counter()
            batch = self.detector.prepare([f.rgb for f in frames])
            self._add_per_frame("preprocess", started, len(frames))
            self._put(out, (frames, batch))
        self._put(out, _END)

    def _infer(self) -> None:
        source, out = self._queues[1], self._queues[2]
        while (item := self._get(source)) is not _END:
            frames, batch = item
            started = time.perf_counter()
            outputs = self.detector.infer(batch.pixels)
            self._add_per_frame("infer", started, len(frames))
            self._put(out, (frames, batch, outputs))
        self._put(out, _END)

    def _postprocess(self) -> None:
        source, out = self._queues[2], self._queues[3]
        while (item := self._get(source)) is not _END:
            frames, batch, outputs = item
            started = time.perf_counter()
            detections = self.detector.outputs_to_detections(outputs, self.settings)
            results = []
            for frame, dets, (width, height) in zip(frames, detections, batch.sizes):
                now = time.perf_counter()
                self.stats.latency.add(now - frame.clock)
                results.append(FrameResult(frame.index, frame.pts, frame.captured, now - frame.clock,
                                           self.detector.to_image_detections(dets, width, height), frame.rgb))
            self._add_per_frame("postprocess", started, len(frames))
            for result in results:
                self._put(out, result)
        self._put(out, _END)

    def _add_per_frame(self, stage: str, started: float, frames: int) -> None:
        """A batch's time, as that many frames of its mean time (the stage's cost per frame)."""
        per_frame = (time.perf_counter() - started) / frames
        for _ in range(frames):
            self.stats.stages[stage].add(per_frame)
