#!/usr/bin/env bash
# Fig. 3: pathology (T1 colorectal tissue, T2 PanNuke) and dermatology (T3 HAM10000,
# T4 ISIC 2020): IDEFICS-80B vs IDEFICS-9B vs CLIP vs PLIP, each at its default layer, all
# training data, 1000 bootstrap replicates; then bars with CIs and paired comparisons.
#   MEDPROBE_DATA=/data bash experiments/fig3.sh [hydra overrides]
source "$(dirname "$0")/_common.sh"
MODELS="${MEDPROBE_MODELS:-idefics80b,idefics9b,clip,plip}"
TASKS="${MEDPROBE_TASKS:-t1,t2,t3,t4}"
sweep fig3 "model=$MODELS" "task=$TASKS" "$@"
report fig3 "$OUT/fig3"
