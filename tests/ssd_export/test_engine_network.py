"""``ssd_export.tensorrt.network`` and ``ssd-export engine`` (CLI) through the FAKE tensorrt, both majors:
feature detection, network flags, the timing cache round trip, and the command line."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from ssd_export.cli import main
from ssd_export.tensorrt.network import (
    NetworkSettings,
    TimingCacheError,
    build_plan,
    detect_features,
)
from ssd_runtime.engine_sidecar import read_sidecar
from tests.helpers.fakes.tensorrt import CACHE_MAGIC, USAGE, fake_state, read_fake_plan


def test_features_are_found_by_attribute(fake_trt):
    features = detect_features(fake_trt)
    ten = fake_state(fake_trt).major == "10.3"
    assert features.version == fake_trt.__version__
    assert (features.fp16_flag, features.same_compute_capability) == (ten, not ten)
    # the probes of absent names were attribute lookups, recorded as such (not version parsing)
    missing = USAGE[fake_state(fake_trt).major].missing
    assert ("HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY" if ten else "BuilderFlag.FP16") in missing


@pytest.mark.parametrize("strongly_typed", [True, False])
def test_network_flags_come_from_the_enum(fake_trt, engine_sources, strongly_typed):
    """STRONGLY_TYPED is bit 1 in 10.3 and bit 0 in 11.1: the fake decodes the mask with its major's value."""
    if not strongly_typed and fake_state(fake_trt).major == "11.1":
        pytest.skip("TensorRT 11 networks are always strongly typed")
    built = build_plan(fake_trt, engine_sources["fp32"], NetworkSettings(strongly_typed=strongly_typed))
    assert read_fake_plan(built.plan)[0]["strongly_typed"] is strongly_typed


def _cache_entries(path: Path) -> dict:
    data = path.read_bytes()
    assert data.startswith(CACHE_MAGIC)
    return json.loads(data[len(CACHE_MAGIC):])["entries"]


def test_timing_cache_round_trip(fake_trt, engine_sources, tmp_path):
    cache = tmp_path / "timing.cache"
    build_plan(fake_trt, engine_sources["fp32"], NetworkSettings(batch=(1, 2, 4)), cache)
    first = _cache_entries(cache)
    assert list(first) == ["images:[2, 3, 300, 300]"]
    build_plan(fake_trt, engine_sources["fp32"], NetworkSettings(batch=(1, 8, 16)), cache)
    assert set(_cache_entries(cache)) == {*first, "images:[8, 3, 300, 300]"}  # read, used, extended
    assert [p.name for p in tmp_path.iterdir()] == ["timing.cache"]  # written atomically, no temporary left


def test_timing_cache_combines_with_a_concurrent_writer(fake_trt, engine_sources, tmp_path, monkeypatch):
    cache = tmp_path / "timing.cache"
    build_plan(fake_trt, engine_sources["fp32"], NetworkSettings(batch=(1, 2, 4)), cache)
    other = cache.read_bytes().replace(b"tactic for", b"another build's tactic for").replace(
        b"images:[2, 3, 300, 300]", b"other:[5]")
    builder_class = type(fake_trt.Builder(fake_trt.Logger()))
    original = builder_class.build_serialized_network

    def build_while_another_writes(self, network, config):
        cache.write_bytes(other)  # another build finished meanwhile and wrote its cache
        return original(self, network, config)

    monkeypatch.setattr(builder_class, "build_serialized_network", build_while_another_writes)
    build_plan(fake_trt, engine_sources["fp32"], NetworkSettings(batch=(1, 8, 16)), cache)
    assert set(_cache_entries(cache)) == {"other:[5]", "images:[2, 3, 300, 300]", "images:[8, 3, 300, 300]"}


def test_unreadable_timing_cache_is_refused_and_kept(fake_trt, engine_sources, tmp_path):
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"not a cache")
    with pytest.raises(TimingCacheError, match="cannot read the timing cache.*delete it"):
        build_plan(fake_trt, engine_sources["fp32"], NetworkSettings(), cache)
    assert cache.read_bytes() == b"not a cache"
    foreign = CACHE_MAGIC + json.dumps({"device": "another GPU", "entries": {}}).encode()
    cache.write_bytes(foreign)
    with pytest.raises(TimingCacheError, match="another GPU or TensorRT version"):
        build_plan(fake_trt, engine_sources["fp32"], NetworkSettings(), cache)
    assert cache.read_bytes() == foreign
    assert fake_state(fake_trt).builds == []


def test_cli_builds_and_the_sidecar_command_rebuilds(fake_trt, stand_in_gpu, engine_sources, tmp_path, capsys,
                                                     monkeypatch):
    from ssd_runtime.backends.tensorrt import TensorRTBackend

    # the CLI cannot pass the stand-in GPU's memory: give it to every backend the check creates
    monkeypatch.setattr(TensorRTBackend, "load", classmethod(
        lambda cls, path, *, device="cuda", **options: cls(path, device=device, memory=stand_in_gpu, **options)))
    out = tmp_path / "m.engine"
    assert main(["engine", "--model", str(engine_sources["fp32"]), "-o", str(out), "--batch-profile", "1,2,4",
                 "--optimization-level", "2"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "batch images 1..2..4" in printed and "PASSED" in printed
    sidecar = read_sidecar(out)
    plan = out.read_bytes()
    out.unlink()
    assert main(sidecar.build_command[1:] + ["--json"]) == 0  # argv without the program name
    assert json.loads(capsys.readouterr().out)["plan_sha256"] == sidecar.plan_sha256
    assert out.read_bytes() == plan


def test_cli_errors(fake_trt, stand_in_gpu, engine_sources, tmp_path, capsys):
    out = tmp_path / "m.engine"
    code = main(["engine", "--model", str(engine_sources["fp32"]), "-o", str(out), "--batch-profile", "4,2,1"])
    assert code == 2 and "--batch-profile '4,2,1'" in capsys.readouterr().err
    if fake_state(fake_trt).major == "11.1":
        assert main(["engine", "--onnx", str(engine_sources["fp32"]), "-o", str(out), "--fp16"]) == 2
        assert "no FP16 builder flag" in capsys.readouterr().err
    fake_state(fake_trt).fail_build = "out_of_memory"
    assert main(["engine", "--onnx", str(engine_sources["fp32"]), "-o", str(out), "--no-parity"]) == 2
    assert "ran out of memory" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
