#!/usr/bin/env bash
# Fig. S5: probe quality at every layer. CLIP / PLIP: layers 0-12 (model.layers defaults to
# all: one extraction per model x task, thirteen probes). IDEFICS: model.layers=all caches
# every decoder layer in one pass (no truncation), then one probe per layer
# (9B: 0-32, 80B: 0-80).
#   MEDPROBE_DATA=/data bash experiments/figS5.sh [hydra overrides]
source "$(dirname "$0")/_common.sh"
TASKS="${MEDPROBE_TASKS:-t1,t2,t3,t4,t5,t6,t7,t8}"
sweep figS5/clip "model=clip,plip" "task=$TASKS" 'layer=range(0,13)' "$@"
sweep figS5/idefics9b model=idefics9b model.layers=all "task=$TASKS" 'layer=range(0,33)' "$@"
sweep figS5/idefics80b model=idefics80b model.layers=all "task=$TASKS" 'layer=range(0,81)' "$@"
report figS5 "$OUT/figS5"
