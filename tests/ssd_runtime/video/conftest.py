"""Fixtures of the video tests: a clip of generated scenes, lossless and H.264, and the session's model
loaded once (the model itself is tests/conftest.py's ``runtime_onnx``)."""
from __future__ import annotations

import pytest

#: Frames of the clip: two batches of 4 and a partial one of 2; 0.4 s at 25 fps.
CLIP_FRAMES = 10
CLIP_FPS = 25.0


@pytest.fixture(scope="session")
def clip_frames():
    """The clip's frames: 10 generated scenes at 320 x 240, uint8 (H, W, 3) RGB."""
    from tests.helpers.videos import scene_frames  # PyAV: the modules that need these skip without it

    return scene_frames(CLIP_FRAMES)


@pytest.fixture(scope="session")
def lossless_clip(clip_frames, tmp_path_factory: pytest.TempPathFactory):
    """The clip as FFV1 in .mkv (decodes to ``clip_frames`` exactly), 25 fps."""
    from tests.helpers.videos import write_video

    return write_video(tmp_path_factory.mktemp("video") / "clip.mkv", clip_frames, CLIP_FPS, "ffv1")


@pytest.fixture(scope="session")
def lossy_clip(clip_frames, tmp_path_factory: pytest.TempPathFactory):
    """The clip as H.264 in .mp4, 25 fps."""
    from tests.helpers.videos import write_video

    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4", clip_frames, CLIP_FPS, "libx264")


@pytest.fixture(scope="session")
def detector(runtime_onnx):
    """The session's fp32 ONNX model through ONNX Runtime, NumPy postprocess."""
    from ssd_runtime import Detector

    return Detector.load(runtime_onnx)
