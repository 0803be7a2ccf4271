#!/usr/bin/env bash
# The main job on the embedded default, run inside the project's environment (see README).
# Stage 1 (foundation): build SSD300 and run it once. Later stages: generate data, train, evaluate,
# export, quantize, run and compare.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/quickstart}
mkdir -p "$OUT"
ssd-train check --width 1.0 --batch 1 | tee "$OUT/check.json"
