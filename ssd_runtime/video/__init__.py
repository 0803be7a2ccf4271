"""Video streams: sources (files, image sequences, cameras, network streams, GStreamer pipelines), the
stage pipeline and its sinks (an annotated video, JSON Lines, a callback), on top of the
:class:`~ssd_runtime.detector.Detector`. PyAV is imported when a source or a video file is opened.

Start from :meth:`Detector.stream <ssd_runtime.detector.Detector.stream>` or ``ssd-runtime stream``.
"""
from ssd_runtime.video.pipeline import FrameResult, Stream
from ssd_runtime.video.sinks import CallbackSink, JsonLinesSink, VideoFileSink
from ssd_runtime.video.sources import Frame, Source, open_source
from ssd_runtime.video.stats import StreamStats

__all__ = ["CallbackSink", "Frame", "FrameResult", "JsonLinesSink", "Source", "Stream", "StreamStats",
           "VideoFileSink", "open_source"]
