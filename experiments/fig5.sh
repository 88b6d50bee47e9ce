#!/usr/bin/env bash
# Fig. 5: PadChest findings (T7, multi-label): per-finding AUROC of the four models. The
# per-finding values with CIs are the auroc/<finding> rows of summary.csv; the per-finding
# paired comparisons (DeLong per class, bootstrap CI, the paper's t-test) are in
# comparison.csv.
#   MEDPROBE_DATA=/data bash experiments/fig5.sh [hydra overrides]
source "$(dirname "$0")/_common.sh"
MODELS="${MEDPROBE_MODELS:-idefics80b,idefics9b,clip,plip}"
sweep fig5 "model=$MODELS" task=t7 "$@"
report fig5 "$OUT/fig5"
