#!/usr/bin/env bash
# The real-data evidence on a CPU (no GPU lent): the CPU protocol, one run at a time, resumable.
#
#   bash tools/cpu_sweep.sh DATA RUNS [folds|split|all]     (default: all, the folds first)
#
# Protocol: the full kaggle_3m at DATA, 64 px, 12 epochs, batch 16, seed 42, the slices held in memory with
# batch augmentation (data_pipeline=device, workers=0: 1.21x the loader path on 2 cores), model selection on
# validation DSC as the reference. Scores at the original 256x256 geometry come from tools/score_runs.py.
#   folds: patient-level 5-fold cross-validation of the reference recipe, the modern recipe, the fast recipe and
#          the modern one with sequence dropout, fold by fold (every recipe on fold k before fold k + 1);
#   split: the reference split, one question a row: the fast recipe (its own sizes and epochs: 64 then 128 px,
#          14 epochs, bfloat16), each loss at the modern optimiser, each network at the modern recipe, and the
#          reference recipe.
# A stop (Ctrl-C, kill, end of session) loses at most the epoch under way: run the same command to go on;
# finished runs are skipped. Each run's log is RUNS/<name>[/fold-<k>]/run.log. A sweep started in the
# background ignores SIGINT: stop it with `pkill -f tools/cpu_sweep.sh; pkill -f experiments.py`. A stopped
# run's lock is stale and taken over when it resumes; its results.json lists earlier_commits.
# Settings (environment): PYTHON (python), CACHE (data/cache-cpu-sweep), EPOCHS (12), SIZE (64),
#   THREADS (auto: the cores idle when each run starts; 2 keeps both cores when other work comes and goes),
#   RECIPES (the folds step's recipes, in order: default the four above), FOLDS (the folds step's folds, in
#   order: default 0 1 2 3 4), TRAINING_SEED (another training seed on the same folds, to measure a rerun's
#   variance: give it its own RUNS folder).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 2 ]; then sed -n '2,22p' "$0"; exit 2; fi
DATA=$1
RUNS=$2
STEP=${3:-all}
PYTHON=${PYTHON:-python}
CACHE=${CACHE:-data/cache-cpu-sweep}
REFERENCE=unet-dice
MODERN=unet-bce_dice-adamw-cosine
FAST=unet-bce_dice-fast  # its own sizes and epochs: EPOCHS and SIZE do not apply to it
SEQDROP=unet-bce_dice-adamw-cosine-seqdrop  # a 5-fold question only: no split patient lacks a sequence
SPLIT=("$FAST" attention_unet-bce_dice-adamw-cosine resnet34_unet-bce_dice-adamw-cosine unet-dice-adamw-cosine
       unet-soft_iou-adamw-cosine unet-lovasz-adamw-cosine unet-focal-adamw-cosine unet-focal_tversky-adamw-cosine
       unet++-bce_dice-adamw-cosine "$REFERENCE" "$MODERN")
COMMON=(--executor python --data-path "$DATA" --runs-dir "$RUNS" --epochs "${EPOCHS:-12}" --set "image_size=${SIZE:-64}"
        --set batch_size=16 --set data_pipeline=device --set workers=0 --set "cache_dir=$CACHE"
        --set "threads=${THREADS:-auto}")
if [ -n "${TRAINING_SEED:-}" ]; then COMMON+=(--set "training_seed=$TRAINING_SEED"); fi
read -r -a RECIPES <<<"${RECIPES:-$REFERENCE $MODERN $FAST $SEQDROP}"
export PYTHONUNBUFFERED=1
failed=0

one() {  # one run, its output kept in its own run.log
  local name=$1 folder=$RUNS/$1
  shift
  if [ "${1:-}" = --folds ]; then folder=$folder/fold-$4; fi
  mkdir -p "$folder"
  echo "$(date -u +%FT%TZ) $name $*"
  "$PYTHON" experiments.py "$name" "$@" "${COMMON[@]}" >>"$folder/run.log" 2>&1 || {
    echo "FAILED: $name $* (see $folder/run.log)"; failed=1; }
}

case "$STEP" in folds | split | all) ;; *) sed -n '2,22p' "$0"; exit 2 ;; esac
if [ "$STEP" != split ]; then
  for fold in ${FOLDS:-0 1 2 3 4}; do
    for name in "${RECIPES[@]}"; do one "$name" --folds 5 --only-fold "$fold"; done
  done
fi
if [ "$STEP" != folds ]; then
  for name in "${SPLIT[@]}"; do one "$name"; done
fi
exit "$failed"
