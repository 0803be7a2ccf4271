"""Triton Python-backend model: SSD300's decode + NMS by the runtime's own NumPy postprocess.

``ssd-export triton`` copies this file as ``<name>_postprocess/1/model.py`` with the model spec beside
it (``spec.json``). It runs inside the Triton container, which needs the toolkit's base install
(``pip install ssd300-toolkit``: numpy, pillow, defusedxml; no torch). It is not imported by the toolkit.

Per request: ``locs`` (n, P, 4) and ``class_logits`` (n, P, C) from the network ->
:func:`ssd_runtime.postprocess.postprocess` with the spec's priors and variances -> detections padded
to K per image (K: the ``scores`` output's dims in the config):

- ``boxes`` float32 (n, K, 4) fractional xyxy (not clipped), zeros past the count;
- ``scores`` float32 (n, K) descending, zeros past the count;
- ``labels`` int64 (n, K) class indices 1..C-1, -1 past the count;
- ``num_detections`` int64 (n, 1).

Request parameters ``min_score``, ``max_overlap``, ``top_k`` (numbers, or strings holding numbers)
override the spec's detection settings for that request (evaluation uses min_score 0.01 and
max_overlap 0.45); ``top_k`` may not exceed K and defaults to the spec's top_k capped at K. A bad or
unknown parameter fails that request alone with a message naming it; Triton's own parameters are
left alone.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from ssd_runtime.postprocess import postprocess
from ssd_runtime.spec import ModelSpec, PostprocessSettings

SPEC_FILE = "spec.json"
SETTINGS = ("min_score", "max_overlap", "top_k")
#: Request parameters Triton and its clients reserve (tritonclient.utils.TRITON_RESERVED_REQUEST_PARAMS).
TRITON_PARAMETERS = ("sequence_id", "sequence_start", "sequence_end", "priority", "timeout", "headers",
                     "binary_data_output")
TRITON_PARAMETER_PREFIX = "triton_"


class TritonPythonModel:
    """Triton calls ``initialize`` once per instance, then ``execute`` with each batch of requests."""

    def initialize(self, args: dict) -> None:
        """Read the spec beside this file and K from the config; check the config's shapes against the spec."""
        config = json.loads(args["model_config"])
        spec_path = Path(args["model_repository"]) / str(args["model_version"]) / SPEC_FILE
        self.spec = ModelSpec.from_json(spec_path.read_text(encoding="utf-8"), source=str(spec_path))
        self.priors = self.spec.make_priors()  # (P, 4) fractional cxcywh, hash-checked
        self.max_detections = int(pb_utils.get_output_config_by_name(config, "scores")["dims"][-1])
        expected = {"locs": [self.spec.num_priors, 4], "class_logits": [self.spec.num_priors, self.spec.num_classes]}
        for name, dims in expected.items():
            declared = [int(d) for d in pb_utils.get_input_config_by_name(config, name)["dims"]][-2:]
            if declared != dims:
                raise ValueError(f"{args['model_name']}: input {name} is declared {declared} per image, the spec "
                                 f"{spec_path} says {dims}: regenerate the repository with ssd-export triton")

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            try:
                settings = self.request_settings(request.parameters())
                locs = pb_utils.get_input_tensor_by_name(request, "locs").as_numpy()
                class_logits = pb_utils.get_input_tensor_by_name(request, "class_logits").as_numpy()
                detections = postprocess(locs, class_logits, self.priors, settings, self.spec.variances)
                responses.append(pb_utils.InferenceResponse(output_tensors=self.padded(detections)))
            except ValueError as exc:  # a bad request parameter or input: that request fails, the others run
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(exc))))
        return responses

    def request_settings(self, parameters: str) -> PostprocessSettings:
        """The request's parameters (Triton's JSON string) over the spec's detection settings, checked."""
        params = json.loads(parameters or "{}")
        unknown = sorted(k for k in params if k not in SETTINGS and k not in TRITON_PARAMETERS
                         and not k.startswith(TRITON_PARAMETER_PREFIX))
        if unknown:
            raise ValueError(f"unknown request parameter(s) {unknown}; this model reads {list(SETTINGS)}")
        base = self.spec.detection
        min_score = _number(params, "min_score", base.min_score)
        max_overlap = _number(params, "max_overlap", base.max_overlap)
        top_k = _number(params, "top_k", min(base.top_k, self.max_detections))
        if not 0.0 <= min_score < 1.0:
            raise ValueError(f"request parameter min_score must be in [0, 1), got {min_score}")
        if not 0.0 < max_overlap <= 1.0:
            raise ValueError(f"request parameter max_overlap must be in (0, 1], got {max_overlap}")
        if not (top_k == int(top_k) and 0 <= top_k <= self.max_detections):
            raise ValueError(f"request parameter top_k must be an integer in [0, {self.max_detections}] (the "
                             f"padded detections per image), got {top_k}")
        return PostprocessSettings(min_score, max_overlap, int(top_k))

    def padded(self, detections: list) -> list:
        """Per-image :class:`~ssd_runtime.detections.Detections` -> the four padded output tensors."""
        n, k = len(detections), self.max_detections
        boxes = np.zeros((n, k, 4), np.float32)
        scores = np.zeros((n, k), np.float32)
        labels = np.full((n, k), -1, np.int64)
        count = np.zeros((n, 1), np.int64)
        for i, dets in enumerate(detections):
            m = len(dets)  # <= top_k <= k
            boxes[i, :m], scores[i, :m], labels[i, :m], count[i, 0] = dets.boxes, dets.scores, dets.labels, m
        return [pb_utils.Tensor("boxes", boxes), pb_utils.Tensor("scores", scores),
                pb_utils.Tensor("labels", labels), pb_utils.Tensor("num_detections", count)]


def _number(params: dict, name: str, default: float) -> float:
    """A parameter as a float: JSON numbers, or strings holding one (HTTP clients may send either)."""
    if name not in params:
        return float(default)
    value = params[name]
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        # ValueError, not TypeError: execute() turns ValueErrors into this request's error response
        raise ValueError(f"request parameter {name} must be a number, got {value!r}")  # noqa: TRY004
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"request parameter {name} must be a number, got {value!r}") from None
