import json
import re
from dataclasses import replace

import numpy as np
import pytest

from ssd_runtime import VOC_CLASSES, ModelSpec, PriorConfig, SpecError, make_priors, priors_sha256
from ssd_runtime.errors import FormatError
from ssd_runtime.formats import MODEL_SPEC


def test_create_and_round_trip():
    spec = ModelSpec.create(VOC_CLASSES, width=0.25).with_provenance(checkpoint_sha256="ab" * 32, tool="test")
    assert spec.num_classes == 21 and spec.num_priors == 8732
    assert spec.priors_sha256 == priors_sha256(make_priors())
    data = spec.to_dict()
    json.dumps(data)  # plain data
    assert ModelSpec.from_dict(data) == spec
    assert ModelSpec.from_json(spec.to_json()) == spec
    assert dict(spec.provenance) == {"checkpoint_sha256": "ab" * 32, "tool": "test"}


def test_custom_classes_and_priors():
    spec = ModelSpec.create(["background", "circle", "square"], priors=PriorConfig(clip="extent"))
    back = ModelSpec.from_dict(spec.to_dict())
    assert back.class_names == ("background", "circle", "square")
    assert back.priors.clip == "extent"
    assert back.make_priors().shape == (8732, 4)


def test_unknown_schema_version_is_refused():
    data = ModelSpec.create().to_dict()
    data["schema_version"] = 99
    with pytest.raises(SpecError, match=r"model.onnx: expected a 'ssd300-model-spec' file of schema_version 1 or 2, "
                       r"found format None schema_version 99 \(written by a newer toolkit\); re-export") as caught:
        ModelSpec.from_dict(data, source="model.onnx")
    assert isinstance(caught.value, FormatError)  # the one error of every refused versioned file


def test_spec_is_written_with_its_version_only_and_a_format_stamp_is_checked_when_present():
    """No "format" key is written, so every artifact stays byte for byte what earlier toolkits wrote."""
    spec = ModelSpec.create()
    data = spec.to_dict()
    assert "format" not in data and data["schema_version"] == MODEL_SPEC.version
    assert ModelSpec.from_dict({**data, "format": MODEL_SPEC.name}) == spec
    with pytest.raises(SpecError, match="found format 'ssd300-detections'"):
        ModelSpec.from_dict({**data, "format": "ssd300-detections"})


def test_prior_hash_mismatch_is_refused():
    data = ModelSpec.create().to_dict()
    data["priors"]["scales"][0] = 0.11
    with pytest.raises(SpecError, match="re-export"):
        ModelSpec.from_dict(data)


def test_malformed_spec_names_source():
    data = ModelSpec.create().to_dict()
    del data["mean"]
    with pytest.raises(SpecError, match="engine.json: malformed"):
        ModelSpec.from_dict(data, source="engine.json")
    with pytest.raises(SpecError, match="not valid JSON"):
        ModelSpec.from_json("{nope")


def test_class_names_checked():
    with pytest.raises(SpecError, match="duplicate"):
        ModelSpec.create(["background", "a", "a"])
    with pytest.raises(SpecError, match="at least one class"):
        ModelSpec.create(["background"])


def test_frozen():
    spec = ModelSpec.create()
    with pytest.raises(AttributeError):
        spec.width = 2.0  # type: ignore[misc]
    assert replace(spec, width=0.5).width == 0.5


def test_norm_round_trips_defaults_for_older_files_and_is_checked():
    spec = ModelSpec.create(["background", "a"], norm="batch")
    assert ModelSpec.from_dict(spec.to_dict()).norm == "batch"
    data = ModelSpec.create().to_dict()
    del data["norm"]  # written before the option existed
    assert ModelSpec.from_dict(data).norm == "none"
    data["norm"] = "layer"
    with pytest.raises(SpecError, match="norm must be one of"):
        ModelSpec.from_dict(data, source="old.onnx")


def test_normalization_is_the_float32_affine_form_of_mean_std():
    spec = ModelSpec.create(("background", "a"))
    scale, bias = spec.normalization()
    assert scale.dtype == bias.dtype == np.float32 and scale.shape == bias.shape == (3,)
    pixels = np.arange(256, dtype=np.float64)[:, None]
    expected = (pixels / 255.0 - np.asarray(spec.mean)) / np.asarray(spec.std)
    assert np.allclose(pixels * scale + bias, expected, atol=1e-5)


def test_preprocessing_is_named_in_the_spec_round_trips_and_is_checked():
    from ssd_runtime.spec import DEFAULT_PREPROCESSING

    spec = ModelSpec.create()
    data = spec.to_dict()
    assert data["preprocessing"] == DEFAULT_PREPROCESSING == "rgb8-bilinear-q22-v1" and data["schema_version"] == 2
    assert ModelSpec.from_dict(data).preprocessing == DEFAULT_PREPROCESSING
    data["preprocessing"] = "rgb8-lanczos-v7"  # written by a newer toolkit
    with pytest.raises(SpecError, match="model.onnx: .*'rgb8-lanczos-v7' is not implemented.*upgrade"):
        ModelSpec.from_dict(data, source="model.onnx")
    del data["preprocessing"]  # schema 2 without the field: a broken file, not an old one
    with pytest.raises(SpecError, match="without 'preprocessing'"):
        ModelSpec.from_dict(data, source="model.onnx")


def test_schema_1_files_load_with_the_legacy_preprocessing_as_the_current_schema():
    """Artifacts written before the field: read, not refused (docs/reference.md "Preprocessing")."""
    from ssd_runtime.spec import LEGACY_PREPROCESSING, SCHEMA_VERSION

    spec = ModelSpec.create(("background", "a"))
    old = spec.to_dict()
    del old["preprocessing"]
    old["schema_version"] = 1
    back = ModelSpec.from_dict(old, source="old.pt")
    assert back.preprocessing == LEGACY_PREPROCESSING and back.schema_version == SCHEMA_VERSION
    assert back == spec  # so an old ONNX and its new engine sidecar compare equal


@pytest.mark.parametrize("values, message", [
    ((1.5, 0.5, 200), "min_score must be in [0, 1), got 1.5"),
    ((-0.1, 0.5, 200), "min_score must be in [0, 1)"),
    ((float("nan"), 0.5, 200), "min_score must be in [0, 1), got nan"),
    ((0.2, 0.0, 200), "max_overlap must be in (0, 1], got 0.0"),
    ((0.2, 1.2, 200), "max_overlap must be in (0, 1]"),
    ((0.2, 0.5, -1), "top_k must be an integer >= 0, got -1"),
    ((0.2, 0.5, 2.5), "top_k must be an integer >= 0, got 2.5"),
])
def test_postprocess_settings_out_of_range_are_refused(values, message):
    from ssd_runtime.errors import SettingsError
    from ssd_runtime.spec import PostprocessSettings

    with pytest.raises(SettingsError, match=re.escape(message)):
        PostprocessSettings(*values)
    assert PostprocessSettings(0.0, 1.0, 0).top_k == 0  # the edges are valid: keep all, suppress none, keep none


@pytest.mark.parametrize("min_score, max_overlap", [(0.01, 0.45), (0.2, 0.5), (0.1, 0.3), (0.0, 1.0), (1 / 3, 2 / 3)])
def test_postprocess_settings_carry_their_exact_float32_thresholds(min_score, max_overlap):
    from ssd_runtime.spec import PostprocessSettings

    settings = PostprocessSettings(min_score, max_overlap, 200)
    for value, threshold in ((min_score, settings.min_score_float32), (max_overlap, settings.max_overlap_float32)):
        # the largest float32 <= the value: for float32 x, x > threshold iff x > value
        assert isinstance(threshold, np.float32) and float(threshold) <= value
        assert float(np.nextafter(threshold, np.float32(np.inf))) > value


def test_detect_with_settings_out_of_range_exits_2(runtime_onnx, voc_root, capsys):
    from ssd_runtime.cli import main

    image = sorted((voc_root / "JPEGImages").glob("*.jpg"))[0]
    assert main(["detect", "--model", str(runtime_onnx), str(image), "--min-score", "1.5"]) == 2
    assert "min_score must be in [0, 1), got 1.5" in capsys.readouterr().err
