import errno
import os
import pickle

import pytest
import torch

from ssd_runtime import ModelSpec
from ssd_train import SSD300
from ssd_train.checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint

SPEC = ModelSpec.create(["background", "circle", "square"], width=0.125)


def small_model(seed: int = 0) -> SSD300:
    torch.manual_seed(seed)
    return SSD300.from_spec(SPEC)


def test_round_trip(tmp_path):
    model = small_model()
    path = save_checkpoint(tmp_path / "last.pt", model, SPEC, training={"iteration": 7, "rng": torch.get_rng_state()})
    ckpt = load_checkpoint(path)
    assert ckpt.spec == SPEC and ckpt.training["iteration"] == 7
    loaded, spec = load_model(path)
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)
    # Plain weights-only load works too: nothing but tensors and plain data inside.
    raw = torch.load(path, weights_only=True)
    assert raw["spec"]["class_names"] == ["background", "circle", "square"]


class Payload:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_pickle_that_runs_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as f:
        pickle.dump({"model": Payload()}, f)
    torch.save({"x": Payload()}, tmp_path / "evil_zip.pt")
    for path in (evil, tmp_path / "evil_zip.pt"):
        with pytest.raises(CheckpointError, match=f"refused to load {path}"):
            load_checkpoint(path)
    assert not (tmp_path / "pwned").exists()


def test_truncated_checkpoint_is_named_and_previous_one_survives(tmp_path):
    good = save_checkpoint(tmp_path / "last.pt", small_model(), SPEC)
    data = good.read_bytes()
    broken = tmp_path / "broken.pt"
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt/truncated checkpoint .*broken.pt"):
        load_checkpoint(broken)
    assert load_checkpoint(good).spec == SPEC


def test_failed_write_keeps_previous_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "last.pt", small_model(0), SPEC, training={"iteration": 1})
    before = path.read_bytes()

    def disk_full(obj, f, *args, **kwargs):
        with open(f, "wb") as handle:
            handle.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(path, small_model(1), SPEC, training={"iteration": 2})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_not_a_toolkit_checkpoint(tmp_path):
    path = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="not an SSD300 toolkit checkpoint"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_weights_that_do_not_fit_the_spec(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", SSD300(num_classes=5, width=0.125), SPEC)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_model(path)
