"""TensorRT's ONNX-parser rules (ssd_export/tensorrt_rules.py) on every exported variant and on broken graphs.

TensorRT cannot run here: these tests hold the exported graphs to the rules read from NVIDIA's sources
(cited in the module) and check that each rule catches the graph that breaks it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from ssd_export.tensorrt_rules import MAX_TOPK_K, TensorRTRuleError, check_tensorrt_rules


def _load(path: Path) -> onnx.ModelProto:
    return onnx.load(str(path))


def _uint8_tensors(model: onnx.ModelProto) -> set[str]:
    inferred = onnx.shape_inference.infer_shapes(model)
    infos = [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]
    return {i.name for i in infos if i.type.tensor_type.elem_type == TensorProto.UINT8}


# ------------------------------------------------------------------------------------- uint8-nhwc


def test_uint8_input_is_cast_before_anything_else(engine_sources):
    """The UINT8 images are read by one Cast to float and nothing else; no other tensor is UINT8
    (onnx-tensorrt refuses a UINT8 intermediate tensor: the Transpose used to come first)."""
    model = _load(engine_sources["uint8-nhwc"])
    consumers = [n for n in model.graph.node if "images" in n.input]
    assert [n.op_type for n in consumers] == ["Cast"], [(n.name, n.op_type) for n in consumers]
    assert consumers[0].attribute[0].i == TensorProto.FLOAT
    assert _uint8_tensors(model) == {"images"}
    assert check_tensorrt_rules(model) == []


# ------------------------------------------------------------------------------------- every variant

VARIANTS = ("fp32", "fp16", "uint8-nhwc", "end2end", "int8", "static")


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_exported_variant_passes(engine_sources, variant):
    from ssd_export.onnx.verify import tensorrt_rules_report

    report = tensorrt_rules_report(engine_sources[variant])
    assert report["violations"] == [], report


def test_end2end_nms_output_sizes_nothing(engine_sources):
    """Nothing downstream of NonMaxSuppression's data-dependent output takes its Shape or fills a tensor
    sized by it (the Shape -> ConstantOfShape pattern users report failing in TensorRT)."""
    model = _load(engine_sources["end2end"])
    nms = next(n for n in model.graph.node if n.op_type == "NonMaxSuppression")
    tainted, readers = {nms.output[0]}, []
    for node in model.graph.node:  # topological order
        if tainted & set(node.input):
            readers.append(node.op_type)
            if node.op_type != "ScatterND":  # its output has the (batch-only) shape of its data input
                tainted.update(node.output)
    assert "ScatterND" in readers  # the mask is still scattered from it
    assert not {"Shape", "ConstantOfShape", "Expand", "Slice"} & set(readers), readers


# ------------------------------------------------------------------------------------- broken graphs


def _node(model: onnx.ModelProto, op_type: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.op_type == op_type)


def _init(model: onnx.ModelProto, name: str) -> onnx.TensorProto:
    return next(t for t in model.graph.initializer if t.name == name)


def _set_init(model: onnx.ModelProto, name: str, value: np.ndarray) -> onnx.ModelProto:
    _init(model, name).CopyFrom(numpy_helper.from_array(value, name))
    return model


def _cast_pair_after(model: onnx.ModelProto, op_type: str, dtype: int) -> onnx.ModelProto:
    """Route the first ``op_type`` output through Cast(dtype) -> Cast(FLOAT) (Faster R-CNN's UINT8 casts)."""
    node = _node(model, op_type)
    tensor = node.output[0]
    node.output[0] = f"{tensor}_pre"
    index = list(model.graph.node).index(node) + 1
    model.graph.node.insert(index, helper.make_node("Cast", [f"{tensor}_pre"], [f"{tensor}_mid"], "broken_cast", to=dtype))
    model.graph.node.insert(index + 1, helper.make_node("Cast", [f"{tensor}_mid"], [tensor], "broken_back",
                                                        to=TensorProto.FLOAT))
    return model


def _set_attr(model: onnx.ModelProto, op_type: str, **attrs) -> onnx.ModelProto:
    _node(model, op_type).attribute.extend([helper.make_attribute(k, v) for k, v in attrs.items()])
    return model


def _retype(model: onnx.ModelProto, op_type: str, new_type: str) -> onnx.ModelProto:
    _node(model, op_type).op_type = new_type
    return model


def _cast_input_to(model: onnx.ModelProto, to: int) -> onnx.ModelProto:
    for attr in _node(model, "Cast").attribute:
        if attr.name == "to":
            attr.i = to
    return model


def _drop_input(model: onnx.ModelProto, op_type: str, index: int) -> onnx.ModelProto:
    node = _node(model, op_type)
    del node.input[index:]
    return model


def _computed_input(model: onnx.ModelProto, op_type: str, index: int, tensor: str) -> onnx.ModelProto:
    _node(model, op_type).input[index] = tensor
    return model


#: (source variant, mutation, text the violation must contain)
MUTATIONS = {
    "unsupported op": ("fp32", lambda m: _retype(m, "Relu", "Det"), "op Det is not among"),
    "custom domain": ("fp32", lambda m: _node(m, "Relu").__setattr__("domain", "com.example") or m,
                      "domain 'com.example'"),
    "opset 21": ("fp32", lambda m: m.opset_import[0].__setattr__("version", 21) or m, "opset 21 outside"),
    "uint8 intermediate": ("fp32", lambda m: _cast_pair_after(m, "Relu", TensorProto.UINT8),
                           "produces the UINT8 tensor"),
    "uint8 input not cast to float": ("uint8-nhwc", lambda m: _cast_input_to(m, TensorProto.INT32),
                                      "converts UINT8 only to FLOAT/FLOAT16"),
    "double": ("fp32", lambda m: _cast_pair_after(m, "Relu", TensorProto.DOUBLE), "is DOUBLE"),
    "maxpool indices": ("fp32", lambda m: _node(m, "MaxPool").output.append("indices") or m, "Indices output"),
    "topk k above 3840": ("end2end", lambda m: _set_init(m, "e2e_top_k", np.array([MAX_TOPK_K + 1], np.int64)),
                          f"TopK K={MAX_TOPK_K + 1}"),
    "topk cap above 3840": ("end2end", lambda m: _set_init(m, "e2e_cap", np.array([MAX_TOPK_K + 1], np.int64)),
                            f"K={MAX_TOPK_K + 1}"),
    "topk unsorted": ("end2end", lambda m: _set_attr(m, "TopK", sorted=0), "sorted=0"),
    "topk computed k": ("end2end", lambda m: _computed_input(m, "TopK", 1, "e2e_scores_shape"),
                        "must be an initializer or Constant"),
    "nms iou above 1": ("end2end", lambda m: _set_init(m, "e2e_iou_threshold", np.array([1.5], np.float32)),
                        "iou_threshold=1.5"),
    "nms no boxes": ("end2end", lambda m: _set_init(m, "e2e_max_per_class", np.array([0], np.int64)),
                     "max_output_boxes_per_class=0"),
    "nms missing threshold": ("end2end", lambda m: _drop_input(m, "NonMaxSuppression", 4),
                              "without score_threshold"),
    "nms computed threshold": ("end2end", lambda m: _computed_input(m, "NonMaxSuppression", 3, "e2e_kth"),
                               "input 3 ('e2e_kth') must be an initializer"),
    "scatternd reduction": ("end2end", lambda m: _set_attr(m, "ScatterND", reduction="none"),
                            "ScatterND with a reduction"),
}


def _int64_clip(model: onnx.ModelProto) -> onnx.ModelProto:
    """INT64 into Clip (TensorRT's Clip takes float types only)."""
    clip = _node(model, "Clip")
    source = clip.input[0]
    index = list(model.graph.node).index(clip)
    model.graph.node.insert(index, helper.make_node("Cast", [source], [f"{source}_i64"], "broken_i64",
                                                    to=TensorProto.INT64))
    clip.input[0] = f"{source}_i64"
    return model


def _uint8_zero_point(model: onnx.ModelProto) -> onnx.ModelProto:
    node = _node(model, "QuantizeLinear")
    zero = _init(model, node.input[2])
    zero.CopyFrom(numpy_helper.from_array(np.zeros(list(zero.dims), np.uint8), zero.name))
    return model


MUTATIONS["int64 into a float-only op"] = ("fp32", _int64_clip, "Clip input")
MUTATIONS["qdq uint8 zero point"] = ("int8", _uint8_zero_point, "UINT8, not INT8")


@pytest.mark.parametrize("mutation", MUTATIONS)
def test_each_rule_catches_its_broken_graph(engine_sources, mutation):
    variant, mutate, message = MUTATIONS[mutation]
    model = _load(engine_sources[variant])
    assert check_tensorrt_rules(model) == [] or variant == "int8"
    violations = check_tensorrt_rules(mutate(model))
    print(mutation, violations)
    assert any(message in v for v in violations), violations


# ------------------------------------------------------------------------------------- refused at export


def test_export_refuses_a_broken_graph(runtime_checkpoint, tmp_path, monkeypatch):
    """A graph breaking a rule (here a UINT8 intermediate) is refused by name; nothing is written and an
    existing file stays as it was."""
    from ssd_export.onnx import export as onnx_export

    original = onnx_export._set_output_shapes

    def broken(proto, batch, spec):
        original(proto, batch, spec)
        _cast_pair_after(proto, "Relu", TensorProto.UINT8)

    monkeypatch.setattr(onnx_export, "_set_output_shapes", broken)
    out = tmp_path / "broken.onnx"
    out.write_bytes(b"previous")
    with pytest.raises(TensorRTRuleError, match="broken_cast: Cast produces the UINT8 tensor"):
        onnx_export.export_onnx(runtime_checkpoint, out, verify=False)
    assert out.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.onnx"]


def test_int8_refuses_a_broken_graph(runtime_onnx, calibration_manifest, tmp_path, monkeypatch):
    """The INT8 path checks the parser rules too (beside the Q/DQ rules): a UINT8 intermediate is refused."""
    from ssd_export.int8 import quantize as int8

    original = int8.strip_qdq

    def broken(model, tensors):
        removed = original(model, tensors)
        _cast_pair_after(model, "Relu", TensorProto.UINT8)
        return removed

    monkeypatch.setattr(int8, "strip_qdq", broken)
    out = tmp_path / "int8.onnx"
    with pytest.raises(int8.Int8Error, match="produces the UINT8 tensor"):
        int8.quantize_int8(runtime_onnx, calibration_manifest, out, parity=False)
    assert not out.exists()


@pytest.mark.parametrize("setting", ["top_k", "max_candidates"])
def test_end2end_export_refuses_topk_above_3840(runtime_checkpoint, tmp_path, setting):
    from ssd_export.onnx.end2end import End2EndLimitError
    from ssd_export.onnx.export import export_onnx
    from ssd_runtime.spec import PostprocessSettings
    from ssd_train.checkpoint import load_model

    _, spec = load_model(runtime_checkpoint)
    kwargs = ({"end2end_settings": PostprocessSettings(0.2, 0.5, MAX_TOPK_K + 1)} if setting == "top_k"
              else {"max_candidates": MAX_TOPK_K + 1})
    assert (spec.num_classes - 1) * spec.num_priors > MAX_TOPK_K + 1  # a cap that puts a TopK in the graph
    out = tmp_path / "e2e.onnx"
    with pytest.raises(End2EndLimitError, match=f"{setting} {MAX_TOPK_K + 1} .*k <= {MAX_TOPK_K}"):
        export_onnx(runtime_checkpoint, out, variant="end2end", verify=False, **kwargs)
    assert not out.exists()


def test_cli_refuses_max_candidates_above_3840(runtime_checkpoint, tmp_path, capsys):
    from ssd_export.cli import main

    out = tmp_path / "e2e.onnx"
    code = main(["onnx", "--checkpoint", str(runtime_checkpoint), "-o", str(out), "--variant", "end2end",
                 "--max-candidates", "5000", "--no-verify"])
    err = capsys.readouterr().err
    assert code == 2 and "--max-candidates <= 3840" in err and "TensorRT's TopK" in err, err
    assert not out.exists()


def test_end2end_limits_at_the_edges():
    from ssd_export.onnx.end2end import End2EndLimitError, check_end2end_limits

    sizes = {"num_priors": 8732, "num_classes": 21}  # (C-1)*P = 174,640
    check_end2end_limits(200, MAX_TOPK_K, **sizes)  # the defaults
    check_end2end_limits(MAX_TOPK_K, MAX_TOPK_K, **sizes)  # k = 3840 itself is allowed (NvInfer.h)
    check_end2end_limits(200, 174_640, **sizes)  # no cap: no cap TopK in the graph
    check_end2end_limits(5000, 3000, num_priors=100, num_classes=21)  # top_k above (C-1)*P: TopK of 2000
    for top_k, cap in ((MAX_TOPK_K + 1, 100), (200, MAX_TOPK_K + 1), (200, 174_639), (0, 100)):
        with pytest.raises(End2EndLimitError):
            check_end2end_limits(top_k, cap, **sizes)


# ------------------------------------------------------------------------------------- ssd-export verify


def test_verify_reports_violations(engine_sources, runtime_checkpoint, tmp_path, capsys):
    from ssd_export.cli import main

    broken = tmp_path / "broken.onnx"
    # a cap of 3841 candidates: ONNX Runtime runs it, TensorRT's TopK would not
    onnx.save(_set_init(_load(engine_sources["end2end"]), "e2e_cap", np.array([MAX_TOPK_K + 1], np.int64)),
              str(broken))
    code = main(["verify", "--model", str(broken), "--checkpoint", str(runtime_checkpoint), "--json"])
    report = __import__("json").loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 1 and not report["passed"]
    assert any(f"TopK K={MAX_TOPK_K + 1}" in v for v in report["tensorrt_rules"]["violations"])
    assert any(f.startswith("TensorRT rule: e2e_cap_values") for f in report["failures"]), report["failures"]
