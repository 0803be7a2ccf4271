"""The NMS half of the end-to-end ONNX graph, written with ``onnx.helper`` (standard ops only).

Input: an exported :class:`~ssd_export.onnx.wrappers.ScoresAndBoxes` graph with outputs ``boxes``
(N, P, 4) fractional xyxy and ``scores`` (N, C-1, P) softmax scores without the background.
Output: the same graph ending in fixed-size, padded detections, K = ``settings.top_k``:

- ``boxes`` float32 (N, K, 4) fractional xyxy (not clipped), zeros past ``num_detections``;
- ``scores`` float32 (N, K), score descending, zeros past ``num_detections``;
- ``labels`` int64 (N, K) class indices 1..C-1, -1 past ``num_detections``;
- ``num_detections`` int64 (N,).

Steps (all standard ONNX, opset >= 13; TensorRT maps NonMaxSuppression to its NMS layer):

1. candidate cap: per image only the ``max_candidates`` highest (class, prior) scores stay; the rest
   are set to 0 (below any threshold). TensorRT's NMS layer considers at most 5000 candidates per image
   and its TopK takes k <= 3840, so the cap makes ONNX Runtime do what TensorRT will do;
2. ``NonMaxSuppression`` per image and class: score > min_score, suppression of IoU > max_overlap,
   at most ``top_k`` boxes per class (exact: a class's (top_k+1)-th kept box can never make the
   image's top_k);
3. a dense mask of the selected (class, prior) pairs (``ScatterND`` of ones made element-wise from the
   selected rows: nothing is sized by their data-dependent count), then ``TopK`` of the kept scores over
   (class, prior) flattened class-major: ties go to the lower index, i.e. class ascending, then prior
   ascending - the reference order.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ssd_export.defaults import DEFAULT_MAX_CANDIDATES
from ssd_runtime.spec import PostprocessSettings
from ssd_runtime.variants import DETECTION_OUTPUTS

__all__ = ["DEFAULT_MAX_CANDIDATES", "End2EndLimitError", "append_nms", "check_end2end_limits"]

#: TensorRT's TopK takes k <= 3840 (NvInfer.h 10.3 lines 3546/3602, 11.1 lines 3448/3504); the graph's
#: rules are checked again, node by node, by :mod:`ssd_export.tensorrt_rules` (the same constant).
MAX_TOPK_K = 3840


class End2EndLimitError(ValueError):
    """End-to-end settings that would put a TopK with k > 3840 in the graph (no TensorRT builds it)."""


def check_end2end_limits(top_k: int, max_candidates: int, *, num_priors: int, num_classes: int) -> None:
    """Refuse ``top_k`` / ``max_candidates`` that need a TopK of more than :data:`MAX_TOPK_K` elements.

    The graph holds a TopK of ``min(top_k, (C-1)*P)`` (the output) and, when ``max_candidates`` is below
    ``(C-1)*P``, a TopK of ``max_candidates`` (the cap); ``max_candidates >= (C-1)*P`` means no cap and no
    cap TopK (all candidates enter the NMS, which on TensorRT considers only its best 5000 per image).
    """
    if max_candidates < 1 or top_k < 1:
        raise End2EndLimitError(f"max_candidates and top_k must be positive, got {max_candidates} and {top_k}")
    flat_size = (num_classes - 1) * num_priors
    why = (f"TensorRT's TopK takes k <= {MAX_TOPK_K} (NvInfer.h, ITopKLayer), so no TensorRT engine could be "
           "built from this graph")
    if min(top_k, flat_size) > MAX_TOPK_K:
        raise End2EndLimitError(
            f"end2end top_k {top_k} needs a TopK of {min(top_k, flat_size)} detections per image, above "
            f"{MAX_TOPK_K}: {why}. Bake in top_k <= {MAX_TOPK_K} (the spec's detection / evaluation settings use "
            "200), or export a raw variant (fp32) and run the postprocess outside the graph for more")
    if MAX_TOPK_K < max_candidates < flat_size:
        raise End2EndLimitError(
            f"end2end max_candidates {max_candidates} needs a TopK of {max_candidates} (class, prior) scores per "
            f"image, above {MAX_TOPK_K}: {why}. Use --max-candidates <= {MAX_TOPK_K} (the default is "
            f"{DEFAULT_MAX_CANDIDATES}), or >= {flat_size} (this model's (C-1)*P) for no cap at all")


def append_nms(
    model: onnx.ModelProto,
    settings: PostprocessSettings,
    *,
    num_priors: int,
    num_classes: int,
    max_candidates: int = DEFAULT_MAX_CANDIDATES,
    batch: int | str = "batch",
) -> onnx.ModelProto:
    """Rewrite ``model`` (outputs boxes, scores) to end in padded top_k detections (see module doc)."""
    graph = model.graph
    names = [o.name for o in graph.output]
    if names != ["boxes", "scores"]:
        raise ValueError(f"expected a graph with outputs ['boxes', 'scores'], got {names}")
    check_end2end_limits(settings.top_k, max_candidates, num_priors=num_priors, num_classes=num_classes)
    num_fg = num_classes - 1
    flat_size = num_fg * num_priors
    cap = min(int(max_candidates), flat_size)
    top_k = min(int(settings.top_k), flat_size)
    # rename the network's outputs: they become internal tensors
    for node in graph.node:
        node.output[:] = [f"raw_{o}" if o in names else o for o in node.output]
        node.input[:] = [f"raw_{i}" if i in names else i for i in node.input]
    del graph.output[:]

    steps = _Steps()
    boxes = "raw_boxes"
    scores = _cap_candidates(steps, "raw_scores", cap, num_fg=num_fg, num_priors=num_priors)
    selected = _nms(steps, boxes, scores, settings, top_k)
    kept_flat = _kept_scores(steps, scores, selected)
    _padded_detections(steps, boxes, kept_flat, top_k, num_priors)

    graph.node.extend(steps.nodes)
    graph.initializer.extend(steps.inits)
    # the outputs in the order the end2end variant records (DETECTION_OUTPUTS): boxes, scores, labels, num_detections
    types = ((TensorProto.FLOAT, [batch, top_k, 4]), (TensorProto.FLOAT, [batch, top_k]),
             (TensorProto.INT64, [batch, top_k]), (TensorProto.INT64, [batch]))
    graph.output.extend(helper.make_tensor_value_info(name, elem_type, dims)
                        for name, (elem_type, dims) in zip(DETECTION_OUTPUTS, types, strict=True))
    return model


class _Steps:
    """The nodes and constants appended to the graph, in the order made; every name starts with ``e2e_``."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value), f"e2e_{name}"))
        return f"e2e_{name}"

    def op(self, op_type: str, inputs: list[str], output: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op_type, inputs, [f"e2e_{output}"], name=f"e2e_{output}", **attrs))
        return f"e2e_{output}"

    def graph_output(self, op_type: str, inputs: list[str], output: str, **attrs) -> None:
        """A node writing the graph output ``output`` (its name without the prefix)."""
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=f"e2e_{output}", **attrs))


def _cap_candidates(steps: _Steps, scores: str, cap: int, *, num_fg: int, num_priors: int) -> str:
    """Step 1: keep each image's ``cap`` best (class, prior) scores, zero the rest; the scores (N, C-1, P)."""
    const, op = steps.const, steps.op
    # (N, C-1, P) -> (N, (C-1)*P)
    flat = op("Reshape", [scores, const("flat_shape", np.array([0, -1], np.int64))], "scores_flat")
    if cap >= num_fg * num_priors:  # no cap: every candidate enters the NMS
        return scores
    top_values = op("TopK", [flat, const("cap", np.array([cap], np.int64))], "cap_values", axis=1)
    steps.nodes[-1].output.append("e2e_cap_indices")
    kth = op("Slice", [top_values, const("kth_start", np.array([cap - 1], np.int64)),
                       const("kth_end", np.array([cap], np.int64)), const("axis1", np.array([1], np.int64))],
             "kth")  # (N, 1)
    keep = op("GreaterOrEqual", [flat, kth], "cap_keep")
    flat = op("Where", [keep, flat, const("zero", np.array(0.0, np.float32))], "scores_capped_flat")
    # (N, (C-1)*P) -> (N, C-1, P)
    return op("Reshape", [flat, const("nms_shape", np.array([0, num_fg, num_priors], np.int64))], "scores_capped")


def _nms(steps: _Steps, boxes: str, scores: str, settings: PostprocessSettings, top_k: int) -> str:
    """Step 2: NMS per image and class; selected (S, 3) = (image, class - 1, prior)."""
    const = steps.const
    return steps.op(
        "NonMaxSuppression",
        [boxes, scores, const("max_per_class", np.array([top_k], np.int64)),
         const("iou_threshold", np.array([settings.max_overlap_float32], np.float32)),
         const("score_threshold", np.array([settings.min_score_float32], np.float32))],
        "selected",
        center_point_box=0,
    )


def _kept_scores(steps: _Steps, scores: str, selected: str) -> str:
    """Step 3, the mask: the scores of the selected (class, prior) pairs, -1 elsewhere, (N, (C-1)*P).

    ``selected`` has a data-dependent shape (S, 3) (INMSLayer's SelectedIndices on TensorRT); its only
    readers are a Gather of its first column, element-wise ops on that and the ScatterND: no Shape of it,
    no ConstantOfShape sized by it (a shape tensor computed from a data-dependent extent; docs/tensorrt.md,
    "The end-to-end graph on TensorRT"). The zeros are sized by the scores, whose shape depends on the
    batch only.
    """
    const, op = steps.const, steps.op
    zeros = op("ConstantOfShape", [op("Shape", [scores], "scores_shape")], "mask_zeros",
               value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0]))
    image_of = op("Gather", [selected, const("column0", np.array(0, np.int64))], "selected_image", axis=1)  # (S,)
    ones = op("Cast", [op("GreaterOrEqual", [image_of, const("zero_i64", np.array(0, np.int64))], "selected_any")],
              "selected_ones", to=TensorProto.FLOAT)  # (S,) all 1: batch indices are >= 0
    mask = op("ScatterND", [zeros, selected, ones], "mask")
    is_kept = op("Greater", [mask, const("half", np.array(0.5, np.float32))], "is_kept")
    kept = op("Where", [is_kept, scores, const("minus_one", np.array(-1.0, np.float32))], "kept")
    # (N, C-1, P) -> (N, (C-1)*P), class-major
    return op("Reshape", [kept, const("flat_shape2", np.array([0, -1], np.int64))], "kept_flat")


def _padded_detections(steps: _Steps, boxes: str, kept_flat: str, top_k: int, num_priors: int) -> None:
    """Step 3, the ranking: ``top_k`` of the kept scores (ties to the lower flat index: class, then prior
    ascending) written as the graph outputs boxes, scores, labels and num_detections."""
    const, op = steps.const, steps.op
    # (N, K) values and flat indices
    values = op("TopK", [kept_flat, const("top_k", np.array([top_k], np.int64))], "top_values", axis=1)
    steps.nodes[-1].output.append("e2e_top_index")
    index = "e2e_top_index"
    valid = op("Greater", [values, const("minus_half", np.array(-0.5, np.float32))], "valid")
    steps.graph_output("ReduceSum", [op("Cast", [valid], "valid_i64", to=TensorProto.INT64),
                                     const("axes1", np.array([1], np.int64))], "num_detections", keepdims=0)
    num_p = const("num_priors", np.array(num_priors, np.int64))
    cls0 = op("Div", [index, num_p], "cls0")
    prior = op("Mod", [index, num_p], "prior")
    label = op("Add", [cls0, const("one_i64", np.array(1, np.int64))], "label")
    steps.graph_output("Where", [valid, label, const("minus_one_i64", np.array(-1, np.int64))], "labels")
    steps.graph_output("Where", [valid, values, const("zero_f", np.array(0.0, np.float32))], "scores")
    # boxes: (N, P, 4) gathered at prior (N, K) -> (N, K, 4)
    prior_idx = op("Expand", [op("Unsqueeze", [prior, const("axis2", np.array([2], np.int64))], "prior_u"),
                              const("expand4", np.array([1, 1, 4], np.int64))], "prior_idx")
    gathered = op("GatherElements", [boxes, prior_idx], "boxes_gathered", axis=1)
    valid3 = op("Unsqueeze", [valid, const("axis2b", np.array([2], np.int64))], "valid3")
    steps.graph_output("Where", [valid3, gathered, const("zero_box", np.array(0.0, np.float32))], "boxes")
