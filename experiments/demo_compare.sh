#!/usr/bin/env bash
# experiment=demo_compare (conf/experiment/demo_compare.yaml) offline: builds a tiny *random*
# CLIP unless MEDPROBE_CLIP names a real one (its numbers then mean nothing), runs the sweep,
# then the report. Extra arguments are Hydra overrides.   bash experiments/demo_compare.sh
set -euo pipefail
PY="${PYTHON:-python}"
OUT=outputs/experiments/demo_compare
if [ -z "${MEDPROBE_CLIP:-}" ]; then
  export MEDPROBE_CLIP=outputs/experiments/tiny_clip
  "$PY" -c "import sys; sys.path.insert(0, 'tests'); from tiny_models import save_tiny_clip; save_tiny_clip('$MEDPROBE_CLIP')"
fi
"$PY" -m medprobe --multirun experiment=demo_compare "output_dir=$OUT" "$@"
"$PY" -m medprobe report "$OUT" --out "$OUT/report"
