#!/usr/bin/env bash
# All GPU checks and GPU benchmarks in one call, for a machine with a CUDA GPU and no internet.
# Usage (repository root): bash scripts/gpu_check.sh [BENCHMARK_NAME_PART ...]
#   -> JSON on stdout (and $OUT/gpu_check.json); with names, only the matching benchmarks run.
# Packages the GPU image lacks travel as wheels in .whl/ (see README, "GPU checks"); the stream benchmark
# needs PyAV (its wheel bundles FFmpeg): pip download --only-binary=:all: --no-deps --python-version 3.12 \
#   --platform manylinux_2_28_x86_64 -d .whl av   (without it the benchmark prints {"skipped": ...}).
# Run time on the H200 (2026-11-27, no TensorRT): 198 s; the stream benchmark should add about 40 s.
set -euo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
# Plain --no-deps would try to download setuptools for an isolated build and fail offline.
python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null
export PYTHONUNBUFFERED=1
exec python3 scripts/gpu_check.py "$@"
