"""What tests share and are not tests themselves: builders of test data, slow reference implementations,
stand-ins for hardware, and the harness of multi-process and real-server tests.

- ``fakes/``: the FAKE ``tensorrt`` module (``tensorrt``, ``tensorrt_objects``, ``tensorrt_runtime``), the
  host-memory stand-in for device memory (``device_memory``) and a stand-in for ``cuda.bindings.runtime``
  (``cudart``), so the TensorRT control flow runs on a CPU;
- ``triton/``: the real Triton server's environment and process (``server``), the ``triton_python_backend_utils``
  stand-in that runs Python models in-process (``pb_utils_standin``), and the model file copied into a
  repository for the real server (``onnx_network_model``);
- one module per kind of test data or oracle: ``training`` (briefly trained models), ``voc_files``,
  ``metric_cases``, ``postprocess_cases``, ``synthetic_outputs``, ``augment_reference``, ``image_faults``,
  ``pickles``, ``tutorial_checkpoints``, ``tensorrt_engines``, ``cuda_status``, ``processes``.

The rule (held by tests/test_layout.py): every module under tests/ that is not a test, a conftest or an
``__init__`` lives here; tests import shared helpers from here, never from another test module; benchmarks
and scripts import from ``tests.helpers`` and nothing else of tests/.
"""
