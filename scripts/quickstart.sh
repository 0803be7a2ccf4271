#!/usr/bin/env bash
# The main job on the embedded default, inside the project's environment (see README):
# generate the VOC-format shapes dataset, train a small SSD300 on the CPU, evaluate it (VOC07 mAP),
# export it to ONNX with verified ONNX Runtime parity, and compare runtime and PyTorch mAP.
# Usage: bash scripts/quickstart.sh [OUT_DIR]   (QUICK_ITERATIONS=N shortens training)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/quickstart}
iterations=()  # the recipe's own count unless QUICK_ITERATIONS is set
[ -n "${QUICK_ITERATIONS:-}" ] && iterations=(--iterations "$QUICK_ITERATIONS")
mkdir -p "$OUT"
step() { printf '\n== %s\n' "$*"; }

step "1/6 check: build the full-width SSD300 and run it once"
ssd-train check --json | tee "$OUT/check.json"

step "2/6 data: the generated Pascal-VOC-format dataset"
if [ -f "$OUT/data/dataset.json" ]; then
  echo "reusing $OUT/data"
else
  ssd-train data --out "$OUT/data" --workers 2 --json | tee "$OUT/data.json"
fi

step "3/6 fit: the CPU quick-start recipe (about 15 minutes; resumes if interrupted)"
resume=()
[ -f "$OUT/train/last.pt" ] && resume=(--resume)
ssd-train fit --data "$OUT/data" --out "$OUT/train" --recipe cpu-quick "${iterations[@]}" \
  "${resume[@]}" --json | tee "$OUT/fit.json"

step "4/6 eval: VOC07 11-point mAP of the trained model on the test split (PyTorch)"
ssd-train eval --checkpoint "$OUT/train/last.pt" --data "$OUT/data" --plot "$OUT/pr.png" --json \
  | tee "$OUT/eval_torch.json"

step "5/6 export: ssd300.onnx with ONNX Runtime parity verified (tensors and detections)"
ssd-export onnx --checkpoint "$OUT/train/last.pt" -o "$OUT/ssd300.onnx" --json | tee "$OUT/export.json"

step "6/6 run and compare: VOC mAP through the runtime (ONNX Runtime + NumPy postprocess) beside PyTorch"
ssd-runtime eval --model "$OUT/ssd300.onnx" --data "$OUT/data" --checkpoint "$OUT/train/last.pt" --json \
  | tee "$OUT/eval_runtime.json"
ssd-runtime detect --model "$OUT/ssd300.onnx" "$OUT/data/JPEGImages/000000.jpg" --out "$OUT/detections"

printf '\nDone. Artifacts in %s\n' "$OUT"
