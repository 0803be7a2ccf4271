"""The INT8 room's error, in a module of its own so every module of the room imports it downwards."""
from __future__ import annotations

__all__ = ["Int8Error"]


class Int8Error(ValueError):
    """The model cannot be quantized (wrong variant, already quantized, bad settings) or its Q/DQ graph
    breaks TensorRT's rules; nothing was written."""
