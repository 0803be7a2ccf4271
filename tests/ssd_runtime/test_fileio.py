import hashlib
import os

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


def test_atomic_write_gives_a_plain_file_mode(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    atomic_write_bytes(tmp_path / "a.bin", b"x")
    # the mode a plain open() gives under this umask, not mkstemp's 0600
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o666 & ~umask
