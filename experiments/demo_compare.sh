#!/usr/bin/env bash
# Offline end-to-end comparison on the shipped demo set (no dataset, no download):
# 2 models x 3 layers x 2 training fractions, then the report (tables, comparison, figures).
#   bash experiments/demo_compare.sh [OUT]          (default OUT: outputs/demo_compare)
# Model 1: EfficientNet-Lite0 (real ImageNet weights, layers 4, 6, 8). Model 2: CLIP from
# $MEDPROBE_CLIP (a local folder or hub id; layers 0, 1, 2). When unset, a tiny *random* CLIP is
# built from tests/tiny_models.py so the pipeline runs offline (its numbers mean nothing).
set -euo pipefail
PY="${PYTHON:-python}"
OUT="${1:-outputs/demo_compare}"
CLIP="${MEDPROBE_CLIP:-}"
if [ -z "$CLIP" ]; then
  CLIP="$OUT/tiny_clip"
  "$PY" -c "import sys; sys.path.insert(0, 'tests'); from tiny_models import save_tiny_clip; save_tiny_clip('$CLIP')"
fi
common=(train_fraction=0.5,1.0 bootstrap.n=1000 progress=false)
"$PY" -m medprobe --multirun model=effnet_lite0 layer=4,6,8 "${common[@]}" "output_dir=$OUT/effnet" "${@:2}"
"$PY" -m medprobe --multirun model=clip "model.hf_id=$CLIP" layer=0,1,2 "${common[@]}" \
  "output_dir=$OUT/clip" "${@:2}"
"$PY" -m medprobe.report "$OUT/effnet" "$OUT/clip" --out "$OUT/report"
