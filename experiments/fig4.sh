#!/usr/bin/env bash
# Fig. 4: ophthalmology (T5 diabetic retinopathy, T6 glaucoma) and radiology (T7 PadChest,
# T8 knee KL grade): IDEFICS-80B vs IDEFICS-9B vs CLIP vs PLIP at their default layers.
#   MEDPROBE_DATA=/data bash experiments/fig4.sh [hydra overrides]
source "$(dirname "$0")/_common.sh"
MODELS="${MEDPROBE_MODELS:-idefics80b,idefics9b,clip,plip}"
TASKS="${MEDPROBE_TASKS:-t5,t6,t7,t8}"
sweep fig4 "model=$MODELS" "task=$TASKS" "$@"
report fig4 "$OUT/fig4"
