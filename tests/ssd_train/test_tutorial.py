import io
import json
import os
import pickle
import sys
import zipfile
from collections import OrderedDict

import pytest
import torch

from ssd_runtime.fileio import sha256_file
from ssd_runtime.spec import VOC_CLASSES
from ssd_train.checkpoint import CheckpointError, load_model
from ssd_train.cli import main
from ssd_train.model import SSD300
from ssd_train.tutorial import (
    LEGACY_MAGIC_NUMBER,
    LEGACY_PROTOCOL_VERSION,
    TutorialCheckpointError,
    UnsafeCheckpointError,
    convert_tutorial_checkpoint,
    load_tutorial_checkpoint,
    read_tutorial_checkpoint,
)
from tests.ssd_train.tutorial_helpers import save_tutorial_like


def small_ssd(seed: int = 0) -> SSD300:
    torch.manual_seed(seed)
    return SSD300(n_classes=21, width=0.125)


def assert_same_weights(state: dict[str, torch.Tensor], model: SSD300) -> None:
    expected = model.state_dict()
    assert list(state) == list(expected)
    different = [name for name, tensor in expected.items()
                 if state[name].dtype != tensor.dtype or not torch.equal(state[name], tensor)]
    assert not different  # bit-exact (torch.testing's first call costs seconds here)


@pytest.fixture(scope="module")
def full_size(tmp_path_factory):
    """The tutorial's layout at full size (26.3 M parameters), legacy format, as PyTorch 0.4 wrote it."""
    ours = SSD300(n_classes=21)
    path = save_tutorial_like(tmp_path_factory.mktemp("tutorial") / "checkpoint_ssd300.pth.tar", ours, legacy=True)
    return path, ours


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy", "zip"])
def test_reads_weights_in_both_formats_without_importing_model(tmp_path, legacy):
    ours = small_ssd()
    path = save_tutorial_like(tmp_path / "checkpoint_ssd300.pth.tar", ours, legacy=legacy, epoch=7)
    assert zipfile.is_zipfile(path) is not legacy
    assert "model" not in sys.modules  # nothing can import the tutorial's classes
    tutorial = load_tutorial_checkpoint(path)
    assert tutorial.epoch == 7 and tutorial.priors_checked
    assert_same_weights(tutorial.model_state, ours)
    assert "model" not in sys.modules
    assert all(t.dtype == torch.float32 and t.device.type == "cpu" for t in tutorial.model_state.values())


def test_converts_full_size_checkpoint_with_the_cli_and_it_loads(tmp_path, full_size, capsys):
    src, ours = full_size
    out = tmp_path / "ssd300_voc.pt"
    assert main(["import-tutorial", str(src), "-o", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    provenance = report["provenance"]
    assert report["classes"] == 21 and report["width"] == 1.0
    assert provenance["converted_from"] == "sgrvinod tutorial" and provenance["tutorial_epoch"] == "3"
    assert provenance["source_sha256"] == sha256_file(src)
    model, spec = load_model(out)
    assert spec.class_names == VOC_CLASSES and dict(spec.provenance) == provenance
    assert_same_weights(model.state_dict(), ours)


def test_cli_errors_are_short_and_the_source_is_never_overwritten(tmp_path, full_size, capsys):
    src, _ = full_size
    before = src.stat().st_mtime_ns
    assert main(["import-tutorial", str(src), "-o", str(src)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert src.stat().st_mtime_ns == before
    assert main(["import-tutorial", str(tmp_path / "missing.pth.tar"), "-o", str(tmp_path / "x.pt")]) == 2
    assert "tutorial checkpoint not found" in capsys.readouterr().err


class SystemPayload:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


class ExecPayload:
    def __reduce__(self):
        return (exec, ("open('pwned', 'w').close()",))


def _legacy_layout(main_pickle: bytes) -> bytes:
    """A raw pickle stream inside torch's legacy layout (header pickles, main pickle, no storages)."""
    header = b"".join(pickle.dumps(v, protocol=2) for v in (
        LEGACY_MAGIC_NUMBER, LEGACY_PROTOCOL_VERSION, {"protocol_version": 1001, "little_endian": True}))
    return header + main_pickle + pickle.dumps([], protocol=2)


def _zip_with(data_pkl: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/version", "3\n")
    return buffer.getvalue()


def _payload_files(tmp_path):
    """Files whose pickles would run code: raw streams, and payloads hidden inside a tutorial-like file."""
    raw_system = b"cposix\nsystem\n(S'touch pwned'\ntR."
    files = {
        "legacy_raw_posix_system.pth.tar": _legacy_layout(raw_system),
        "legacy_reduce_exec.pth.tar": _legacy_layout(pickle.dumps({"model": ExecPayload()}, protocol=2)),
        "zip_builtins_exec.pth.tar": _zip_with(pickle.dumps({"model": ExecPayload()}, protocol=2)),
        "zip_os_system.pth.tar": _zip_with(pickle.dumps({"model": SystemPayload()}, protocol=4)),
        "zip_eval_protocol0.pth.tar": _zip_with(b"c__builtin__\neval\n(S'open(\"pwned\",\"w\")'\ntR."),
    }
    paths = []
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        paths.append(tmp_path / name)
    for legacy in (True, False):  # the payload deep inside the model, after stand-ins were made
        name = f"hidden_{'legacy' if legacy else 'zip'}.pth.tar"
        paths.append(save_tutorial_like(tmp_path / name, small_ssd(), legacy=legacy, extra={"note": SystemPayload()}))
    return paths


def test_payloads_are_refused_without_running(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for path in _payload_files(tmp_path):
        with pytest.raises(UnsafeCheckpointError, match=f"refused to load {path}.*(system|exec|eval)") as info:
            read_tutorial_checkpoint(path)
        assert isinstance(info.value, CheckpointError) and "Nothing in the file was run" in str(info.value)
        with pytest.raises(UnsafeCheckpointError):
            convert_tutorial_checkpoint(path, tmp_path / "out.pt")
    assert not (tmp_path / "pwned").exists()
    assert not (tmp_path / "out.pt").exists()


def test_unknown_classes_and_tensor_state_are_refused(tmp_path):
    evil = tmp_path / "subprocess.pth.tar"
    evil.write_bytes(_zip_with(b"csubprocess\nPopen\n(S'true'\ntR."))
    with pytest.raises(UnsafeCheckpointError, match="subprocess.Popen"):
        read_tutorial_checkpoint(evil)
    # BUILD on something that is not a stand-in (here an OrderedDict) is refused too.
    build = tmp_path / "build.pth.tar"
    build.write_bytes(_zip_with(b"\x80\x02ccollections\nOrderedDict\n)R}b."))
    with pytest.raises(UnsafeCheckpointError, match="only stand-ins take state"):
        read_tutorial_checkpoint(build)


def test_missing_parameter_is_named(tmp_path):
    path = save_tutorial_like(tmp_path / "no_conv9_2.pth.tar", small_ssd(), legacy=True, drop="aux_convs.conv9_2")
    with pytest.raises(TutorialCheckpointError, match=r"no_conv9_2.pth.tar: parameters .* missing \['aux_convs.conv9_2.weight'"):
        read_tutorial_checkpoint(path)


def test_truncated_and_foreign_files(tmp_path):
    data = save_tutorial_like(tmp_path / "whole.pth.tar", small_ssd(), legacy=True).read_bytes()
    for cut in (len(data) // 3, len(data) - 10):
        truncated = tmp_path / f"cut{cut}.pth.tar"
        truncated.write_bytes(data[:cut])
        with pytest.raises(TutorialCheckpointError, match=f"corrupt/truncated tutorial checkpoint {truncated}"):
            read_tutorial_checkpoint(truncated)
    plain = tmp_path / "plain.pt"
    torch.save({"model": torch.zeros(2)}, plain)
    with pytest.raises(TutorialCheckpointError, match="is not the tutorial's checkpoint"):
        read_tutorial_checkpoint(plain)
    with pytest.raises(FileNotFoundError, match="tutorial checkpoint not found"):
        read_tutorial_checkpoint(tmp_path / "missing.pth.tar")


def test_wrong_priors_are_refused(tmp_path):
    ours = small_ssd()
    ours.priors_cxcy = ours.priors_cxcy.clone()
    ours.priors_cxcy[0, 2] += 0.01
    path = save_tutorial_like(tmp_path / "other_priors.pth.tar", ours, legacy=False)
    with pytest.raises(TutorialCheckpointError, match="priors_cxcy .* differ"):
        read_tutorial_checkpoint(path)


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
    path = tmp_path / "bomb.pth.tar"
    path.write_bytes(_legacy_layout(stream.getvalue()))  # a few hundred bytes claiming 4 TB
    with pytest.raises(TutorialCheckpointError, match="more bytes than the whole file"):
        read_tutorial_checkpoint(path)


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
    path = tmp_path / "view.pth.tar"
    path.write_bytes(_legacy_layout(stream.getvalue())[: -len(pickle.dumps([], protocol=2))]
                     + pickle.dumps(["root"], protocol=2) + (5).to_bytes(8, "little") + data)
    from ssd_train.tutorial import unpickle_checkpoint

    (tensor,) = unpickle_checkpoint(path)
    assert tensor.tolist() == [3.0, 4.0] and tensor.device.type == "cpu"
