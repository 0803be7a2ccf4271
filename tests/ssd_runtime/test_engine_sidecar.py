"""The engine sidecar: round trip, validation, and the checks made before a plan is deserialized."""
from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import pytest

from ssd_runtime.engine_sidecar import (
    SCHEMA_DEFAULTS,
    SIDECAR_SCHEMA,
    EngineMismatchError,
    EngineSidecar,
    EngineSidecarError,
    check_sidecar,
    read_sidecar,
    sidecar_path,
    write_sidecar,
)
from ssd_runtime.errors import FormatError, SpecError
from ssd_runtime.formats import ENGINE_SIDECAR
from ssd_runtime.spec import ModelSpec

PLAN = b"not a real plan, only bytes to hash"


def make_sidecar(**changes) -> EngineSidecar:
    spec = ModelSpec.create(("background", "cat", "dog"), width=0.125)
    sidecar = EngineSidecar(
        schema_version=SIDECAR_SCHEMA,
        tensorrt_version="10.3.0",
        gpu_name="Orin",
        compute_capability="8.7",
        cuda_version="12.6",
        precision="fp16",
        variant="fp32",
        fp16_flag=True,
        strongly_typed=False,
        profile={"images": {"min": [1, 3, 300, 300], "opt": [4, 3, 300, 300], "max": [8, 3, 300, 300]}},
        version_compatible=False,
        hardware_compatibility="none",
        inputs=[{"name": "images", "shape": [-1, 3, 300, 300], "dtype": "float32"}],
        outputs=[
            {"name": "locs", "shape": [-1, 8732, 4], "dtype": "float32"},
            {"name": "class_logits", "shape": [-1, 8732, 3], "dtype": "float32"},
        ],
        output_kind="raw",
        spec=spec.to_dict(),
        onnx_sha256="a" * 64,
        plan_sha256=hashlib.sha256(PLAN).hexdigest(),
        built_at="2026-11-30T05:00:00+00:00",
        build_seconds=12.5,
        build_command=["ssd-export", "engine", "--onnx", "m.onnx", "-o", "m engine.engine", "--fp16"],
        parity=None,
    )
    return replace(sidecar, **changes)


def test_sidecar_path_appends_json():
    assert sidecar_path("out/x.engine").as_posix() == "out/x.engine.json"
    assert sidecar_path("x.plan").name == "x.plan.json"


def test_round_trip_through_the_file(tmp_path):
    sidecar = make_sidecar(parity={"passed": True, "max_abs_diff": 0.001})
    engine = tmp_path / "m.engine"
    path = write_sidecar(engine, sidecar)
    assert path == tmp_path / "m.engine.json"
    assert read_sidecar(engine) == sidecar
    written = json.loads(path.read_text())
    assert written["format"] == "ssd300-engine-sidecar" and written["schema_version"] == SIDECAR_SCHEMA
    assert "schema" not in written  # one key spelling
    assert sidecar.model_spec() == ModelSpec.from_dict(sidecar.spec)
    assert [p.name for p in tmp_path.iterdir()] == ["m.engine.json"]  # no temporary left


def test_missing_sidecar_says_how_to_get_one(tmp_path):
    with pytest.raises(EngineSidecarError, match=r"m\.engine\.json.*ssd-export engine.*trust_plan=True"):
        read_sidecar(tmp_path / "m.engine")


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(schema_version=3), r"of schema_version 1 or 2, found .* 3 \(written by a newer toolkit\)"),
        (lambda d: d.update(schema_version="2"), "found format 'ssd300-engine-sidecar' schema_version '2'"),
        (lambda d: d.update(format="ssd300-detections"), "found format 'ssd300-detections'"),
        (lambda d: (d.pop("format"), d.pop("schema_version"), d.update(schema=3)),  # the old spelling
         r"found format None schema_version 3 \(written by a newer toolkit\)"),
        (lambda d: d.pop("tf32"), r"missing keys \['tf32'\]"),
        (lambda d: d.update(tf32="no"), "'tf32' has the wrong type"),
        (lambda d: d.pop("plan_sha256"), r"missing keys \['plan_sha256'\]"),
        (lambda d: d.update(precision="fp8"), "precision 'fp8' is not one of"),
        (lambda d: d.update(hardware_compatibility="turing"), "hardware_compatibility 'turing'"),
        (lambda d: d.update(output_kind="boxes"), "output_kind 'boxes'"),
        (lambda d: d.update(fp16_flag="yes"), "'fp16_flag' has the wrong type"),
        (lambda d: d.update(build_seconds=True), "'build_seconds' has the wrong type"),
        (lambda d: d.update(plan_sha256="xyz"), "plan_sha256 is not a sha256"),
        (lambda d: d.update(compute_capability="sm_90"), "compute_capability 'sm_90'"),
        (lambda d: d.update(inputs=[{"name": "images"}]), "needs name, shape and dtype"),
        (lambda d: d.update(profile={"images": {"min": [1]}}), "needs min, opt and max"),
        (lambda d: d.update(parity=[1]), "'parity' must be an object"),
    ],
)
def test_malformed_sidecar_says_what_is_wrong(tmp_path, mutate, message):
    data = make_sidecar().to_dict()
    mutate(data)
    sidecar_path(tmp_path / "m.engine").write_text(json.dumps(data))
    with pytest.raises(EngineSidecarError, match=message):
        read_sidecar(tmp_path / "m.engine")


def test_not_json(tmp_path):
    sidecar_path(tmp_path / "m.engine").write_text("{")
    with pytest.raises(EngineSidecarError, match="not a readable JSON sidecar"):
        read_sidecar(tmp_path / "m.engine")


def test_model_spec_is_checked():
    spec = make_sidecar().spec
    with pytest.raises(SpecError, match="priors"):
        make_sidecar(spec={**spec, "priors_sha256": "0" * 64}).model_spec()


def check(sidecar, plan=PLAN, trt="10.3.0", cc="8.7"):
    check_sidecar(sidecar, plan, tensorrt_version=trt, compute_capability=cc, engine_path="m.engine")


def test_matching_plan_passes():
    check(make_sidecar())


def test_changed_plan_is_refused_with_the_rebuild_command():
    with pytest.raises(EngineMismatchError, match=r"sha256.*ssd-export engine --onnx m\.onnx -o 'm engine\.engine' --fp16"):
        check(make_sidecar(), plan=PLAN + b"!")


def test_other_tensorrt_version_is_refused():
    with pytest.raises(EngineMismatchError, match=r"built with TensorRT 10\.3\.0, running TensorRT 10\.4\.0.*ssd-export engine"):
        check(make_sidecar(), trt="10.4.0")


@pytest.mark.parametrize(
    ("built", "running", "ok"),
    [
        ("10.3.0", "10.3.0", True),
        ("10.3.0", "10.3.1", True),
        ("10.3.0", "10.8.0.43", True),
        ("10.3.0", "11.1.0", True),  # TensorRT 10 version-compatible plans run on 11
        ("10.3.0", "10.2.0", False),
        ("11.0.0", "10.16.0", False),
        ("11.0.0", "11.1.0", True),
        ("11.1.0", "12.0.0", False),  # no other pair across majors
    ],
)
def test_version_compatible_plan_runs_forward(built, running, ok):
    sidecar = make_sidecar(version_compatible=True, tensorrt_version=built)
    if ok:
        check(sidecar, trt=running)
    else:
        with pytest.raises(EngineMismatchError, match="version-compatible"):
            check(sidecar, trt=running)


def test_other_gpu_is_refused():
    with pytest.raises(EngineMismatchError, match=r"built on Orin \(compute capability 8\.7\), running on compute capability 9\.0.*ssd-export engine"):
        check(make_sidecar(), cc="9.0")


@pytest.mark.parametrize(
    ("level", "running", "ok"),
    [
        ("ampere_plus", "9.0", True),
        ("ampere_plus", "8.0", True),
        ("ampere_plus", "7.5", False),
        ("same_compute_capability", "8.7", True),
        ("same_compute_capability", "8.9", False),
        ("none", "8.7", True),
    ],
)
def test_hardware_compatibility_levels(level, running, ok):
    sidecar = make_sidecar(hardware_compatibility=level)
    if ok:
        check(sidecar, cc=running)
    else:
        with pytest.raises(EngineMismatchError, match="running on compute capability"):
            check(sidecar, cc=running)


def test_end2end_engines_carry_their_baked_postprocess(tmp_path):
    from ssd_runtime.onnx_model import End2EndConfig
    from ssd_runtime.spec import EVALUATION_SETTINGS

    baked = End2EndConfig(EVALUATION_SETTINGS, 4096)
    sidecar = make_sidecar(variant="end2end", output_kind="detections", end2end=baked.to_dict())
    write_sidecar(tmp_path / "e.engine", sidecar)
    assert read_sidecar(tmp_path / "e.engine").end2end_config() == baked
    assert make_sidecar().end2end_config() is None
    data = make_sidecar().to_dict()
    del data["end2end"]  # an optional key: a raw engine's sidecar may leave it out
    assert EngineSidecar.from_dict(data).end2end is None
    for changes in ({"output_kind": "detections"}, {"end2end": baked.to_dict()}):
        with pytest.raises(EngineSidecarError, match="'end2end'.*required"):
            EngineSidecar.from_dict(make_sidecar(**changes).to_dict())
    with pytest.raises(EngineSidecarError, match="malformed 'end2end'"):
        EngineSidecar.from_dict(make_sidecar(output_kind="detections", end2end={"settings": {}}).to_dict())


def test_schema_1_sidecars_stay_readable_and_say_tf32_was_on(tmp_path):
    """Schema 1 (before ``tf32``) never cleared BuilderFlag.TF32, which TensorRT enables by default."""
    data = _old_spelling(make_sidecar().to_dict(), schema=1)
    del data["tf32"]
    sidecar_path(tmp_path / "m.engine").write_text(json.dumps(data))
    old = read_sidecar(tmp_path / "m.engine")
    assert old.schema_version == 1 and old.tf32 is True
    assert json.loads(sidecar_path(tmp_path / "m.engine").read_text()) == data  # read, never rewritten


def test_every_readable_schema_says_what_it_lacks():
    assert set(SCHEMA_DEFAULTS) == set(ENGINE_SIDECAR.readable) and SIDECAR_SCHEMA == ENGINE_SIDECAR.version


def _old_spelling(data: dict, schema: int) -> dict:
    """A sidecar as toolkits before the format stamp wrote it: the version under "schema", no "format"."""
    return {**{k: v for k, v in data.items() if k not in ("format", "schema_version")}, "schema": schema}


def test_sidecars_of_the_old_spelling_still_load(tmp_path):
    sidecar = make_sidecar()
    sidecar_path(tmp_path / "m.engine").write_text(json.dumps(_old_spelling(sidecar.to_dict(), schema=2)))
    assert read_sidecar(tmp_path / "m.engine") == sidecar


def test_a_refused_schema_is_a_format_error_and_a_sidecar_error(tmp_path):
    data = {**make_sidecar().to_dict(), "schema_version": 3}
    sidecar_path(tmp_path / "m.engine").write_text(json.dumps(data))
    with pytest.raises(FormatError, match=r"m\.engine\.json: expected a 'ssd300-engine-sidecar' file") as caught:
        read_sidecar(tmp_path / "m.engine")
    assert isinstance(caught.value, EngineSidecarError) and "`ssd-export engine`" in str(caught.value)


def test_tf32_is_written_and_read_back(tmp_path):
    sidecar = replace(make_sidecar(), tf32=True)
    write_sidecar(tmp_path / "m.engine", sidecar)
    assert json.loads(sidecar_path(tmp_path / "m.engine").read_text())["tf32"] is True
    assert read_sidecar(tmp_path / "m.engine") == sidecar
