import hashlib

import pytest

from ssd_runtime.fileio import atomic_path, atomic_write_bytes, sha256_file


def test_atomic_write_and_hash(tmp_path):
    path = tmp_path / "sub" / "a.bin"
    atomic_write_bytes(path, b"hello")
    assert path.read_bytes() == b"hello"
    assert sha256_file(path) == hashlib.sha256(b"hello").hexdigest()


def test_error_keeps_old_file(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("writer failed")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]
