"""Training's evaluation is the runtime's: the model in memory served as a backend (ssd_train.evaluation)."""
from __future__ import annotations

import numpy as np
import pytest

from ssd_runtime.backends import Backend, BackendClosedError
from ssd_runtime.detector import Detector
from ssd_runtime.evaluate import map_of_detector_on_records
from ssd_train.checkpoint import load_model
from ssd_train.data import VOCDetection
from ssd_train.evaluation import ModelBackend, evaluate


def test_evaluate_is_the_runtime_evaluation_of_the_model_as_a_backend(runtime_checkpoint, voc_root):
    model, spec = load_model(runtime_checkpoint)
    dataset = VOCDetection.from_voc(voc_root, "test", class_names=spec.class_names, train=False)
    model.train()
    result = evaluate(model, dataset, spec, batch_size=3)
    assert model.training  # the caller's mode is restored
    backend = ModelBackend.load(runtime_checkpoint)
    assert isinstance(backend, Backend) and backend.precision == "fp32" and backend.output_kind == "raw"
    same, facts = map_of_detector_on_records(Detector(backend), dataset.records, batch_size=3)
    assert facts["images"] == len(dataset) and result.to_dict() == same.to_dict() and result.map > 0
    backend.close()
    with pytest.raises(BackendClosedError, match="closed"):
        backend.infer(np.zeros((1, 3, spec.input_size, spec.input_size), np.float32))
