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
max_overlap 0.45); ``top_k`` may not exceed K and defaults to the spec's top_k capped at K. A bad
value (non-finite included) fails that request alone with INVALID_ARG (HTTP 400, gRPC
INVALID_ARGUMENT) and a message naming it; any other error in one request fails that request alone
(INTERNAL). Other parameter names are ignored, with one warning in the server log per name: Triton
adds forwarded HTTP/gRPC headers (``--http-header-forward-pattern``) as request parameters, and
ensembles pass them on to this step.

``initialize`` checks that the ``ssd_runtime`` installed beside the server is the toolkit version that
wrote the repository (``toolkit.json`` beside this file) and refuses to load otherwise.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

import ssd_runtime
from ssd_runtime.errors import SettingsError
from ssd_runtime.postprocess import postprocess
from ssd_runtime.spec import ModelSpec, PostprocessSettings

SPEC_FILE = "spec.json"
#: Beside model.py: {"ssd300_toolkit_version": ...}, the toolkit that wrote the repository.
TOOLKIT_FILE = "toolkit.json"
SETTINGS = ("min_score", "max_overlap", "top_k")


class RequestParameterError(ValueError):
    """A request parameter this model reads has a bad value: that request fails with INVALID_ARG."""


class ToolkitVersionError(ValueError):
    """The repository was written by another toolkit version than the ``ssd_runtime`` beside the server."""


class TritonPythonModel:
    """Triton calls ``initialize`` once per instance, then ``execute`` with each batch of requests."""

    def initialize(self, args: dict) -> None:
        """Read the spec beside this file and K from the config; check the config's shapes against the spec."""
        config = json.loads(args["model_config"])
        version_folder = Path(args["model_repository"]) / str(args["model_version"])
        check_toolkit_version(version_folder / TOOLKIT_FILE, args["model_name"])
        spec_path = version_folder / SPEC_FILE
        self.spec = ModelSpec.from_json(spec_path.read_text(encoding="utf-8"), source=str(spec_path))
        self.priors = self.spec.make_priors()  # (P, 4) fractional cxcywh, hash-checked
        self.max_detections = int(pb_utils.get_output_config_by_name(config, "scores")["dims"][-1])
        expected = {"locs": [self.spec.num_priors, 4], "class_logits": [self.spec.num_priors, self.spec.num_classes]}
        for name, dims in expected.items():
            declared = [int(d) for d in pb_utils.get_input_config_by_name(config, name)["dims"]][-2:]
            if declared != dims:
                raise ValueError(f"{args['model_name']}: input {name} is declared {declared} per image, the spec "
                                 f"{spec_path} says {dims}: regenerate the repository with ssd-export triton")
        self.ignored_parameters: set[str] = set()

    def execute(self, requests: list) -> list:
        """One response per request; whatever goes wrong in one request fails that request alone.

        An exception escaping ``execute`` would fail every request of the call (python_backend r24.10,
        ``src/pb_stub.cc`` ``Stub::ProcessRequests``: one error for the whole batch), so none escapes.
        ``TritonError``'s code defaults to INTERNAL (``pb_stub.cc`` 1685-1688); INVALID_ARG reaches
        clients as HTTP 400 / gRPC INVALID_ARGUMENT.
        """
        responses = []
        for request in requests:
            try:
                settings = self.request_settings(request.parameters())
                locs = pb_utils.get_input_tensor_by_name(request, "locs").as_numpy()
                class_logits = pb_utils.get_input_tensor_by_name(request, "class_logits").as_numpy()
                detections = postprocess(locs, class_logits, self.priors, settings, self.spec.variances)
                responses.append(pb_utils.InferenceResponse(output_tensors=self.padded(detections)))
            except RequestParameterError as exc:
                error = pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
            except Exception as exc:  # noqa: BLE001 - this request fails, the others of the batch run
                error = pb_utils.TritonError(f"{type(exc).__name__}: {exc}")
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
        return responses

    def request_settings(self, parameters: str) -> PostprocessSettings:
        """The request's parameters (Triton's JSON string) over the spec's detection settings, checked.

        Only ``min_score``, ``max_overlap`` and ``top_k`` are read. Other keys are ignored (one warning
        per name): Triton adds forwarded headers as request parameters (server r24.10
        ``src/http_server.cc`` 3206-3207, ``--http-header-forward-pattern``; gRPC alike) and its
        clients add reserved ones (``priority``, ``timeout``, ...).
        """
        params = json.loads(parameters or "{}")
        for key in sorted(set(params) - set(SETTINGS) - self.ignored_parameters):
            self.ignored_parameters.add(key)
            pb_utils.Logger.log_warn(f"ssd300 postprocess: ignoring request parameter {key!r} (this model reads "
                                     f"{', '.join(SETTINGS)}); logged once per name")
        base = self.spec.detection
        min_score = _number(params, "min_score", base.min_score)
        max_overlap = _number(params, "max_overlap", base.max_overlap)
        top_k = _number(params, "top_k", min(base.top_k, self.max_detections))
        if not (top_k == int(top_k) and 0 <= top_k <= self.max_detections):
            raise RequestParameterError(f"request parameter top_k must be an integer in [0, {self.max_detections}] (the "
                             f"padded detections per image), got {top_k}")
        try:  # the ranges of min_score and max_overlap are the settings' own
            return PostprocessSettings(min_score, max_overlap, int(top_k))
        except SettingsError as exc:
            raise RequestParameterError(f"request parameter {exc}") from None

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
    """A finite parameter as a float: JSON numbers, or strings holding one (HTTP clients may send either)."""
    if name not in params:
        return float(default)
    value = params[name]
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise RequestParameterError(f"request parameter {name} must be a number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise RequestParameterError(f"request parameter {name} must be a number, got {value!r}") from None
    if not math.isfinite(number):  # "inf" and "nan" parse, then fail later checks or int() (OverflowError)
        raise RequestParameterError(f"request parameter {name} must be a finite number, got {value!r}")
    return number


def check_toolkit_version(path: Path, model_name: str) -> None:
    """Refuse to load when ``path`` (toolkit.json) names another toolkit version than the installed ``ssd_runtime``."""
    installed = ssd_runtime.__version__
    where = Path(ssd_runtime.__file__).parent
    if not path.is_file():
        raise ToolkitVersionError(
            f"{model_name}: {path} is missing, so the toolkit version that wrote this repository is unknown; "
            f"regenerate it with `ssd-export triton` of ssd300-toolkit {installed} (the one at {where})")
    written = json.loads(path.read_text(encoding="utf-8")).get("ssd300_toolkit_version")
    if written != installed:
        raise ToolkitVersionError(
            f"{model_name}: this repository was written by ssd300-toolkit {written}, but the server's Python "
            f"has ssd300-toolkit {installed} ({where}); install {written} there "
            f"(pip install ssd300-toolkit=={written}) or regenerate the repository with `ssd-export triton` "
            f"of {installed}")
