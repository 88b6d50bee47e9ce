#!/usr/bin/env bash
# Fig. 6: data efficiency. Training fractions 0.01, 0.1, 0.25, 0.5, 1.0 (stratified, seeded
# subsamples of train; val and test untouched) x 5 seeds; curves are the mean over seeds
# with a +-1 SD band. One extraction per model x task: every job reuses the cached features.
#   MEDPROBE_DATA=/data bash experiments/fig6.sh [hydra overrides]
source "$(dirname "$0")/_common.sh"
MODELS="${MEDPROBE_MODELS:-idefics80b,idefics9b,clip,plip}"
TASKS="${MEDPROBE_TASKS:-t1,t2,t3,t4,t5,t6,t7,t8}"
SEEDS="${MEDPROBE_SEEDS:-0,1,2,3,4}"
sweep fig6 "model=$MODELS" "task=$TASKS" train_fraction=0.01,0.1,0.25,0.5,1.0 "seed=$SEEDS" "$@"
report fig6 "$OUT/fig6"
