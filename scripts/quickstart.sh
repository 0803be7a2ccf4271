#!/usr/bin/env bash
# The main job on the embedded default, inside the project's environment (see README):
# generate the VOC-format shapes dataset, train a small SSD300 on the CPU, then `ssd-export deploy`:
# ONNX FP32/FP16/INT8/end-to-end built and verified, each evaluated on the test split beside PyTorch
# (mAP delta against its target), timed per stage and drawn, with TensorRT engines where TensorRT and
# a GPU exist; report in OUT/deploy/report.md. Exit code 1 when an artifact misses its target.
# Usage: bash scripts/quickstart.sh [OUT_DIR]   (QUICK_ITERATIONS=N shortens training: a smoke run)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/quickstart}
iterations=()  # the recipe's own count unless QUICK_ITERATIONS is set
[ -n "${QUICK_ITERATIONS:-}" ] && iterations=(--iterations "$QUICK_ITERATIONS")
mkdir -p "$OUT"
step() { printf '\n== %s\n' "$*"; }
start=$SECONDS

step "1/4 check: build the full-width SSD300 and run it once"
ssd-train check --json | tee "$OUT/check.json"

step "2/4 data: the generated Pascal-VOC-format dataset"
if [ -f "$OUT/data/dataset.json" ]; then
  echo "reusing $OUT/data"
else
  ssd-train data --out "$OUT/data" --workers 2 --json | tee "$OUT/data.json"
fi

step "3/4 fit: the CPU quick-start recipe (about 10 minutes; resumes if interrupted)"
resume=()
[ -f "$OUT/train/last.pt" ] && resume=(--resume)
ssd-train fit --data "$OUT/data" --out "$OUT/train" --recipe cpu-quick "${iterations[@]}" \
  "${resume[@]}" --json | tee "$OUT/fit.json"

step "4/4 deploy: every artifact built, verified, evaluated beside PyTorch, timed and drawn (a rerun reuses what matches)"
status=0
ssd-export deploy --model "$OUT/train/last.pt" --data "$OUT/data" --out "$OUT/deploy" || status=$?

printf '\nDone in %d s (exit %d). Report: %s/deploy/report.md\n' "$((SECONDS - start))" "$status" "$OUT"
exit "$status"
