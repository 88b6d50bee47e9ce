#!/usr/bin/env bash
# Probe every EfficientNet-Lite0 layer on the demo set: one cached extraction, nine probes.
# Extra arguments are passed to Hydra (e.g. tracker=none, seed=1).
set -euo pipefail
python -m medprobe --multirun layer=0,1,2,3,4,5,6,7,8 "$@"
