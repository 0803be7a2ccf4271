"""Convs of a Q/DQ graph put back in float by ONNX surgery, for the search's trials and the model it writes.

"In float" means the Conv reads a float input and its fp32 weight (no DequantizeLinear feeds it); both
:func:`ssd_export.int8.quantize.quantize_int8` (the Convs a search chose) and
:mod:`ssd_export.int8.search` (each trial, each Conv's score) make that graph here, so the written model is
the graph the search measured.
"""
from __future__ import annotations

from collections.abc import Sequence

import onnx

from ssd_export.int8.errors import Int8Error
from ssd_export.qdq_rules import QDQ_OPS

__all__ = ["keep_float", "quantized_convs"]


def quantized_convs(model: onnx.ModelProto) -> list[str]:
    """Names of the Convs of a Q/DQ graph that read a DequantizeLinear input (the quantized ones), in graph order."""
    producer = {o: n for n in model.graph.node for o in n.output}
    return [n.name for n in model.graph.node
            if n.op_type == "Conv" and getattr(producer.get(n.input[0]), "op_type", "") == "DequantizeLinear"]


def keep_float(int8_model: onnx.ModelProto, fp32_model: onnx.ModelProto, convs: Sequence[str]) -> onnx.ModelProto:
    """A copy of the Q/DQ graph ``int8_model`` with ``convs`` in float: fp32 input and fp32 weight.

    Each Conv reads the tensor its input's QuantizeLinear reads and the fp32 source's weight
    initializer; Q/DQ nodes left without a consumer and unused initializers are dropped. Other
    consumers of a shared activation keep their Q/DQ pair. Raises :class:`Int8Error` for a name
    that is not a Conv of both graphs.
    """
    model = onnx.ModelProto()
    model.CopyFrom(int8_model)
    producer = {o: n for n in model.graph.node for o in n.output}
    fp32_convs = {n.name: n for n in fp32_model.graph.node if n.op_type == "Conv"}
    fp32_inits = {t.name: t for t in fp32_model.graph.initializer}
    nodes = {n.name: n for n in model.graph.node if n.op_type == "Conv"}
    unknown = [c for c in convs if c not in nodes or c not in fp32_convs]
    if unknown:
        raise Int8Error(f"not a Conv of both the INT8 and the fp32 graph: {', '.join(unknown)}")
    have = {t.name for t in model.graph.initializer}
    for name in convs:
        conv = nodes[name]
        dq = producer.get(conv.input[0])
        if dq is not None and dq.op_type == "DequantizeLinear":
            q = producer.get(dq.input[0])
            conv.input[0] = q.input[0] if q is not None and q.op_type == "QuantizeLinear" else dq.input[0]
        weight = fp32_convs[name].input[1]
        conv.input[1] = weight
        if weight not in have:
            model.graph.initializer.append(fp32_inits[weight])
            have.add(weight)
    _drop_dead_qdq(model)
    return model


def _drop_dead_qdq(model: onnx.ModelProto) -> None:
    """Remove Q/DQ nodes whose outputs nobody reads (repeatedly), then the initializers nobody reads."""
    outputs = {o.name for o in model.graph.output}
    while True:
        used = {name for node in model.graph.node for name in node.input} | outputs
        dead = [n for n in model.graph.node if n.op_type in QDQ_OPS and not any(o in used for o in n.output)]
        if not dead:
            break
        for node in dead:
            model.graph.node.remove(node)
    used = {name for node in model.graph.node for name in node.input} | outputs
    for tensor in [t for t in model.graph.initializer if t.name not in used]:
        model.graph.initializer.remove(tensor)
