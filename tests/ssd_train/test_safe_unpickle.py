import io
import pickle
import sys
import types
from collections import OrderedDict

import pytest
import torch
from torch import nn

from ssd_train.checkpoint import CheckpointError
from ssd_train.safe_unpickle import (
    CorruptCheckpointError,
    StandIn,
    UnsafeCheckpointError,
    unpickle_checkpoint,
)
from tests.helpers.pickles import NO_STORAGE_KEYS, legacy_layout, write_payload_files, zip_with

VENDOR_MODULE = "vendor_records"  # never importable: it exists only while a test saves a file


class Record:
    """A class of someone else's code, pickled whole as ``vendor_records.Record``."""

    def __init__(self, name: str, weights: torch.Tensor) -> None:
        self.name = name
        self.weights = weights
        self.tags = {"split": "train", "sizes": [1, 2]}


Record.__module__ = VENDOR_MODULE
RECORD = f"{VENDOR_MODULE}.Record"


def save_record(path, monkeypatch, *, legacy: bool):
    """``torch.save({'record': Record(...)})`` with the vendor module present only while saving."""
    weights = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    with monkeypatch.context() as patch:
        module = types.ModuleType(VENDOR_MODULE)
        module.Record = Record
        patch.setitem(sys.modules, VENDOR_MODULE, module)
        torch.save({"record": Record("prior-net", weights), "step": 5}, path, _use_new_zipfile_serialization=not legacy)
    assert VENDOR_MODULE not in sys.modules
    return path, weights


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy", "zip"])
def test_an_allowed_class_loads_as_an_inert_stand_in(tmp_path, monkeypatch, legacy):
    path, weights = save_record(tmp_path / "record.pt", monkeypatch, legacy=legacy)
    payload = unpickle_checkpoint(path, allowed_classes={RECORD})
    record = payload["record"]
    assert payload["step"] == 5 and isinstance(record, StandIn) and record.origin == RECORD
    assert set(record.state) == {"name", "weights", "tags"}
    assert record.state["name"] == "prior-net" and record.state["tags"] == {"split": "train", "sizes": [1, 2]}
    assert torch.equal(record.state["weights"], weights) and record.state["weights"].device.type == "cpu"
    assert VENDOR_MODULE not in sys.modules  # nothing was imported
    assert not hasattr(record, "__call__") and repr(record) == f"<stand-in for {RECORD}>"


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy", "zip"])
def test_the_same_file_with_an_empty_allow_list_is_refused(tmp_path, monkeypatch, legacy):
    path, _ = save_record(tmp_path / "record.pt", monkeypatch, legacy=legacy)
    for allowed in (frozenset(), {"vendor_records.Other"}, {"vendor_records"}):
        with pytest.raises(UnsafeCheckpointError, match=f"refused to load {path}: .*{RECORD}.*not .* an allowed class"):
            unpickle_checkpoint(path, allowed_classes=allowed)
    # A package prefix allows every class under it; another package does not.
    assert unpickle_checkpoint(path, standin_packages=(f"{VENDOR_MODULE}",))["record"].origin == RECORD
    with pytest.raises(UnsafeCheckpointError):
        unpickle_checkpoint(path, standin_packages=("torch.nn.modules.",))


def test_torch_modules_load_as_stand_ins_only_when_their_package_is_allowed(tmp_path):
    torch.manual_seed(0)
    layer = nn.Linear(3, 2)
    path = tmp_path / "linear.pt"
    torch.save({"layer": layer}, path)
    with pytest.raises(UnsafeCheckpointError, match="torch.nn.modules.linear.Linear"):
        unpickle_checkpoint(path)
    loaded = unpickle_checkpoint(path, standin_packages=("torch.nn.modules.",))["layer"]
    assert loaded.origin == "torch.nn.modules.linear.Linear"
    assert torch.equal(loaded.state["_parameters"]["weight"], layer.weight.detach())
    assert torch.equal(loaded.state["_parameters"]["bias"], layer.bias.detach())


def test_dangerous_callables_are_refused_even_when_allowed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # Naming a callable in the allow-list only makes an inert stand-in of it: it is never called.
    allow_lists = {  # allow-list -> why the file is refused
        "nothing": ({}, "not a tensor, parameter, container or an allowed class"),
        "names": ({"allowed_classes": {"os.system", "posix.system", "builtins.exec", "builtins.eval"}},
                  "refused to (call|create) <class .*(system|exec|eval)'>"),
        "packages": ({"standin_packages": ("os", "posix", "builtins")}, "refused to (call|create)"),
    }  # fmt: skip
    for path in write_payload_files(tmp_path):
        for allow, why in allow_lists.values():
            with pytest.raises(UnsafeCheckpointError, match=f"refused to load {path}: .*{why}.*Nothing in the file was run") as info:
                unpickle_checkpoint(path, **allow)
            assert isinstance(info.value, CheckpointError) and not isinstance(info.value, CorruptCheckpointError)
    assert not (tmp_path / "pwned").exists()


def test_unknown_classes_and_state_on_non_stand_ins_are_refused(tmp_path):
    evil = tmp_path / "subprocess.pt"
    evil.write_bytes(zip_with(b"csubprocess\nPopen\n(S'true'\ntR."))
    with pytest.raises(UnsafeCheckpointError, match="subprocess.Popen"):
        unpickle_checkpoint(evil)
    # BUILD on something that is not a stand-in (here an OrderedDict) is refused too.
    build = tmp_path / "build.pt"
    build.write_bytes(zip_with(b"\x80\x02ccollections\nOrderedDict\n)R}b."))
    with pytest.raises(UnsafeCheckpointError, match="only stand-ins take state"):
        unpickle_checkpoint(build)


def test_allow_lists_must_be_collections_of_names(tmp_path):
    path = tmp_path / "plain.pt"
    torch.save({"x": torch.zeros(2)}, path)
    for wrong in ({"allowed_classes": RECORD}, {"standin_packages": "torch.nn.modules."}, {"allowed_classes": [Record]}):
        with pytest.raises(TypeError, match="must be a collection of names"):
            unpickle_checkpoint(path, **wrong)
    assert torch.equal(unpickle_checkpoint(path)["x"], torch.zeros(2))  # tensors and dicts need no allow-list


def test_missing_and_truncated_files_are_named(tmp_path, monkeypatch):
    path, _ = save_record(tmp_path / "record.pt", monkeypatch, legacy=True)
    data = path.read_bytes()
    truncated = tmp_path / "cut.pt"
    truncated.write_bytes(data[: len(data) - 10])
    with pytest.raises(CorruptCheckpointError, match=f"corrupt/truncated weights file {truncated}"):
        unpickle_checkpoint(truncated, allowed_classes={RECORD}, what="weights file")
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        unpickle_checkpoint(tmp_path / "missing.pt")


class _HugeStorage:
    """Pickled as a storage id claiming 10**12 float32 elements."""


class _TensorOnHugeStorage:
    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2, (_HugeStorage(), 0, (1,), (1,), False, OrderedDict()))


class _StoragePickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _HugeStorage):
            return ("storage", torch.FloatStorage, "0", "cpu", 10**12, None)
        return None


def test_storages_larger_than_the_file_are_refused_before_allocation(tmp_path):
    stream = io.BytesIO()
    _StoragePickler(stream, protocol=2).dump({"model": _TensorOnHugeStorage()})
    path = tmp_path / "bomb.pt"
    path.write_bytes(legacy_layout(stream.getvalue()))  # a few hundred bytes claiming 4 TB
    with pytest.raises(CorruptCheckpointError, match="more bytes than the whole file"):
        unpickle_checkpoint(path)


class _ViewPickler(pickle.Pickler):
    """Pickles _HugeStorage as a PyTorch < 1.0 storage view: elements 2..4 of a 5-element root."""

    def persistent_id(self, obj):
        if isinstance(obj, _HugeStorage):
            return ("storage", torch.FloatStorage, "root", "cuda:0", 5, ("view", 2, 3))
        return None


def test_legacy_storage_views_and_gpu_locations(tmp_path):
    class TensorOnView:
        def __reduce__(self):
            return (torch._utils._rebuild_tensor_v2, (_HugeStorage(), 1, (2,), (1,), False, OrderedDict()))

    stream = io.BytesIO()
    _ViewPickler(stream, protocol=2).dump([TensorOnView()])
    data = torch.arange(5, dtype=torch.float32).numpy().tobytes()
    path = tmp_path / "view.pt"
    path.write_bytes(legacy_layout(stream.getvalue())[: -len(NO_STORAGE_KEYS)]
                     + pickle.dumps(["root"], protocol=2) + (5).to_bytes(8, "little") + data)
    (tensor,) = unpickle_checkpoint(path)
    assert tensor.tolist() == [3.0, 4.0] and tensor.device.type == "cpu"
