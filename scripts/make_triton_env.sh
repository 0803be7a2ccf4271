#!/usr/bin/env bash
# The environment of the real-Triton tests (tests/helpers/triton/server.py): .venv-triton at the repository root,
# holding PyPI's nvidia-pytriton (a real tritonserver with the Python backend), onnxruntime (which runs
# the ONNX network inside the server in those tests: the bundled server has no ONNX Runtime backend) and
# the toolkit's torch-free runtime, all under numpy<2 as nvidia-pytriton pins it (and Triton's images ship).
# Usage: bash scripts/make_triton_env.sh [PYTHON]   (default python3; needs PyPI)
set -euo pipefail
cd "$(dirname "$0")/.."
python="${1:-python3}"
rm -rf .venv-triton
"$python" -m venv .venv-triton
echo '*' > .venv-triton/.gitignore  # never committed (git status stays clean)
.venv-triton/bin/pip install -q 'nvidia-pytriton==0.7.*' 'onnxruntime>=1.16' 'numpy<2'
.venv-triton/bin/pip install -q -e . 'numpy<2'
