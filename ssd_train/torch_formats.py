"""torch's two checkpoint layouts (zip archive, legacy stream) and their storages, read without ``torch.load``.

The lower layer of :mod:`ssd_train.safe_unpickle`: the readers here take the unpickler to use (a
factory ``unpickler(file, load_storage=None)``) and read each storage's raw bytes into a uint8 CPU
buffer themselves, refusing storages that claim more bytes than the file holds. Errors are raised as
:class:`Refused` / :class:`Corrupt`, which :func:`ssd_train.safe_unpickle.unpickle_checkpoint` turns
into typed errors naming the file.
"""
from __future__ import annotations

import io
import pickle
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

#: Header values of torch's legacy (non-zip) serialisation.
LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

#: Storage class names a pickle may reference (``torch.FloatStorage``, ...) and their dtypes.
STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool, "UntypedStorage": torch.uint8,
}  # fmt: skip

#: Makes the unpickler for one pickle of the file: ``unpickler(file, load_storage=None)``.
UnpicklerFactory = Callable[..., pickle.Unpickler]


class Refused(Exception):
    """The pickle names or does something not allowed; becomes an UnsafeCheckpointError naming the file."""


class Corrupt(Exception):
    """The file is malformed or truncated; becomes a CorruptCheckpointError naming the file."""


@dataclass(frozen=True)
class StorageType:
    """What a pickled ``torch.FloatStorage`` (etc.) global stands for: a name and a dtype, not callable."""

    name: str
    dtype: torch.dtype


class StorageRef:
    """A storage read from the file: ``nbytes`` bytes at ``byte_offset`` of a uint8 CPU buffer."""

    def __init__(self, buffer: torch.Tensor, dtype: torch.dtype, byte_offset: int = 0, nbytes: int | None = None):
        self.buffer = buffer
        self.dtype = dtype
        self.byte_offset = byte_offset
        self.nbytes = buffer.numel() - byte_offset if nbytes is None else nbytes
        self.filled = False

    @classmethod
    def allocate(cls, dtype: torch.dtype, nbytes: int) -> StorageRef:
        """An unfilled storage of ``nbytes`` bytes (filled later by :meth:`fill_from`)."""
        return cls(torch.empty(nbytes, dtype=torch.uint8), dtype)

    @property
    def element_size(self) -> int:
        return torch.empty(0, dtype=self.dtype).element_size()

    def fill_from(self, stream: io.RawIOBase | io.BufferedIOBase) -> None:
        """Read exactly ``nbytes`` from ``stream`` straight into the buffer."""
        view = memoryview(self.buffer.numpy())[self.byte_offset : self.byte_offset + self.nbytes]
        done = 0
        while done < self.nbytes:
            count = stream.readinto(view[done:])
            if not count:
                raise Corrupt(f"storage data ends after {done} of {self.nbytes} bytes")
            done += count
        self.filled = True


# --- the two file formats ------------------------------------------------------------------------------


def _storage_args(args: tuple, expected_len: int) -> tuple[StorageType, str, int, Any]:
    """Check (storage_type, key, location, numel[, view]) and return (type, key, nbytes, view)."""
    if len(args) != expected_len:
        raise Corrupt(f"storage id has {len(args)} fields, expected {expected_len}")
    storage_type, key, _location, numel = args[:4]  # location ('cuda:0', 'cpu') is ignored: all on CPU
    if not isinstance(storage_type, StorageType):
        raise Refused(f"{storage_type!r} is not a torch storage type")
    if not isinstance(key, str) or type(numel) is not int or numel < 0:
        raise Corrupt(f"malformed storage id {args!r}")
    element_size = torch.empty(0, dtype=storage_type.dtype).element_size()
    view = args[4] if expected_len == 5 else None
    return storage_type, key, numel * element_size, view


def read_zip(path: Path, unpickler: UnpicklerFactory) -> Any:
    """torch's zip serialisation: ``<archive>/data.pkl`` plus raw storages in ``<archive>/data/<key>``."""
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") <= 1]
        if len(pickles) != 1:
            raise Corrupt(f"expected one data.pkl in the archive, found {len(pickles)}")
        prefix = pickles[0][: -len("data.pkl")]
        if f"{prefix}byteorder" in archive.namelist() and archive.read(f"{prefix}byteorder") != b"little":
            raise Corrupt("big-endian checkpoints are not supported")
        storages: dict[str, StorageRef] = {}
        archive_size, allocated = path.stat().st_size, [0]

        def load_storage(args: tuple) -> StorageRef:
            storage_type, key, nbytes, _ = _storage_args(args, 4)
            if key not in storages:
                try:
                    info = archive.getinfo(f"{prefix}data/{key}")
                except KeyError:
                    raise Corrupt(f"storage {key!r} is missing from the archive") from None
                if info.file_size != nbytes or info.compress_type != zipfile.ZIP_STORED:
                    raise Corrupt(f"storage {key!r} is not {nbytes} stored (uncompressed) bytes")
                allocated[0] += nbytes
                if allocated[0] > archive_size:  # torch stores storages uncompressed: they fit in the file
                    raise Corrupt("storages claim more bytes than the whole file")
                storages[key] = StorageRef.allocate(storage_type.dtype, nbytes)
                with archive.open(info) as stream:
                    storages[key].fill_from(stream)
            return storages[key]

        data = archive.read(pickles[0])
        return unpickler(io.BytesIO(data), load_storage=load_storage).load()


def read_legacy(path: Path, unpickler: UnpicklerFactory) -> Any:
    """torch's legacy serialisation: magic, protocol, sys_info, main pickle, storage keys, raw storages."""
    file_size = path.stat().st_size
    with open(path, "rb") as f:
        if unpickler(f).load() != LEGACY_MAGIC_NUMBER:
            raise Corrupt("not a PyTorch checkpoint (wrong magic number)")
        if unpickler(f).load() != LEGACY_PROTOCOL_VERSION:
            raise Corrupt("unknown legacy protocol version")
        sys_info = unpickler(f).load()
        if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
            raise Corrupt("big-endian checkpoints are not supported")
        roots: dict[str, StorageRef] = {}
        allocated = [0]

        def load_storage(args: tuple) -> StorageRef:
            storage_type, key, nbytes, view = _storage_args(args, 5)
            if key not in roots:
                allocated[0] += nbytes
                if allocated[0] > file_size:  # every storage's bytes follow in the file
                    raise Corrupt("storages claim more bytes than the whole file")
                roots[key] = StorageRef.allocate(storage_type.dtype, nbytes)
            root = roots[key]
            if root.dtype != storage_type.dtype:
                raise Corrupt(f"storage {key!r} is used with two dtypes")
            if view is None:
                return root
            # (view key, offset, size) in elements of the root storage (PyTorch < 1.0 storage slices)
            _view_key, offset, size = view
            element_size = root.element_size
            if type(offset) is not int or type(size) is not int or offset < 0 or size < 0 \
                    or (offset + size) * element_size > root.nbytes:
                raise Corrupt(f"storage view {view!r} is outside storage {key!r}")
            return StorageRef(root.buffer, root.dtype, offset * element_size, size * element_size)

        result = unpickler(f, load_storage=load_storage).load()
        keys = unpickler(f).load()
        if not isinstance(keys, list):
            raise Corrupt("storage key list is malformed")
        for key in keys:
            if key not in roots:
                raise Corrupt(f"storage {key!r} has data but no tensor uses it")
            root = roots[key]
            count = int.from_bytes(f.read(8), "little", signed=True)  # elements, then the raw bytes
            if count * root.element_size != root.nbytes:
                raise Corrupt(f"storage {key!r} holds {count} elements, expected {root.nbytes // root.element_size}")
            root.fill_from(f)
    missing = [k for k, r in roots.items() if not r.filled]
    if missing:
        raise Corrupt(f"no data for storages {missing[:4]}")
    return result


__all__ = [
    "LEGACY_MAGIC_NUMBER", "LEGACY_PROTOCOL_VERSION", "STORAGE_DTYPES", "Corrupt", "Refused", "StorageRef",
    "StorageType", "UnpicklerFactory", "read_legacy", "read_zip",
]  # fmt: skip
