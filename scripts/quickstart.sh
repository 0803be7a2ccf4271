#!/usr/bin/env bash
# The main job on the embedded default, inside the project's environment (see README):
# generate the VOC-format shapes dataset, train a small SSD300 on the CPU, evaluate it (VOC07 mAP),
# export it to ONNX with verified ONNX Runtime parity, and compare runtime and PyTorch.
# Usage: bash scripts/quickstart.sh [OUT_DIR]   (QUICK_ITERATIONS=N shortens training)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/quickstart}
ITERATIONS=${QUICK_ITERATIONS:-1500}
mkdir -p "$OUT"
step() { printf '\n== %s\n' "$*"; }

step "1/5 check: build the full-width SSD300 and run it once"
ssd-train check --json | tee "$OUT/check.json"

step "2/5 data: the generated Pascal-VOC-format dataset"
if [ -f "$OUT/data/dataset.json" ]; then
  echo "reusing $OUT/data"
else
  ssd-train data --out "$OUT/data" --workers 2 --json | tee "$OUT/data.json"
fi

step "3/5 fit: the CPU quick-start recipe ($ITERATIONS iterations; resumes if interrupted)"
resume=()
[ -f "$OUT/train/last.pt" ] && resume=(--resume)
ssd-train fit --data "$OUT/data" --out "$OUT/train" --recipe cpu-quick --iterations "$ITERATIONS" \
  "${resume[@]}" --json | tee "$OUT/fit.json"

step "4/5 eval: VOC07 11-point mAP of the trained model on the test split (PyTorch)"
ssd-train eval --checkpoint "$OUT/train/last.pt" --data "$OUT/data" --plot "$OUT/pr.png" --json \
  | tee "$OUT/eval_torch.json"

step "5/5 export: ssd300.onnx with ONNX Runtime parity verified (tensors and detections)"
ssd-export onnx --checkpoint "$OUT/train/last.pt" -o "$OUT/ssd300.onnx" --json | tee "$OUT/export.json"

printf '\nDone. Artifacts in %s\n' "$OUT"
