"""Where INT8 goes in the SSD300 graph, and TensorRT's rules for a Q/DQ model, on the ONNX graph alone.

Two kinds of functions over an ``onnx.ModelProto`` (no ONNX Runtime, no torch):

- finding the parts that stay in float: :func:`l2_norm_nodes` (the conv4_3 L2 norm and its rescale:
  ``Pow -> ReduceSum -> Sqrt -> Clip -> Div(x, .) -> Mul(., rescale_factors)``, found by structure,
  not by name) and :func:`output_tail` (the head convolutions and the ``Transpose/Reshape/Concat``
  nodes between them and the graph outputs ``locs`` / ``class_logits``);
- :func:`check_qdq_rules`: the violations of TensorRT's explicit-quantization rules in a Q/DQ graph
  (an empty list for a good one), and :func:`strip_qdq`, which takes the Q/DQ pair off given tensors.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

__all__ = [
    "FloatRegions",
    "MIN_QDQ_OPSET",
    "QDQ_OPS",
    "check_qdq_rules",
    "float_regions",
    "l2_norm_nodes",
    "output_tail",
    "strip_qdq",
]

#: Opset floor of a Q/DQ model: per-channel Q/DQ needs 13, NVIDIA ModelOpt's floor (FP16 scales) is 19.
MIN_QDQ_OPSET = 19
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
#: Ops that only move data between the head convolutions and the graph outputs (followed through input 0,
#: Concat through every input).
_LAYOUT_OPS = ("Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Concat")
#: Element-wise ops between the sum of squares and the division of an L2 norm (sqrt, epsilon clamp).
_NORM_STEPS = ("Sqrt", "Clip", "Max", "Add")


#: The Q/DQ form both runtimes take (TensorRT's rules), recorded by every quantizer's settings.
TENSORRT_QDQ: dict[str, Any] = {
    "format": "QDQ",
    "activation_type": "QInt8",
    "weight_type": "QInt8",
    "per_channel": True,
    "activation_symmetric": True,
    "weight_symmetric": True,
    "quantize_bias": False,
}


class _Graph:
    """Producer / consumer / initializer look-ups of one graph."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.graph = model.graph
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in model.graph.node:
            for name in node.output:
                self.producer[name] = node
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.initializers = {t.name: t for t in model.graph.initializer}

    def constant(self, name: str) -> np.ndarray | None:
        """The value of an initializer or Constant output (None for a computed tensor)."""
        if name in self.initializers:
            return numpy_helper.to_array(self.initializers[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    return numpy_helper.to_array(attr.t)
        return None

    def constant_dtype(self, name: str) -> int | None:
        """The ONNX element type of an initializer or Constant output."""
        if name in self.initializers:
            return self.initializers[name].data_type
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    return attr.t.data_type
        return None

    def through_identity(self, name: str) -> str:
        """Follow Identity nodes back to the tensor they copy."""
        node = self.producer.get(name)
        while node is not None and node.op_type == "Identity":
            name = node.input[0]
            node = self.producer.get(name)
        return name


def l2_norm_nodes(model: onnx.ModelProto) -> list[list[str]]:
    """Node names of every L2 norm (``x / max(sqrt(sum(x^2, channels)), eps) * rescale``), in order.

    Each entry lists the norm's nodes from the square to the rescale ``Mul`` (``Pow``, ``ReduceSum``,
    ``Sqrt``, ``Clip``, ``Div``, ``Mul`` in the toolkit's export). Found by structure: a ``ReduceSum`` of
    ``Pow(x, .)`` (or ``x * x``) whose result reaches ``Div(x, .)`` through element-wise steps only. A
    Q/DQ pair inside a norm breaks the chain, so a quantized norm is not found.
    """
    g = _Graph(model)
    found: list[list[str]] = []
    for node in model.graph.node:
        if node.op_type == "ReduceSum":
            square = g.producer.get(node.input[0])
            if square is None or not (
                square.op_type == "Pow" or (square.op_type == "Mul" and square.input[0] == square.input[1])
            ):
                continue
            x, chain = square.input[0], [square, node]
        elif node.op_type in ("ReduceL2", "ReduceSumSquare"):
            x, chain = node.input[0], [node]
        else:
            continue
        tensor = node.output[0]
        while True:
            users = g.consumers.get(tensor, [])
            div = [u for u in users if u.op_type == "Div" and list(u.input[:2]) == [x, tensor]]
            if div:
                chain.append(div[0])
                after = g.consumers.get(div[0].output[0], [])
                if len(after) == 1 and after[0].op_type == "Mul":
                    chain.append(after[0])
                found.append([n.name for n in chain])
                break
            if len(users) != 1 or users[0].op_type not in _NORM_STEPS or users[0].input[0] != tensor:
                break
            chain.append(users[0])
            tensor = users[0].output[0]
    return found


def output_tail(model: onnx.ModelProto) -> tuple[list[str], list[str], list[str]]:
    """(head convs, tail nodes, Q/DQ nodes met) between the last convolutions and the graph outputs.

    Walks back from every graph output through layout ops (``Transpose``, ``Reshape`` (data input),
    ``Concat``, ...) and Q/DQ nodes to the ``Conv`` nodes that produce the raw head outputs. Tail nodes
    are the layout ops met; a Q/DQ node met is one quantizing the outputs (a rule violation).
    """
    g = _Graph(model)
    heads: list[str] = []
    tail: list[str] = []
    qdq: list[str] = []
    seen: set[str] = set()
    stack = [o.name for o in model.graph.output]
    while stack:
        node = g.producer.get(stack.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op_type == "Conv":
            heads.append(node.name)
        elif node.op_type in _LAYOUT_OPS or node.op_type in QDQ_OPS:
            (qdq if node.op_type in QDQ_OPS else tail).append(node.name)
            stack.extend(node.input if node.op_type == "Concat" else node.input[:1])
    order = {n.name: i for i, n in enumerate(model.graph.node)}
    return (sorted(heads, key=order.get), sorted(tail, key=order.get), sorted(qdq, key=order.get))


@dataclass(frozen=True)
class FloatRegions:
    """The parts of the SSD300 graph that stay in float (node names).

    l2_norm: the conv4_3 L2 norm and its rescale; tail: layout ops from the heads to the outputs;
    heads: the head convolutions, quantized on their inputs and weights but with a float output.
    """

    l2_norm: tuple[str, ...]
    tail: tuple[str, ...]
    heads: tuple[str, ...]

    def to_dict(self) -> dict[str, list[str]]:
        return {"l2_norm": list(self.l2_norm), "output_tail": list(self.tail), "float_output_convs": list(self.heads)}


def float_regions(model: onnx.ModelProto) -> FloatRegions | None:
    """The L2 norm(s), the output tail and the head convs of a float graph; None if a part is missing."""
    norms = l2_norm_nodes(model)
    heads, tail, _ = output_tail(model)
    if not norms or not heads:
        return None
    return FloatRegions(tuple(n for norm in norms for n in norm), tuple(tail), tuple(heads))


def strip_qdq(model: onnx.ModelProto, tensors: Iterable[str]) -> list[str]:
    """Remove the QuantizeLinear -> DequantizeLinear pairs on ``tensors`` in place; return the Q nodes removed.

    The consumers of each pair read the float tensor again; scale and zero-point initializers left
    unused are dropped.
    """
    g = _Graph(model)
    wanted = set(tensors)
    drop: set[str] = set()
    rename: dict[str, str] = {}
    removed: list[str] = []
    graph_outputs = {o.name for o in model.graph.output}
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] not in wanted:
            continue
        users = g.consumers.get(node.output[0], [])
        if not users or any(u.op_type != "DequantizeLinear" for u in users):
            continue
        if any(u.output[0] in graph_outputs for u in users):
            continue
        drop.add(node.name)
        drop.update(u.name for u in users)
        rename.update({u.output[0]: node.input[0] for u in users})
        removed.append(node.name)
    kept = [n for n in model.graph.node if n.name not in drop]
    for node in kept:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    del model.graph.node[:]
    model.graph.node.extend(kept)
    used = {name for node in kept for name in node.input}
    unused = [t for t in model.graph.initializer if t.name not in used and t.name not in graph_outputs]
    for tensor in unused:
        model.graph.initializer.remove(tensor)
    return removed


def check_qdq_rules(model: onnx.ModelProto, *, float_nodes: Sequence[str] = ()) -> list[str]:
    """TensorRT's explicit-quantization rules checked on a Q/DQ graph; returns the violations (empty: good).

    Rules:

    1. opset >= :data:`MIN_QDQ_OPSET`;
    2. symmetric INT8 everywhere: every Q/DQ node has a float32 scale and an explicit INT8 zero point
       (never UINT8, never omitted: the default is UINT8) that is 0 everywhere;
    3. activations per tensor (a scalar scale), weights per channel: every Conv (other than
       ``float_nodes``) reads its input from a DequantizeLinear with a scalar scale and its weight from a
       DequantizeLinear of an INT8 initializer with ``axis=0`` and one scale per output channel;
    4. biases not quantized: every Conv bias is a float initializer (through Identity copies);
    5. the conv4_3 L2 norm and its rescale in float: found as one chain (:func:`l2_norm_nodes`) with no
       Q/DQ inside it and none of its inner tensors quantized;
    6. nothing quantized after the heads: no Q/DQ between the head convs and the graph outputs
       (:func:`output_tail`), no head output or tail tensor feeding a QuantizeLinear, and float graph
       outputs.

    ``float_nodes``: names of nodes deliberately kept in float (``--exclude``), exempt from rule 3.
    """
    g = _Graph(model)
    violations: list[str] = []
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_QDQ_OPSET:
        violations.append(f"opset {opset} < {MIN_QDQ_OPSET}")
    for node in model.graph.node:
        if node.op_type in QDQ_OPS:
            violations.extend(_qdq_violations(g, node))
    exempt = set(float_nodes)
    for node in model.graph.node:
        if node.op_type == "Conv":
            violations.extend(_conv_violations(g, node, node.name in exempt))
    violations.extend(_norm_violations(model, g))
    violations.extend(_tail_violations(model, g))
    return violations


def _qdq_violations(g: _Graph, node: onnx.NodeProto) -> list[str]:
    """Rule 2 (and the per-tensor half of rule 3) for one Q/DQ node."""
    out: list[str] = []
    if node.domain not in ("", "ai.onnx"):
        out.append(f"{node.name}: {node.op_type} in domain {node.domain!r}, not the standard ONNX op")
    scale_name = node.input[1]
    if g.constant_dtype(scale_name) != onnx.TensorProto.FLOAT:
        out.append(f"{node.name}: scale {scale_name!r} is not a float32 constant")
    if len(node.input) < 3 or not node.input[2]:
        out.append(f"{node.name}: no zero point (defaults to UINT8)")
        return out
    zero_point = g.constant(node.input[2])
    dtype = g.constant_dtype(node.input[2])
    if zero_point is None or dtype != onnx.TensorProto.INT8:
        kind = "not a constant" if zero_point is None else onnx.TensorProto.DataType.Name(dtype)
        out.append(f"{node.name}: zero point {node.input[2]!r} is {kind}, not INT8")
    elif np.any(zero_point != 0):
        out.append(f"{node.name}: zero point {node.input[2]!r} is not 0 (asymmetric)")
    is_weight = node.op_type == "DequantizeLinear" and g.constant(node.input[0]) is not None
    scale = g.constant(scale_name)
    if not is_weight and scale is not None and scale.size != 1:
        out.append(f"{node.name}: activation scale {scale_name!r} is not per-tensor (shape {list(scale.shape)})")
    return out


def _conv_violations(g: _Graph, conv: onnx.NodeProto, exempt: bool) -> list[str]:
    """Rules 3 and 4 for one Conv."""
    out: list[str] = []
    if len(conv.input) > 2 and conv.input[2]:
        bias = g.through_identity(conv.input[2])
        if bias not in g.initializers or g.initializers[bias].data_type != onnx.TensorProto.FLOAT:
            out.append(f"{conv.name}: bias {conv.input[2]!r} is not a float32 initializer (quantized bias?)")
    if exempt:
        return out
    source = g.producer.get(conv.input[0])
    if source is None or source.op_type != "DequantizeLinear":
        out.append(f"{conv.name}: input {conv.input[0]!r} is not quantized (no DequantizeLinear)")
    weight_dq = g.producer.get(conv.input[1])
    if weight_dq is None or weight_dq.op_type != "DequantizeLinear":
        out.append(f"{conv.name}: weight {conv.input[1]!r} is not quantized (no DequantizeLinear)")
        return out
    weight = g.initializers.get(weight_dq.input[0])
    if weight is None or weight.data_type != onnx.TensorProto.INT8:
        out.append(f"{conv.name}: weight {weight_dq.input[0]!r} is not an INT8 initializer")
        return out
    axis = next((a.i for a in weight_dq.attribute if a.name == "axis"), 1)
    scale = g.constant(weight_dq.input[1])
    channels = weight.dims[0]
    if axis != 0 or scale is None or scale.shape != (channels,):
        shape = None if scale is None else list(scale.shape)
        out.append(f"{conv.name}: weight scale is not per output channel (axis {axis}, scale shape {shape}, "
                   f"{channels} output channels)")
    return out


def _norm_violations(model: onnx.ModelProto, g: _Graph) -> list[str]:
    """Rule 5: the L2 norm(s) found whole, nothing inside quantized."""
    norms = l2_norm_nodes(model)
    if not norms:
        return ["the conv4_3 L2 norm (Pow -> ReduceSum -> Sqrt -> Clip -> Div -> Mul) is not found in float: "
                "a Q/DQ pair inside it, or it is missing"]
    out: list[str] = []
    by_name = {n.name: n for n in model.graph.node}
    for names in norms:
        for name in names[:-1]:  # the last node's output feeds the (quantized) head convs
            for tensor in by_name[name].output:
                if any(u.op_type in QDQ_OPS for u in g.consumers.get(tensor, [])):
                    out.append(f"L2 norm: {name} output {tensor!r} is quantized")
    return out


def _tail_violations(model: onnx.ModelProto, g: _Graph) -> list[str]:
    """Rule 6: float from the head convs to the outputs."""
    heads, tail, qdq = output_tail(model)
    out = [f"{name}: Q/DQ between the head convs and the graph outputs" for name in qdq]
    by_name = {n.name: n for n in model.graph.node}
    for name in heads + tail:
        tensor = by_name[name].output[0]
        if any(u.op_type == "QuantizeLinear" for u in g.consumers.get(tensor, [])):
            out.append(f"{name}: output {tensor!r} is quantized (nothing after the heads may be)")
    for output in model.graph.output:
        if output.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            out.append(f"graph output {output.name!r} is not float32")
    if not heads:
        out.append("no head Conv found before the graph outputs")
    return out
