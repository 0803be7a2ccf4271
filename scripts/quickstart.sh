#!/usr/bin/env bash
# The main job on the embedded default, inside the project's environment (see README):
# generate the VOC-format shapes dataset, train a small SSD300 on the CPU, evaluate it (VOC07 mAP),
# export it to ONNX with verified ONNX Runtime parity, quantize it to a Q/DQ INT8 ONNX with the
# repository's calibration set, and compare the runtime's mAP (FP32 and INT8) with PyTorch's.
# Usage: bash scripts/quickstart.sh [OUT_DIR]   (QUICK_ITERATIONS=N shortens training)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/quickstart}
iterations=()  # the recipe's own count unless QUICK_ITERATIONS is set
[ -n "${QUICK_ITERATIONS:-}" ] && iterations=(--iterations "$QUICK_ITERATIONS")
mkdir -p "$OUT"
step() { printf '\n== %s\n' "$*"; }

step "1/8 check: build the full-width SSD300 and run it once"
ssd-train check --json | tee "$OUT/check.json"

step "2/8 data: the generated Pascal-VOC-format dataset"
if [ -f "$OUT/data/dataset.json" ]; then
  echo "reusing $OUT/data"
else
  ssd-train data --out "$OUT/data" --workers 2 --json | tee "$OUT/data.json"
fi

step "3/8 fit: the CPU quick-start recipe (about 15 minutes; resumes if interrupted)"
resume=()
[ -f "$OUT/train/last.pt" ] && resume=(--resume)
ssd-train fit --data "$OUT/data" --out "$OUT/train" --recipe cpu-quick "${iterations[@]}" \
  "${resume[@]}" --json | tee "$OUT/fit.json"

step "4/8 eval: VOC07 11-point mAP of the trained model on the test split (PyTorch)"
ssd-train eval --checkpoint "$OUT/train/last.pt" --data "$OUT/data" --plot "$OUT/pr.png" --json \
  | tee "$OUT/eval_torch.json"

step "5/8 export: ssd300.onnx with ONNX Runtime parity verified (tensors and detections)"
ssd-export onnx --checkpoint "$OUT/train/last.pt" -o "$OUT/ssd300.onnx" --json | tee "$OUT/export.json"

step "6/8 int8: a Q/DQ INT8 ONNX calibrated on calibration/shapes_trainval_500.json (TensorRT rules checked)"
ssd-export int8 --onnx "$OUT/ssd300.onnx" --calibration calibration/shapes_trainval_500.json \
  --data-root "$OUT/data" -o "$OUT/ssd300_int8.onnx" --json | tee "$OUT/int8.json"

step "7/8 run and compare: VOC mAP through the runtime (ONNX Runtime + NumPy postprocess) beside PyTorch"
ssd-runtime eval --model "$OUT/ssd300.onnx" --data "$OUT/data" --checkpoint "$OUT/train/last.pt" --json \
  | tee "$OUT/eval_runtime.json"
# exit code 1 when INT8 misses its target (0.5 mAP points): reported, the run goes on
ssd-runtime eval --model "$OUT/ssd300_int8.onnx" --data "$OUT/data" --checkpoint "$OUT/train/last.pt" --json \
  | tee "$OUT/eval_runtime_int8.json" || echo "INT8 missed its 0.5-point target (see $OUT/eval_runtime_int8.json)"

step "8/8 detect: draw the INT8 model's detections of one image"
ssd-runtime detect --model "$OUT/ssd300_int8.onnx" "$OUT/data/JPEGImages/000000.jpg" --out "$OUT/detections"

printf '\nDone. Artifacts in %s\n' "$OUT"
