import json
import sys
import zipfile

import pytest
import torch

from ssd_runtime.fileio import sha256_file
from ssd_runtime.spec import VOC_CLASSES
from ssd_train.checkpoint import CheckpointError, load_model
from ssd_train.cli import main
from ssd_train.model import SSD300
from ssd_train.tutorial import (
    TutorialCheckpointError,
    UnsafeCheckpointError,
    convert_tutorial_checkpoint,
    load_tutorial_checkpoint,
    read_tutorial_checkpoint,
)
from tests.helpers.pickles import SystemPayload, write_payload_files
from tests.helpers.tutorial_checkpoints import save_tutorial_like


def small_ssd(seed: int = 0) -> SSD300:
    torch.manual_seed(seed)
    return SSD300(num_classes=21, width=0.125)


def assert_same_weights(state: dict[str, torch.Tensor], model: SSD300) -> None:
    expected = model.state_dict()
    assert list(state) == list(expected)
    different = [name for name, tensor in expected.items()
                 if state[name].dtype != tensor.dtype or not torch.equal(state[name], tensor)]
    assert not different  # bit-exact (torch.testing's first call costs seconds here)


@pytest.fixture(scope="module")
def full_size(tmp_path_factory):
    """The tutorial's layout at full size (26.3 M parameters), legacy format, as PyTorch 0.4 wrote it."""
    ours = SSD300(num_classes=21)
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


def _payload_files(tmp_path):
    """Files whose pickles would run code: raw streams, and payloads hidden inside a tutorial-like file."""
    paths = write_payload_files(tmp_path)
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
