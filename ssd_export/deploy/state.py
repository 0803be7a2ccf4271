"""``DIR/deploy_state.json``: the finished steps of earlier ``ssd-export deploy`` runs, for reuse.

A step is reused when its recorded inputs (sha256s of its sources, settings) equal the current ones and
every file it wrote still has its recorded sha256. Paths are stored relative to the deploy folder, so a
moved or copied folder stays reusable. A damaged file only costs a rebuild.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ssd_runtime.fileio import atomic_write_bytes, sha256_file
from ssd_runtime.formats import DEPLOY_STATE, FormatError

__all__ = ["STATE_SCHEMA", "DeployState"]

STATE_SCHEMA = DEPLOY_STATE.version


class DeployState:
    """The finished steps of earlier runs in ``DIR/deploy_state.json``: inputs, result, files written (sha256)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.steps: dict[str, dict[str, Any]] = {}
        self._hashes: dict[tuple[str, int, int], str] = {}
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except ValueError:
                data = {}  # a damaged state only costs a rebuild
            try:
                DEPLOY_STATE.check(data, str(path))  # files before the format stamp carry no "format"
            except FormatError:
                pass  # another version's state only costs a rebuild
            else:
                self.steps = data.get("steps", {})

    def sha256(self, path: str | Path) -> str:
        """``sha256_file`` once per file version in this run (keyed by path, size and mtime): an artifact is
        an input of several steps and of its dependents' steps, and a full-width ONNX is ~100 MB."""
        path = Path(path).resolve()
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        if key not in self._hashes:
            self._hashes[key] = sha256_file(path)
        return self._hashes[key]

    def lookup(self, key: str, inputs: dict[str, Any]) -> dict[str, Any] | None:
        """The recorded step when its inputs equal ``inputs`` and every file it wrote is unchanged."""
        record = self.steps.get(key)
        if record is None or record["inputs"] != _plain(inputs):
            return None
        for name, digest in record["outputs"].items():
            path = self.path.parent / name
            if not path.is_file() or self.sha256(path) != digest:
                return None
        return record

    def record(self, key: str, inputs: dict[str, Any], result: dict[str, Any], outputs: Sequence[str | Path]) -> dict[str, Any]:
        self.steps[key] = {"inputs": _plain(inputs), "result": _plain(result),
                           "outputs": {self._name(p): self.sha256(p) for p in outputs},
                           "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        self.save()
        return self.steps[key]

    def _name(self, path: str | Path) -> str:
        """A written file's name relative to the deploy folder (a copied or moved folder stays reusable)."""
        return Path(os.path.relpath(Path(path).resolve(), self.path.parent.resolve())).as_posix()

    def save(self) -> None:
        text = json.dumps(DEPLOY_STATE.stamp({"steps": self.steps}), indent=1, sort_keys=True) + "\n"
        atomic_write_bytes(self.path, text.encode())


def _plain(value: Any) -> Any:
    """JSON round trip: tuples become lists, so recorded and current inputs compare equal."""
    return json.loads(json.dumps(value))
