"""Stand-ins for the GPU stack on a CPU: a FAKE ``tensorrt`` module limited to tests/data/tensorrt_api.json,
host memory in place of device memory, and a stand-in for ``cuda.bindings.runtime``."""
