#!/usr/bin/env bash
# Land the CPU sweep's finished runs (tools/cpu_sweep.sh) into results/: score them, commit their small files,
# and regenerate every report that reads them. Run it from a clean tree: each report records the commit.
#
#   bash tools/land_cpu_sweep.sh DATA [SWEEP]
#
# DATA: the full kaggle_3m; SWEEP: the folder holding seed-42/ and seed-1/ (each a cpu_sweep.sh RUNS folder, the
# second with TRAINING_SEED=1). In order: tools/score_runs.py scores each finished run at 256x256 (its weights,
# once), tools/collect_runs.py copies the small files to results/real-data-cpu/runs (seed 42) and runs-seed-1,
# then report.py (the CPU report and the root REPORT.md), tools/seed_variance.py and tools/failure_analysis.py
# (its picture from the runs' committed telling slices). Hand-written analyses in those files are kept.
# Settings (environment): SKIP_SCORE=1 (the reports only, from what results/ holds); FA_OUT=PATH (the failure
# table alone, to PATH: a look, no picture, nothing else rewritten); EXTRA_RECIPES ("label=runs/recipe ...",
# labels without spaces: more columns). The failure table's columns, a label each, are listed here only.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ]; then sed -n '2,14p' "$0"; exit 2; fi
DATA=$1
SWEEP=${2:-}
R=results/real-data-cpu
if [ -z "${SKIP_SCORE:-}" ] && [ -z "${FA_OUT:-}" ]; then
  [ -n "$SWEEP" ] || { echo "give SWEEP (the folder with seed-42/ and seed-1/), or SKIP_SCORE=1" >&2; exit 2; }
  for seed in 42 1; do
    [ -d "$SWEEP/seed-$seed" ] && python -m tools.score_runs "$SWEEP/seed-$seed" --data-path "$DATA"
  done
  [ -d "$SWEEP/seed-42" ] && python -m tools.collect_runs "$SWEEP/seed-42" $R/runs
  [ -d "$SWEEP/seed-1" ] && python -m tools.collect_runs "$SWEEP/seed-1" $R/runs-seed-1
fi
if [ -z "${FA_OUT:-}" ]; then
  python report.py --runs-dir $R/runs --out $R/REPORT.md --figures-dir $R/figures
  # levers are paired with the fast recipe (the issue's targets), the 128 px recipe (the best median), sequence
  # dropout (the levers screened on it) and the 128 px recipe + intensity (the best mean and the fewest failures
  # over 110 patients at seed 42, the levers on it)
  python -m tools.seed_variance --seed 42=$R/runs --seed 1=$R/runs-seed-1 --baseline unet-bce_dice-fast \
    --baseline unet-bce_dice-fast-128 --baseline unet-bce_dice-adamw-cosine-seqdrop \
    --baseline unet-bce_dice-fast-128-intensity \
    --figure results/seed-variance-cpu.png --out results/seed-variance-cpu.md
fi
# a label a column; folds are added to a label by the tool when not all five are scored
recipes=("reference=$R/runs/unet-dice" "modern=$R/runs/unet-bce_dice-adamw-cosine" "fast=$R/runs/unet-bce_dice-fast"
         "seqdrop=$R/runs/unet-bce_dice-adamw-cosine-seqdrop" "EMA=$R/runs/unet-bce_dice-fast-ema"
         "context=$R/runs/unet-bce_dice-fast-context"
         "modern at 256 px, GPU=results/real-data-gpu/runs/unet-bce_dice-adamw-cosine"
         "fast, seed 1=$R/runs-seed-1/unet-bce_dice-fast" "finish at 256 px=$R/runs/unet-bce_dice-fast256"
         "intensity=$R/runs/unet-bce_dice-fast-intensity" "most at 128 px=$R/runs/unet-bce_dice-fast-128"
         "context, seed 1=$R/runs-seed-1/unet-bce_dice-fast-context"
         "context + intensity=$R/runs/unet-bce_dice-fast-context-intensity"
         "most at 128 px, seed 1=$R/runs-seed-1/unet-bce_dice-fast-128"
         "128 px + context=$R/runs/unet-bce_dice-fast-128-context"
         "128 px + intensity=$R/runs/unet-bce_dice-fast-128-intensity"
         "128 px + intensity + context=$R/runs/unet-bce_dice-fast-128-intensity-context"
         "128 px + deep supervision=$R/runs/unet-bce_dice-fast-128-ds"
         "128 px + sequence dropout=$R/runs/unet-bce_dice-fast-128-seqdrop"
         "seqdrop, seed 1=$R/runs-seed-1/unet-bce_dice-adamw-cosine-seqdrop"
         "seqdrop + intensity=$R/runs/unet-bce_dice-adamw-cosine-seqdrop-intensity"
         "seqdrop + context=$R/runs/unet-bce_dice-adamw-cosine-seqdrop-context"
         "modern, seed 1=$R/runs-seed-1/unet-bce_dice-adamw-cosine" "reference, seed 1=$R/runs-seed-1/unet-dice"
         "128 px + intensity, seed 1=$R/runs-seed-1/unet-bce_dice-fast-128-intensity")
for extra in ${EXTRA_RECIPES:-}; do recipes+=("$extra"); done
present=()
for item in "${recipes[@]}"; do [ -d "${item#*=}" ] && present+=("$item"); done  # a recipe not run yet: no column
if [ -n "${FA_OUT:-}" ]; then
  python -m tools.failure_analysis "$DATA" "${present[@]}" --out "$FA_OUT"
else
  python -m tools.failure_analysis "$DATA" "${present[@]}" --picture results/failure-analysis-cpu.png \
    --out results/failure-analysis-cpu.md
  python report.py --runs-dir results/real-data-gpu/runs --figures-dir results/real-data-gpu/figures \
    --runs-dir $R/runs --figures-dir $R/figures
fi
