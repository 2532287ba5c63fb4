#!/usr/bin/env bash
# The command line end to end: train, evaluate, predict to CSV, explain one photo, export to ONNX.
#   examples/cli.sh [IMAGEFOLDER]     (default: synthetic packs made on the spot; QUICK=1 for a smaller run)
set -euo pipefail
work=$(mktemp -d)
data=${1:-}
if [ -z "$data" ]; then
  data="$work/packs"
  python -c "from multipill import generate_packs; generate_packs('$data', {'train': 10, 'validation': 6, 'test': 6})"
fi
size=$([ "${QUICK:-0}" = 1 ] && echo 128 || echo 224)
epochs=$([ "${QUICK:-0}" = 1 ] && echo 20 || echo 100)

multipill train "$data" --out "$work/model" --image-size "$size" --epochs "$epochs"
multipill evaluate "$data" --model "$work/model" --split test --out "$work/report.json"
multipill predict "$data/test" --model "$work/model" --out "$work/answers.csv"
head -3 "$work/answers.csv"
photo=$(find "$data/test" -type f | sort | head -1)
multipill explain "$photo" --model "$work/model" --out "$work/why.png"
multipill export "$work/model"
multipill predict "$photo" --model "$work/model"       # now on ONNX Runtime
