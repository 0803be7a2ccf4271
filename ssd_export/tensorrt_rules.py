"""TensorRT's ONNX-parser rules checked on an exported graph alone (no TensorRT, no GPU, no ONNX Runtime).

:func:`check_tensorrt_rules` returns the violations (an empty list for a good graph), each naming the node
or tensor; :func:`require_tensorrt_rules` raises :class:`TensorRTRuleError` instead. Every export path
runs it before anything is written (:mod:`ssd_export.onnx.export`, :mod:`ssd_export.int8.quantize`) and
``ssd-export verify`` runs it on any ONNX file.

TensorRT cannot be installed here, so every rule comes from NVIDIA's sources, each cited where it is
checked. "10.1-GA" means onnx/onnx-tensorrt at tag ``release/10.1-GA`` (the newest parser source readable
with git here; the parser of TensorRT 10.3 .. 11.x is a submodule of NVIDIA/TensorRT at the
``release/*`` branches, not mirrored); "NvInfer.h 10.3" / "11.1" means ``include/NvInfer.h`` of
NVIDIA/TensorRT ``release/10.3`` / ``release/11.1``. The releases the toolkit claims are 10.3 .. 11.x;
where a rule comes from an older file the newer headers were checked to say the same (noted below).

Rules:

1. opset within the parser's range;
2. ops: every node is one of the ops this toolkit's exporters emit (:data:`SUPPORTED_OPS`), in the
   standard domain, each supported by the parser, with its data input of a type the parser's table lists
   for it and with the op's documented restrictions (constant ``axes``, TopK ``sorted``, MaxPool without
   ``Indices``, ScatterND without ``reduction``, ...);
3. UINT8 only at graph inputs and outputs, a UINT8 input consumed only by a Cast to float;
4. TopK: ``K`` a constant, 1 <= K <= :data:`MAX_TOPK_K`;
5. NonMaxSuppression: ``max_output_boxes_per_class``, ``iou_threshold`` and ``score_threshold`` present as
   constants, within ``INMSLayer``'s limits;
6. INT64: taken wherever the op's table lists INT64 (TensorRT 10 has ``kINT64``), an error where it does
   not (part of rule 2's type check) and for DOUBLE anywhere;
7. a graph with Q/DQ nodes: TensorRT's explicit-quantization rules,
   :func:`ssd_export.qdq_rules.check_qdq_rules`.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto

from ssd_export.qdq_rules import QDQ_OPS, _Graph, check_qdq_rules

__all__ = [
    "MAX_OPSET",
    "MAX_TOPK_K",
    "MIN_OPSET",
    "NMS_TOPK_BOX_LIMIT",
    "SUPPORTED_OPS",
    "OpRule",
    "TensorRTRuleError",
    "check_tensorrt_rules",
    "declared_float_nodes",
    "require_tensorrt_rules",
]

#: TopK's largest K. NvInfer.h 10.3 lines 3546 ("Currently only values up to 3840 are supported") and 3602
#: ("Values larger than 3840 will result in a runtime error"), the same at 11.1 lines 3448 / 3504.
#: onnx-tensorrt 10.1-GA docs/operators.md line 207 words it "must be less than 3840"; the header, which
#: the layer enforces, allows 3840 itself.
MAX_TOPK_K = 3840
#: INMSLayer considers at most this many highest-scoring boxes per image (2000 on SM 5.3 / 6.2, the
#: Jetson Nano and TX2): NvInfer.h 10.3 lines 5974-5975 (class INMSLayer, \warning), 11.1 lines 6229-6230.
NMS_TOPK_BOX_LIMIT = 5000
#: Parser opset range: onnx-tensorrt 10.1-GA docs/operators.md line 5 ("opset 9 to opset 20"); later
#: tables widen the top (10.15: 24), so the oldest claimed parser's bound holds for all.
MIN_OPSET, MAX_OPSET = 9, 20

_F = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16)
_I = (TensorProto.INT32, TensorProto.INT64)
_B = (TensorProto.BOOL,)


@dataclass(frozen=True)
class OpRule:
    """One op as onnx-tensorrt 10.1-GA docs/operators.md lists it (``line`` in that file).

    types: the "Supported Types" column, checked on the inputs named by ``typed_inputs`` (the data
    inputs; index tensors such as Gather's indices or Reshape's shape are not what the column means);
    const_inputs: input indices that must be constants (initializers or Constant outputs) when present.
    """

    types: tuple[int, ...]
    line: int
    typed_inputs: tuple[int, ...] = (0,)
    const_inputs: tuple[int, ...] = ()


#: Every op the toolkit's exporters emit (torch.onnx TorchScript and dynamo at opset 19, the end2end tail
#: of :mod:`ssd_export.onnx.end2end`, ONNX Runtime's and ModelOpt's Q/DQ), with its row of onnx-tensorrt
#: 10.1-GA docs/operators.md. A new op in an export fails rule 2 until its row is read and added here.
SUPPORTED_OPS: dict[str, OpRule] = {
    "Add": OpRule(_F + _I, 22, (0, 1)),
    "Cast": OpRule(_F + _I + (TensorProto.UINT8,) + _B, 40),
    "Clip": OpRule(_F, 46),
    "Concat": OpRule(_F + _I + _B, 48),
    "Constant": OpRule(_F + _I + _B, 50, ()),
    "ConstantOfShape": OpRule(_F + _I + _B, 51, ()),
    "Conv": OpRule(_F, 52),
    "DequantizeLinear": OpRule((TensorProto.INT8,), 61),
    "Div": OpRule(_F + _I, 63, (0, 1)),
    "Exp": OpRule(_F, 70),
    "Expand": OpRule(_F + _I + _B, 71),
    "Flatten": OpRule(_F + _I + _B, 73),
    "Gather": OpRule(_F + _I + _B, 75),
    "GatherElements": OpRule(_F + _I + _B, 76),
    "Greater": OpRule(_F + _I, 83, (0, 1)),
    "GreaterOrEqual": OpRule(_F + _I, 84, (0, 1)),
    "Identity": OpRule(_F + _I + _B, 93),
    "MaxPool": OpRule(_F, 114),
    "Mod": OpRule(_F + _I, 122, (0, 1)),
    "Mul": OpRule(_F + _I, 123, (0, 1)),
    "NonMaxSuppression": OpRule((TensorProto.FLOAT, TensorProto.FLOAT16), 127, (0, 1), (2, 3, 4)),
    "Pow": OpRule(_F, 137),
    "QuantizeLinear": OpRule(_F, 141),
    "ReduceSum": OpRule(_F + _I, 156, (0,), (1,)),
    "Relu": OpRule(_F + _I, 159),
    "Reshape": OpRule(_F + _I + _B, 160),
    "ScatterND": OpRule(_F + _I, 171, (0, 2)),
    "Shape": OpRule(_F + _I + _B, 180),
    "Slice": OpRule(_F + _I + _B, 187, (0,), (3,)),
    "Softmax": OpRule(_F, 188),
    "Sqrt": OpRule(_F, 195),
    "Squeeze": OpRule(_F + _I + _B, 196, (0,), (1,)),
    "Sub": OpRule(_F + _I, 200, (0, 1)),
    "TopK": OpRule(_F + _I, 207, (0,), (1,)),
    "Transpose": OpRule(_F + _I + _B, 208),
    "Unsqueeze": OpRule(_F + _I + _B, 211, (0,), (1,)),
    "Where": OpRule(_F + _I + _B, 213, (1, 2)),
}

#: Float types a UINT8 input may be cast to: NvInferRuntimeBase.h 10.3 lines 150-163 (kUINT8 "conversions
#: are only supported for {kFLOAT, kHALF}"; "Use the IdentityLayer to convert kUINT8 network-level inputs
#: to {kFLOAT, kHALF} prior to use with other TensorRT layers").
_UINT8_CAST_TARGETS = (TensorProto.FLOAT, TensorProto.FLOAT16)


class TensorRTRuleError(ValueError):
    """An exported graph breaks a TensorRT ONNX-parser rule (the message names the node); nothing was written."""


def declared_float_nodes(quantization: dict | None) -> list[str]:
    """The Convs an INT8 model's metadata (``ssd300.quantization``) declares kept in float on purpose.

    The ``excluded_nodes`` lists other than the parts every toolkit INT8 model keeps in float (the L2 norm,
    the output tail and the head convs' outputs, which :func:`~ssd_export.qdq_rules.check_qdq_rules` finds
    by structure): ``user`` (--exclude), ``sensitive`` (the search), ``modelopt`` (ModelOpt's own).
    """
    excluded = ((quantization or {}).get("settings") or {}).get("excluded_nodes") or {}
    by_structure = {"l2_norm", "output_tail", "float_output_convs"}
    return [name for key, names in excluded.items() if key not in by_structure for name in names]


def require_tensorrt_rules(model: onnx.ModelProto, where: str, *, float_nodes: Sequence[str] = ()) -> None:
    """Raise :class:`TensorRTRuleError` naming ``where`` (a path) and the first violations, if any."""
    violations = check_tensorrt_rules(model, float_nodes=float_nodes)
    if violations:
        shown = "; ".join(violations[:5]) + ("; ..." if len(violations) > 5 else "")
        raise TensorRTRuleError(
            f"{where}: the graph breaks {len(violations)} TensorRT parser rule(s) ({shown}); nothing was written. "
            "TensorRT 10.3-11.x would refuse it: change the export settings the message names, or report the "
            "node if it came from the exporter itself")


def check_tensorrt_rules(model: onnx.ModelProto, *, float_nodes: Sequence[str] = ()) -> list[str]:
    """The violations of TensorRT's ONNX-parser rules (module doc) in ``model``; empty when it parses.

    ``float_nodes``: Q/DQ graphs only, the nodes deliberately kept in float (passed to
    :func:`~ssd_export.qdq_rules.check_qdq_rules`).
    """
    g = _Graph(model)
    types = _element_types(model)
    violations: list[str] = []
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if not MIN_OPSET <= opset <= MAX_OPSET:
        violations.append(f"opset {opset} outside the parser's {MIN_OPSET}..{MAX_OPSET} "
                          "(onnx-tensorrt 10.1-GA docs/operators.md line 5)")
    for node in model.graph.node:
        violations.extend(_node_violations(g, types, node))
    violations.extend(_uint8_violations(model, g, types))
    # DOUBLE: "limited support", cast down to FLOAT (10.1-GA docs/operators.md line 9); our exporters never
    # emit it, so one is a bug that would change the numbers on TensorRT.
    violations.extend(f"tensor {name!r} is DOUBLE (TensorRT casts it to FLOAT)"
                      for name, dtype in types.items() if dtype == TensorProto.DOUBLE)
    if any(node.op_type in QDQ_OPS for node in model.graph.node):
        violations.extend(check_qdq_rules(model, float_nodes=float_nodes))
    return violations


def _element_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor: graph I/O, initializers, Constant outputs and inferred value_info."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # a graph shape inference cannot read: the declared types are still checked
        inferred = model
    types: dict[str, int] = {}
    for info in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        if info.type.HasField("tensor_type") and info.type.tensor_type.elem_type:
            types[info.name] = info.type.tensor_type.elem_type
    types.update({t.name: t.data_type for t in model.graph.initializer})
    for node in model.graph.node:
        for attr in node.attribute:
            if node.op_type == "Constant" and attr.name == "value":
                types[node.output[0]] = attr.t.data_type
            elif node.op_type == "Cast" and attr.name == "to":  # known even where inference gave up
                types[node.output[0]] = attr.i
    return types


def _type_name(dtype: int | None) -> str:
    return "unknown" if dtype is None else TensorProto.DataType.Name(dtype)


def _node_violations(g: _Graph, types: dict[str, int], node: onnx.NodeProto) -> list[str]:
    """Rule 2 (op, domain, types, restrictions) and rules 4-5 (TopK, NMS) for one node."""
    name = node.name or f"<unnamed {node.op_type}>"
    if node.domain not in ("", "ai.onnx") and node.op_type not in QDQ_OPS:
        return [f"{name}: {node.op_type} in domain {node.domain!r} (not a standard ONNX op; the parser would look "
                "for a plugin)"]
    rule = SUPPORTED_OPS.get(node.op_type)
    if rule is None:
        return [f"{name}: op {node.op_type} is not among the ops this toolkit checks against TensorRT's parser "
                f"({', '.join(sorted(SUPPORTED_OPS))}); read its row in onnx-tensorrt docs/operators.md first"]
    out: list[str] = []
    for i in rule.typed_inputs:
        if i < len(node.input) and node.input[i]:
            dtype = types.get(node.input[i])
            if dtype is not None and dtype not in rule.types:
                out.append(f"{name}: {node.op_type} input {node.input[i]!r} is {_type_name(dtype)}; TensorRT's "
                           f"{node.op_type} takes {', '.join(_type_name(t) for t in rule.types)} "
                           f"(onnx-tensorrt 10.1-GA docs/operators.md line {rule.line})")
    for i in rule.const_inputs:
        if i < len(node.input) and node.input[i] and g.constant(node.input[i]) is None:
            out.append(f"{name}: {node.op_type} input {i} ({node.input[i]!r}) must be an initializer or Constant "
                       f"(onnx-tensorrt 10.1-GA docs/operators.md line {rule.line})")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "Cast" and attrs.get("to") not in rule.types:
        out.append(f"{name}: Cast to {_type_name(attrs.get('to'))} (onnx-tensorrt 10.1-GA docs/operators.md line 40)")
    elif node.op_type == "Constant" and {"sparse_value", "value_string", "value_strings"} & attrs.keys():
        out.append(f"{name}: Constant with a sparse or string value (10.1-GA docs/operators.md line 50)")
    elif node.op_type == "MaxPool":
        # 10.1-GA docs/operators.md line 114: 2D/3D only, no Indices output, dilations empty or all ones
        if len(node.output) > 1 and node.output[1]:
            out.append(f"{name}: MaxPool with an Indices output (10.1-GA docs/operators.md line 114)")
        if any(d != 1 for d in attrs.get("dilations", [])):
            out.append(f"{name}: MaxPool dilations {attrs['dilations']} (must be all ones, line 114)")
        if len(attrs.get("kernel_shape", [0, 0])) not in (2, 3):
            out.append(f"{name}: MaxPool over {len(attrs['kernel_shape'])} spatial dims (2D/3D only, line 114)")
    elif node.op_type == "ScatterND" and "reduction" in attrs:
        # 10.1-GA docs/operators.md line 171 ("`reduction` is not supported"); TensorRT 10's trtexec refuses
        # even reduction="none" (microsoft/onnxruntime#17434, 2025-02-13, reported to NVIDIA), so none at all.
        out.append(f"{name}: ScatterND with a reduction attribute ({attrs['reduction']!r}; TensorRT takes none)")
    elif node.op_type == "TopK":
        out.extend(_topk_violations(g, node, name, attrs))
    elif node.op_type == "NonMaxSuppression":
        out.extend(_nms_violations(g, node, name, attrs))
    return out


def _topk_violations(g: _Graph, node: onnx.NodeProto, name: str, attrs: dict) -> list[str]:
    """Rule 4: ``sorted`` 1 (10.1-GA docs/operators.md line 207) and a constant K within :data:`MAX_TOPK_K`."""
    out: list[str] = []
    if attrs.get("sorted", 1) != 1:
        out.append(f"{name}: TopK sorted=0 (TensorRT's TopK output is always sorted; line 207 requires 1)")
    k = g.constant(node.input[1]) if len(node.input) > 1 else None
    if k is None:
        return out  # not a constant: reported by the const_inputs check
    k_value = int(np.asarray(k).reshape(-1)[0])
    if not 1 <= k_value <= MAX_TOPK_K:
        out.append(f"{name}: TopK K={k_value}; TensorRT's TopK takes 1 <= K <= {MAX_TOPK_K} "
                   "(NvInfer.h 10.3 lines 3546/3602, 11.1 lines 3448/3504)")
    return out


def _nms_violations(g: _Graph, node: onnx.NodeProto, name: str, attrs: dict) -> list[str]:
    """Rule 5: NMS thresholds and limit present, constant and within INMSLayer's ranges.

    onnx-tensorrt 10.1-GA onnxOpImporters.cpp 3640-3731 maps NonMaxSuppression to INMSLayer: a missing
    max_output_boxes_per_class becomes 0 (no boxes at all), the count is clamped to INT32 and cast to INT32,
    center_point_box must be 0 or 1. NvInfer.h 10.3 INMSLayer (5934-5977): MaxOutputBoxesPerClass a kINT32
    scalar, IoUThreshold a kFLOAT scalar in [0, 1], ScoreThreshold a kFLOAT scalar. Constants: the layer
    bounds its output memory by MaxOutputBoxesPerClass only when it is a constant (NvInfer.h 10.3 5968-5971),
    and older parsers required initializers (onnx-tensorrt 8.4 docs/operators.md, NonMaxSuppression row).
    """
    out: list[str] = []
    labels = ("max_output_boxes_per_class", "iou_threshold", "score_threshold")
    values: dict[str, float] = {}
    for index, label in enumerate(labels, start=2):
        value = g.constant(node.input[index]) if index < len(node.input) and node.input[index] else None
        if value is None:
            present = index < len(node.input) and node.input[index]
            if not present:  # absent: an absent constant input is not caught by the const_inputs check
                out.append(f"{name}: NonMaxSuppression without {label} (TensorRT's default "
                           f"{'0 keeps no boxes' if index == 2 else 'is 0'})")
            continue
        flat = np.asarray(value).reshape(-1)
        if flat.size != 1:
            out.append(f"{name}: NonMaxSuppression {label} has {flat.size} values (INMSLayer takes a scalar)")
            continue
        values[label] = float(flat[0])
    count = values.get("max_output_boxes_per_class")
    if count is not None and not 1 <= count <= np.iinfo(np.int32).max:
        out.append(f"{name}: NonMaxSuppression max_output_boxes_per_class={int(count)} (INMSLayer takes a kINT32 "
                   "count >= 1)")
    iou = values.get("iou_threshold")
    if iou is not None and not 0.0 <= iou <= 1.0:
        out.append(f"{name}: NonMaxSuppression iou_threshold={iou} outside INMSLayer's [0, 1]")
    score = values.get("score_threshold")
    if score is not None and not np.isfinite(score):
        out.append(f"{name}: NonMaxSuppression score_threshold={score} is not finite")
    if attrs.get("center_point_box", 0) not in (0, 1):
        out.append(f"{name}: NonMaxSuppression center_point_box={attrs['center_point_box']} (0 or 1)")
    return out


def _uint8_violations(model: onnx.ModelProto, g: _Graph, types: dict[str, int]) -> list[str]:
    """Rule 3: UINT8 only at graph inputs/outputs; a UINT8 input only read by a Cast to FLOAT/FLOAT16.

    onnx-tensorrt 10.1-GA ModelImporter.cpp 241-254: a node output of type UINT8 that is not a graph output
    fails with "TensorRT does not support UINT8 types for intermediate tensors!"; docs/operators.md line 13:
    "UINT8 is only supported as network input or output tensor types".
    """
    out: list[str] = []
    graph_outputs = {o.name for o in model.graph.output}
    graph_inputs = {i.name for i in model.graph.input}
    for node in model.graph.node:
        if node.op_type == "Constant":
            continue  # weights, not an intermediate tensor of the network
        for tensor in node.output:
            if types.get(tensor) == TensorProto.UINT8 and tensor not in graph_outputs:
                out.append(f"{node.name}: {node.op_type} produces the UINT8 tensor {tensor!r}, which is not a graph "
                           "output (TensorRT: no UINT8 intermediate tensors, ModelImporter.cpp 10.1-GA 241-254); "
                           "cast to float first")
    for name in graph_inputs:
        if types.get(name) != TensorProto.UINT8:
            continue
        for user in g.consumers.get(name, []):
            to = next((a.i for a in user.attribute if a.name == "to"), None)
            if user.op_type != "Cast" or to not in _UINT8_CAST_TARGETS:
                out.append(f"{user.name}: {user.op_type} reads the UINT8 input {name!r}; TensorRT converts UINT8 only "
                           "to FLOAT/FLOAT16 (a Cast) before any other layer (NvInferRuntimeBase.h 10.3 150-163)")
    return out
