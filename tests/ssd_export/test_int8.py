"""``ssd-export int8``: TensorRT's Q/DQ rules on the produced graph (each method), the checker itself,
provenance, refusals and atomic writes, the runtime on the INT8 model, and an accuracy smoke check."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import helper, numpy_helper

from ssd_export.int8.calibration import CalibrationError, build_manifest, write_manifest
from ssd_export.defaults import INT8_METHODS
from ssd_export.int8.ort import QUANTIZER
from ssd_export.int8.quantize import Int8Error, quantize_int8
from ssd_export.qdq_rules import check_qdq_rules, l2_norm_nodes, output_tail
from ssd_runtime.fileio import sha256_file
from ssd_runtime.onnx_model import META_END2END, META_VARIANT, OnnxModelError, read_onnx_info


@pytest.fixture(scope="module")
def manifest(calibration_manifest) -> Path:
    """The session's 8-image calibration set (tests/ssd_export/conftest.py)."""
    return calibration_manifest


@pytest.fixture(scope="module")
def int8_models(runtime_onnx, manifest, tmp_path_factory) -> dict[str, dict]:
    """The INT8 model of the session's trained model by every method (parity run for ``max`` only)."""
    folder = tmp_path_factory.mktemp("int8")
    return {method: quantize_int8(runtime_onnx, manifest, folder / f"{method}.onnx", method=method,
                                  parity=method == "max")
            for method in INT8_METHODS}


def _nodes(model: onnx.ModelProto, op_type: str) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.op_type == op_type]


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ---------------------------------------------------------------------------------------- the graph


@pytest.mark.parametrize("method", INT8_METHODS)
def test_graph_follows_tensorrt_rules(int8_models, method):
    model = onnx.load(int8_models[method]["output"])
    assert check_qdq_rules(model) == []
    # the same rules, read directly off the graph
    assert next(o.version for o in model.opset_import if o.domain == "") >= 19
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    qdq = _nodes(model, "QuantizeLinear") + _nodes(model, "DequantizeLinear")
    assert qdq and all(inits[n.input[2]].dtype == np.int8 and not inits[n.input[2]].any() for n in qdq)
    producer = {o: n for n in model.graph.node for o in n.output}
    for conv in _nodes(model, "Conv"):
        weight_dq = producer[conv.input[1]]
        assert weight_dq.op_type == "DequantizeLinear", conv.name
        assert helper.get_node_attr_value(weight_dq, "axis") == 0
        assert inits[weight_dq.input[1]].shape == (inits[weight_dq.input[0]].shape[0],)  # one scale per out channel
        bias = conv.input[2]
        while bias in producer and producer[bias].op_type == "Identity":
            bias = producer[bias].input[0]
        assert inits[bias].dtype == np.float32, conv.name  # bias not quantized
    norm = l2_norm_nodes(model)
    assert norm == [["/Pow", "/ReduceSum", "/Sqrt", "/Clip", "/Div", "/Mul"]]
    inside = {o for n in model.graph.node if n.name in norm[0][:-1] for o in n.output}
    assert not [n.name for n in qdq if n.input[0] in inside]
    assert [producer[o.name].op_type for o in model.graph.output] == ["Concat", "Concat"]
    heads, tail, qdq_after = output_tail(model)
    assert len(heads) == 12 and qdq_after == []
    head_outputs = {producer_out for n in model.graph.node if n.name in heads for producer_out in n.output}
    assert not [n.name for n in qdq if n.input[0] in head_outputs]


def test_float_parts_found_by_structure(runtime_onnx):
    model = onnx.load(str(runtime_onnx))
    by_name = {n.name: n for n in model.graph.node}
    (norm,) = l2_norm_nodes(model)
    assert [by_name[n].op_type for n in norm] == ["Pow", "ReduceSum", "Sqrt", "Clip", "Div", "Mul"]
    assert by_name[norm[0]].input[0] == by_name[norm[4]].input[0]  # x**2 ... x / norm: the same x
    heads, tail, qdq = output_tail(model)
    assert {by_name[n].op_type for n in tail} == {"Transpose", "Reshape", "Concat"} and qdq == []
    assert sorted(n.split("/")[2].split("_conv")[0] for n in heads) == ["cl"] * 6 + ["loc"] * 6


def _edit_first(model: onnx.ModelProto, op_type: str, edit) -> onnx.ModelProto:
    edit(next(n for n in model.graph.node if n.op_type == op_type), model)
    return model


def _set_initializer(model: onnx.ModelProto, name: str, array: np.ndarray) -> None:
    tensor = next(t for t in model.graph.initializer if t.name == name)
    tensor.CopyFrom(numpy_helper.from_array(array, name))


def _uint8_zero_point(node, model):
    _set_initializer(model, node.input[2], np.zeros((), np.uint8))


def _nonzero_zero_point(node, model):
    _set_initializer(model, node.input[2], np.full((), 3, np.int8))


def _weight_axis_1(node, model):
    weight_dq = next(n for n in model.graph.node if n.output[0] == node.input[1])
    next(a for a in weight_dq.attribute if a.name == "axis").i = 1


def _quantized_bias(node, model):
    model.graph.initializer.append(numpy_helper.from_array(np.zeros(1, np.int32), "bias_q"))
    model.graph.node.append(helper.make_node("DequantizeLinear", ["bias_q", node.input[1].replace(
        "_DequantizeLinear_Output", "_scale")], ["bias_dq"], name="bias_dq"))
    node.input[2] = "bias_dq"


def _qdq_pair_on(model: onnx.ModelProto, tensor: str) -> None:
    """Insert Q -> DQ (int8, scale 1, zero point 0) on ``tensor`` for all its consumers."""
    model.graph.initializer.extend([numpy_helper.from_array(np.ones((), np.float32), "t_scale"),
                                    numpy_helper.from_array(np.zeros((), np.int8), "t_zp")])
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name == tensor:
                node.input[i] = "t_dq"
    model.graph.node.extend([helper.make_node("QuantizeLinear", [tensor, "t_scale", "t_zp"], ["t_q"], name="t_Q"),
                             helper.make_node("DequantizeLinear", ["t_q", "t_scale", "t_zp"], ["t_dq"], name="t_DQ")])


MUTATIONS = {
    "uint8 zero point": (lambda m: _edit_first(m, "QuantizeLinear", _uint8_zero_point), "UINT8, not INT8"),
    "asymmetric": (lambda m: _edit_first(m, "QuantizeLinear", _nonzero_zero_point), "not 0 (asymmetric)"),
    "per-tensor weights": (lambda m: _edit_first(m, "Conv", _weight_axis_1), "not per output channel"),
    "quantized bias": (lambda m: _edit_first(m, "Conv", _quantized_bias), "bias 'bias_dq' is not a float32"),
    "quantized L2 norm": (lambda m: _qdq_pair_on(m, "/Sqrt_output_0") or m, "L2 norm"),
    "quantized head output": (lambda m: _qdq_pair_on(m, "/pred_convs/cl_conv7/Conv_output_0") or m,
                              "between the head convs and the graph outputs"),
    "old opset": (lambda m: m.opset_import[0].__setattr__("version", 17) or m, "opset 17 < 19"),
}


@pytest.mark.parametrize("mutation", MUTATIONS)
def test_checker_catches_each_violation(int8_models, mutation):
    mutate, message = MUTATIONS[mutation]
    model = onnx.load(int8_models["max"]["output"])
    violations = check_qdq_rules(mutate(model))
    assert any(message in v for v in violations), violations


# ------------------------------------------------------------------------- provenance and the runtime


def test_metadata_records_provenance(int8_models, runtime_onnx, manifest):
    report = int8_models["percentile"]
    info = read_onnx_info(report["output"])
    assert info.variant == "int8" and info.input_dtype == "float32" and info.opset == 19
    provenance = dict(info.spec.provenance)
    assert provenance["source_onnx_sha256"] == sha256_file(runtime_onnx)
    assert provenance["calibration_manifest_sha256"] == sha256_file(manifest)
    assert provenance["quantizer"] == QUANTIZER and provenance["quantizer_version"] == onnxruntime.__version__
    assert provenance["source_checkpoint_sha256"] == read_onnx_info(runtime_onnx).source_checkpoint_sha256
    settings = json.loads(provenance["quantization_settings"])
    assert settings["method"] == "percentile" and settings["percentile"] == 99.99
    assert settings["per_channel"] and settings["activation_symmetric"] and settings["weight_symmetric"]
    assert settings["quantize_bias"] is False
    assert settings["excluded_nodes"]["l2_norm"] == ["/Pow", "/ReduceSum", "/Sqrt", "/Clip", "/Div", "/Mul"]
    assert info.quantization["settings"] == settings
    assert info.quantization["source_onnx_sha256"] == provenance["source_onnx_sha256"]
    assert report["calibration"]["images"] == 8 and report["rules"]["violations"] == []
    assert Path(report["report_path"]).is_file() and "parity" not in report


def test_parity_is_reported_not_judged(int8_models):
    report = int8_models["max"]
    saved = json.loads(Path(report["report_path"]).read_text())
    parity = saved["parity"]
    assert parity["precision"] == "int8" and parity["spec_matches"]
    assert parity["backend"]["path"] == report["output"]
    assert all(stats["finite"] for stats in parity["outputs"].values())
    assert set(parity["detections"]) == {"detection", "evaluation"}


#: INT8 vs FP32 raw outputs, mean |difference| as a fraction of the output's range (max |FP32|), on the
#: generated test images. ONNX Runtime picks its INT8 kernels by instruction set, and the briefly trained
#: test model itself differs from CPU to CPU (its FP32 mAP on the 8 test images: 3.92 points trained with
#: torch's AVX-512 kernels, 1.97 with its AVX2 ones), so this is a bound on a property every CPU keeps, with
#: its measured spread (benchmarks/kernel_spread.py, results/kernel_spread_*.json; docs/development.md):
#: 7 test models (4-40 Adam steps, two of them trained through torch's AVX2 kernels), locs / logits at most
#: 0.63 % / 0.31 % with ONNX Runtime's AVX-512 VNNI kernels (AMD EPYC) and 0.77 % / 0.42 % with its AVX2 ones
#: (qemu -cpu Haswell). A broken quantization errs far more (locs, 3 of the models, AVX-512 VNNI): activation
#: scales 8x too coarse 3.9-4.4 %, clipped activations (scales 4x too fine) 9.9-12.6 %
#: (test_the_int8_bound_catches_a_broken_quantization).
INT8_MEAN_ERROR_OF_RANGE = 0.015
#: |INT8 - FP32| of each image's top detection score (the highest candidate score, which NMS never removes:
#: a continuous function of the raw outputs, whatever the ranking of near-tied candidates). Measured at most
#: 0.050 (AVX-512 VNNI) and 0.041 (AVX2) over the same 7 models.
INT8_TOP_SCORE_DIFF = 0.15


def _int8_errors(int8_path, fp32_path, images) -> tuple[list[float], list[float]]:
    """Mean |INT8 - FP32| of each raw output as a fraction of its range, and each image's top-score difference,
    through the runtime (the Detector's own preprocess, ONNX Runtime, the NumPy postprocess)."""
    from ssd_runtime.detector import Detector

    ours, theirs = Detector.load(int8_path), Detector.load(fp32_path)
    pixels = ours.prepare(images).pixels
    errors = [float(np.abs(a.astype(np.float64) - b).mean() / np.abs(b).max())
              for a, b in zip(ours.infer(pixels), theirs.infer(pixels))]
    top = [max(d.scores, default=0.0) for d in ours.detect(images)]
    reference_top = [max(d.scores, default=0.0) for d in theirs.detect(images)]
    return errors, [abs(float(a) - float(b)) for a, b in zip(top, reference_top)]


def test_runtime_runs_the_int8_model(int8_models, runtime_onnx, voc_root):
    from ssd_runtime.backends.onnxruntime import OrtBackend

    backend = OrtBackend(int8_models["max"]["output"])
    assert backend.variant == "int8" and backend.input_kind == "float32-nchw"
    images = sorted((voc_root / "JPEGImages").glob("*.jpg"))[:3]
    # not the top detection's box: among this barely trained model's near-tied candidates (scores 0.9285,
    # 0.9282, ...) which one ranks first moves with the CPU's kernels (a box 84.7 pixels away on an Intel
    # Xeon with AMX), in FP32 as well; what INT8 keeps on every CPU is the outputs' closeness and the top score
    errors, top_diffs = _int8_errors(int8_models["max"]["output"], runtime_onnx, images)
    assert max(errors) <= INT8_MEAN_ERROR_OF_RANGE, errors
    assert max(top_diffs) <= INT8_TOP_SCORE_DIFF, top_diffs


def _coarser_activations(path: str, factor: float, out: Path) -> Path:
    """The INT8 model with every activation scale (Q/DQ on a non-constant tensor) multiplied by ``factor``."""
    model = onnx.load(path)
    inits = {t.name: t for t in model.graph.initializer}
    scaled = set()
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and node.input[0] not in inits \
                and node.input[1] not in scaled:
            tensor = inits[node.input[1]]
            tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor) * factor, tensor.name))
            scaled.add(node.input[1])
    assert scaled
    onnx.save(model, str(out))
    return out


@pytest.mark.parametrize("factor", [8.0, 0.25])
def test_the_int8_bound_catches_a_broken_quantization(int8_models, runtime_onnx, voc_root, tmp_path, factor):
    broken = _coarser_activations(int8_models["max"]["output"], factor, tmp_path / "broken.onnx")
    images = sorted((voc_root / "JPEGImages").glob("*.jpg"))[:3]
    errors, _ = _int8_errors(broken, runtime_onnx, images)
    assert max(errors) > INT8_MEAN_ERROR_OF_RANGE, errors


def test_eval_reports_int8_precision_and_target(int8_models, runtime_checkpoint, voc_root, capsys):
    from ssd_runtime.cli import main as runtime_main

    code = runtime_main(["eval", "--model", int8_models["max"]["output"], "--data", str(voc_root),
                         "--checkpoint", str(runtime_checkpoint), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert report["precision"] == "int8" and report["target_points"] == 0.5
    # the delta is judged, not asserted: on the 8 generated test images the briefly trained model's INT8 delta
    # is noise of the CPU's kernels (+0.0005 points trained through torch's AVX-512 kernels, +1.93 through its
    # AVX2 ones; docs/development.md); INT8 accuracy itself is held by test_runtime_runs_the_int8_model's bound
    delta = (report["runtime"]["map"] - report["checkpoint"]["map"]) * 100
    assert report["delta_points"] == pytest.approx(delta, abs=1e-9)
    assert report["within_target"] == (abs(delta) <= 0.5) and code == (0 if report["within_target"] else 1)


# ------------------------------------------------------------------------------- refusals and writes


def _rewrite_metadata(src: Path, dst: Path, **values: str) -> Path:
    proto = onnx.load(str(src))
    props = {p.key: p.value for p in proto.metadata_props}
    props.update(values)
    del proto.metadata_props[:]
    helper.set_model_props(proto, {k: v for k, v in props.items() if v is not None})
    onnx.save(proto, str(dst))
    return dst


def _no_metadata(src: Path, dst: Path) -> Path:
    proto = onnx.load(str(src))
    del proto.metadata_props[:]
    onnx.save(proto, str(dst))
    return dst


E2E = json.dumps({"settings": {"min_score": 0.2, "max_overlap": 0.5, "top_k": 200}, "max_candidates": 4096})
REFUSALS = {
    "not a toolkit ONNX": (lambda src, dst: _no_metadata(src, dst), OnnxModelError, "not exported by this toolkit"),
    "end2end": (lambda src, dst: _rewrite_metadata(src, dst, **{META_VARIANT: "end2end", META_END2END: E2E}),
                Int8Error, "quantize the network, not the NMS: export --variant fp32"),
    "fp16": (lambda src, dst: _rewrite_metadata(src, dst, **{META_VARIANT: "fp16"}), Int8Error, "variant fp16"),
    "uint8-nhwc": (lambda src, dst: _rewrite_metadata(src, dst, **{META_VARIANT: "uint8-nhwc"}), Int8Error,
                   "variant uint8-nhwc"),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_refusals_name_the_file_and_write_nothing(case, runtime_onnx, manifest, tmp_path):
    make, error, message = REFUSALS[case]
    source = make(runtime_onnx, tmp_path / "source.onnx")
    with pytest.raises(error, match=message) as caught:
        quantize_int8(source, manifest, tmp_path / "out.onnx", parity=False)
    assert str(source) in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["source.onnx"]


def test_refuses_an_already_quantized_model(int8_models, manifest, tmp_path):
    with pytest.raises(Int8Error, match="already quantized") as caught:
        quantize_int8(int8_models["max"]["output"], manifest, tmp_path / "again.onnx")
    assert int8_models["max"]["output"] in str(caught.value) and not list(tmp_path.iterdir())


def test_refuses_another_class_list(voc_root, runtime_onnx, tmp_path):
    spec = read_onnx_info(runtime_onnx).spec
    data = json.loads(Path(write_manifest(_manifest_of(voc_root, spec), tmp_path / "m.json")).read_text())
    data["class_names"] = [*data["class_names"][:-1], "unicorn"]
    (tmp_path / "m.json").write_text(json.dumps(data))
    with pytest.raises(CalibrationError, match="unicorn") as caught:
        quantize_int8(runtime_onnx, tmp_path / "m.json", tmp_path / "out.onnx")
    assert str(runtime_onnx) in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


def _manifest_of(voc_root: Path, spec) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_manifest(voc_root, split="trainval", images=8, seed=0, spec=spec)


def test_changed_calibration_image_writes_nothing(voc_root, runtime_onnx, tmp_path):
    import shutil

    root = tmp_path / "voc"
    shutil.copytree(voc_root, root)
    manifest = write_manifest(_manifest_of(root, read_onnx_info(runtime_onnx).spec), tmp_path / "m.json")
    first = root / json.loads(manifest.read_text())["images"][0]["path"]
    first.write_bytes(first.read_bytes() + b"\0")
    out = tmp_path / "out" / "int8.onnx"
    with pytest.raises(CalibrationError, match="changed"):
        quantize_int8(runtime_onnx, manifest, out)
    assert not out.exists() and (not out.parent.exists() or not list(out.parent.iterdir()))


def test_rule_violation_fails_and_leaves_the_old_file(runtime_onnx, manifest, tmp_path, monkeypatch):
    import ssd_export.int8.quantize as int8

    out = tmp_path / "int8.onnx"
    out.write_bytes(b"previous")
    monkeypatch.setattr(int8, "check_tensorrt_rules", lambda model, **_: ["a Q/DQ pair where TensorRT takes none"])
    with pytest.raises(Int8Error, match="breaks TensorRT's rules.*nothing was written"):
        quantize_int8(runtime_onnx, manifest, out, parity=False)
    assert out.read_bytes() == b"previous" and _leftovers(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["int8.onnx"]


def test_bad_arguments(runtime_onnx, manifest, tmp_path):
    with pytest.raises(Int8Error, match="unknown calibration method"):
        quantize_int8(runtime_onnx, manifest, tmp_path / "a.onnx", method="mse")
    with pytest.raises(Int8Error, match="percentile must be"):
        quantize_int8(runtime_onnx, manifest, tmp_path / "a.onnx", method="percentile", percentile=0)
    with pytest.raises(Int8Error, match="does not have: /nope"):
        quantize_int8(runtime_onnx, manifest, tmp_path / "a.onnx", exclude=["/nope"])
    with pytest.raises(Int8Error, match="overwrite its fp32 source"):
        quantize_int8(runtime_onnx, manifest, runtime_onnx)
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------------------- the CLI


def test_cli_int8_with_exclude(runtime_onnx, manifest, tmp_path, capsys):
    from ssd_export.cli import main

    out = tmp_path / "cli_int8.onnx"
    assert main(["int8", "--onnx", str(runtime_onnx), "--calibration", str(manifest), "-o", str(out),
                 "--exclude", "/base/conv1_1/Conv", "--no-parity", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["settings"]["excluded_nodes"]["user"] == ["/base/conv1_1/Conv"]
    model = onnx.load(str(out))
    conv1 = next(n for n in model.graph.node if n.name == "/base/conv1_1/Conv")
    assert conv1.input[:2] == ["images", "base.conv1_1.weight"]  # kept in float, as asked
    assert check_qdq_rules(model, float_nodes=["/base/conv1_1/Conv"]) == []
    assert main(["int8", "--onnx", str(out), "--calibration", str(manifest), "-o", str(tmp_path / "x.onnx")]) == 2
    assert "already quantized" in capsys.readouterr().err and not (tmp_path / "x.onnx").exists()


def test_quantizers_are_chosen_in_one_table():
    from ssd_export.defaults import QUANTIZERS
    from ssd_export.int8.quantize import QUANTIZER_TABLE

    # every name the CLI offers (--quantizer) has its quantizer, and no other name does
    assert tuple(QUANTIZER_TABLE) == QUANTIZERS
    ort = QUANTIZER_TABLE["onnxruntime"]("max")
    assert ort.name == QUANTIZER and ort.version == onnxruntime.__version__ and ort.searchable
    assert not QUANTIZER_TABLE["modelopt"].searchable  # the search reads ONNX Runtime's graph


def test_cli_choices_and_defaults_come_from_the_library():
    from ssd_export.cli import build_parser

    args = build_parser().parse_args(["int8", "--onnx", "m.onnx", "--calibration", "c.json", "-o", "q.onnx"])
    defaults = quantize_int8.__kwdefaults__
    for flag in ("method", "percentile", "batch_size", "data_root"):
        assert getattr(args, flag) == defaults[flag], flag


def test_cli_int8_text_report(int8_models, runtime_onnx, manifest, tmp_path, capsys, monkeypatch):
    import copy

    import ssd_export.int8.quantize as int8
    from ssd_export.cli import main

    # the parity itself is tested above (int8_models["max"]); its ~6 s detection comparison is not rerun here
    monkeypatch.setattr(int8, "check_parity", lambda *_, **__: copy.deepcopy(int8_models["max"]["parity"]))
    out = tmp_path / "int8.onnx"
    assert main(["int8", "--onnx", str(runtime_onnx), "--calibration", str(manifest), "-o", str(out),
                 "--method", "percentile", "--percentile", "99.9"]) == 0
    text = capsys.readouterr().out
    assert f"wrote {out}" in text and "percentile 99.9" in text and "TensorRT Q/DQ rules: passed" in text
    assert "parity with the fp32 source" in text and "detections (evaluation)" in text
    assert f"report: {out}.int8.json" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["int8.onnx", "int8.onnx.int8.json"]
