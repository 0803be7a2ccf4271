"""Triton Python-backend model that runs ``model.onnx`` with ONNX Runtime: the network step in the real-server tests.

The ``tritonserver`` bundled with ``nvidia-pytriton`` (tests/helpers/triton/server.py) has the Python backend
only, no ONNX Runtime backend, so the tests serve the generated repository's network model
(``platform: "onnxruntime_onnx"``, ``1/model.onnx``) by this file instead: the same ``model.onnx``,
the same inputs, outputs, batching and instance group, with ``backend: "python"`` in place of the
platform (:func:`tests.ssd_export.test_triton_server.serve_network_with_python`). Everything else in
the repository (ensemble, postprocess, spec.json) is served as generated. ONNX Runtime here is the
one in the server's environment (.venv-triton), on the CPU.
"""
from __future__ import annotations

import json
from pathlib import Path

import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # the tests' machine has 2 cores, shared with the postprocess
        path = Path(args["model_repository"]) / str(args["model_version"]) / "model.onnx"
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = [i["name"] for i in config["input"]]
        self.outputs = [o["name"] for o in config["output"]]

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            feed = {name: pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in self.inputs}
            arrays = self.session.run(self.outputs, feed)
            responses.append(pb_utils.InferenceResponse(
                output_tensors=[pb_utils.Tensor(n, a) for n, a in zip(self.outputs, arrays)]))
        return responses
