# Shared by the figure presets (sourced, not run). Environment:
#   MEDPROBE_DATA  parent folder holding one dataset folder per task, named t1 ... t8
#                  (each job gets data_root=$MEDPROBE_DATA/<task name>; see docs/tasks.md)
#   MEDPROBE_OUT   where sweeps and reports go (default: outputs/experiments, git-ignored)
#   MEDPROBE_MODELS / MEDPROBE_TASKS / MEDPROBE_SEEDS override a preset's comma lists.
# Extra arguments to a preset are passed to Hydra (e.g. tracker=none, hydra/launcher=submitit_slurm).
set -euo pipefail
: "${MEDPROBE_DATA:?set MEDPROBE_DATA to the folder holding t1 ... t8 (see experiments/README.md)}"
OUT="${MEDPROBE_OUT:-outputs/experiments}"
PY="${PYTHON:-python}"
DATA_ROOT='data_root=${oc.env:MEDPROBE_DATA}/${task.name}'

# sweep NAME ARGS...: one Hydra multirun into $OUT/NAME, then the offline report of it.
sweep() {
  local name="$1"
  shift
  "$PY" -m medprobe --multirun "$DATA_ROOT" "output_dir=$OUT/$name" "$@"
}
report() {
  local name="$1"
  shift
  "$PY" -m medprobe.report "$@" --out "$OUT/$name/report"
}
