"""Broken image files for tests: real bytes on disk, made from good files the way they break in practice."""
from __future__ import annotations

from pathlib import Path

_DHT = b"\xff\xc4"  # JPEG "define Huffman table" marker


def truncate(path: Path, fraction: float = 0.5) -> None:
    """Keep the first ``fraction`` of the file (a copy or download cut short)."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def corrupt_huffman_table(path: Path) -> None:
    """Overwrite a JPEG's first Huffman table: the header still parses and the file still ends with
    its end-of-image marker (the quick check passes), but decoding the pixels fails."""
    data = bytearray(path.read_bytes())
    start = data.find(_DHT)
    if start < 0:
        raise ValueError(f"{path}: no Huffman table to corrupt (not a baseline JPEG?)")
    data[start + 5 : start + 25] = b"\xff" * 20  # the 16 code-length counts and the first symbols
    path.write_bytes(bytes(data))
