"""Raw pickle streams wrapped in torch's two checkpoint layouts, for tests of the restricted unpickler."""
from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path

from ssd_train.safe_unpickle import LEGACY_MAGIC_NUMBER, LEGACY_PROTOCOL_VERSION

#: The storage-key list that ends a legacy file without storages.
NO_STORAGE_KEYS = pickle.dumps([], protocol=2)


def legacy_layout(main_pickle: bytes) -> bytes:
    """A raw pickle stream inside torch's legacy layout (header pickles, main pickle, no storages)."""
    header = b"".join(pickle.dumps(v, protocol=2) for v in (
        LEGACY_MAGIC_NUMBER, LEGACY_PROTOCOL_VERSION, {"protocol_version": 1001, "little_endian": True}))
    return header + main_pickle + NO_STORAGE_KEYS


def zip_with(data_pkl: bytes) -> bytes:
    """A raw pickle stream as the ``data.pkl`` of torch's zip layout (no storages)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/version", "3\n")
    return buffer.getvalue()


class SystemPayload:
    """Pickles as a call of ``os.system`` (it would create ``pwned`` in the working folder)."""

    def __reduce__(self):
        return (os.system, ("touch pwned",))


class ExecPayload:
    """Pickles as a call of ``exec`` (it would create ``pwned`` in the working folder)."""

    def __reduce__(self):
        return (exec, ("open('pwned', 'w').close()",))


def write_payload_files(folder: Path) -> list[Path]:
    """Files whose pickles would run code (raw streams and ``__reduce__`` payloads), in both layouts."""
    payloads = {
        "raw_posix_system": b"cposix\nsystem\n(S'touch pwned'\ntR.",
        "raw_os_system_newobj": b"\x80\x02cos\nsystem\nX\x0b\x00\x00\x00touch pwned\x85\x81.",
        "reduce_system_p2": pickle.dumps({"model": SystemPayload()}, protocol=2),
        "reduce_system_p4": pickle.dumps({"model": SystemPayload()}, protocol=4),
        "reduce_exec_p2": pickle.dumps({"model": ExecPayload()}, protocol=2),
        "eval_protocol0": b"c__builtin__\neval\n(S'open(\"pwned\",\"w\")'\ntR.",
    }
    paths = []
    for name, data in payloads.items():
        for layout_name, layout in (("legacy", legacy_layout), ("zip", zip_with)):
            path = folder / f"{layout_name}_{name}.pth.tar"
            path.write_bytes(layout(data))
            paths.append(path)
    return paths
