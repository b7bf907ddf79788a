#!/usr/bin/env bash
# The steps of real runs on a lent GPU machine (the device tool), in the repo root there.
# The machine keeps its files only while warm (about 30 s after a call): make the calls back to back.
#
# Here, once:   python -m tools.gpu.pack_data pack <kaggle_3m> lgg-packed --chunk-mib 38   (about 10 min; chunks that
#               fit a call's 64 MiB beside the tracked files: 24 MiB with the shipped weights on 2026-11-30,
#               `git ls-files -z | xargs -0 du -cb | tail -1` says today's; a receive call costs seconds)
#               pip wheel --no-deps -w .whl medpy        (HD95 there; the GPU image lacks medpy)
#               commit, then start every command with  export SOURCE_COMMIT=<git rev-parse --short HEAD here>;
#               (the tree's .git there is the session's first checkout: without it the runs name a stale commit)
# There, one call per chunk, steps joined with && where they fit in a call's 10 minutes:
#   bash tools/gpu/gpu_session.sh receive          carry lgg-packed/kaggle_3m.part-00K.tar (and .whl): one chunk a call
#   bash tools/gpu/gpu_session.sh unpack           after the last chunk: the TIFFs, then the preprocessing cache (64 s)
#   bash tools/gpu/gpu_session.sh bench            speed benchmarks at 256 px (data paths, with torch.compile too;
#                                              epoch end), their text into $OUT
#   bash tools/gpu/gpu_session.sh train ARGS...    experiments.py ARGS on the real data, stopped in time, then collect
#   bash tools/gpu/gpu_session.sh report           tools/score_runs.py (inference, HD95), report.py, then collect (1 min)
#   bash tools/gpu/gpu_session.sh torchrun-check   one process under torchrun against the plain run, on phantom
#                                              data (no chunks needed; seconds): $OUT/torchrun-check-gpu.md
# Seen: two U-Net runs of 100 epochs at 256 px sharing an H100 trained about 10 minutes each
# (results/gpu-session-2026-11-23.md); one 5-fold fold alone on an H200 455 s, its epoch ends trailing the GPU
# (results/gpu-session-2026-11-30.md). A session's 15 minutes of device time (since 2026-11-30) hold the chunks,
# unpacking and one such run alone: join the last receive, unpack and train in one call.
# A run unfinished when the machine goes back is lost with it (its checkpoint stays there): plan runs that end
# within the session, and the report step before the device time runs out.
# What comes back: $OUT/runs.tar.xz (results, logs, metrics, figures), each run's best weights in float16
#               (<run>.unet-fp16.pt), train.log, the benchmarks' text.
# Here:         tar -xJf <files_at>/runs.tar.xz -C /tmp/back && cp -r /tmp/back/runs/. results/real-data-gpu/runs/
#               python report.py --runs-dir results/real-data-gpu/runs --figures-dir results/real-data-gpu/figures \
#                   --runs-dir results/real-data-cpu/runs --figures-dir results/real-data-cpu/figures
#               (REPORT.md: a section per protocol), then commit results/real-data-gpu and REPORT.md
# Settings (environment): STORE (/root/lgg), INCOMING (lgg-packed), CACHE (data/cache), LIMIT (540 s), OUT,
#                         PYTHON (the interpreter: python, else python3), SOURCE_COMMIT (the commit sent).
# Exit status: a failed step fails the script (a training stopped at LIMIT is no failure: rerun to resume).
set -euo pipefail
cd "$(dirname "$0")/../.."
STORE=${STORE:-/root/lgg}
DATA=$STORE/kaggle_3m
RUNS=$STORE/runs
INCOMING=${INCOMING:-lgg-packed}  # where the carried chunks arrive
CACHE=${CACHE:-data/cache}       # the preprocessing cache, train.py's default
LIMIT=${LIMIT:-540}  # seconds of training a call; a run stopped there resumes in the next call
OUT=${OUT:-$STORE/out}
PYTHON=${PYTHON:-$(command -v python || command -v python3)}
case "${1:-}" in
  receive | unpack | bench | train | report | collect | torchrun-check) ;;
  *) sed -n '2,34p' "$0"; exit 2 ;;
esac
mkdir -p "$STORE/packed" "$RUNS" "$OUT"
if [ -z "${SOURCE_COMMIT:-}" ]; then
  echo "warning: SOURCE_COMMIT is not set: the runs will name the commit of this copy's .git" >&2
fi
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$STORE/site" .whl/*.whl
fi
[ -d "$STORE/site" ] && export PYTHONPATH="$STORE/site${PYTHONPATH:+:$PYTHONPATH}"

collect() {
  # small files only: at most 16 MiB a file comes back, and they are committed; a log's progress bars are cut
  find "$STORE/runs" -name run.log -print0 | while IFS= read -r -d '' log; do
    tr '\r' '\n' <"$log" | tail -n 200 >"${log%.log}-tail.log"
  done
  # the files tools/collect_runs.py commits (its list: the telling slices draw the failure picture once the
  # weights are gone with the machine)
  local names expression=()
  read -r -a names <<<"results.json run-tail.log $("$PYTHON" -c 'from tools.collect_runs import PREDICTIONS
print(*PREDICTIONS)')"
  for name in "${names[@]}"; do expression+=(-o -name "$name"); done
  (cd "$STORE" && find runs \( "${expression[@]:1}" \) -print0 | tar --null -cJf "$OUT/runs.tar.xz" -T - \
      $( [ -f REPORT.md ] && echo REPORT.md report ))
  # each run's best weights in float16 (the U-Net's 15.5 MB: under the 16 MiB a returning file may have),
  # named after the run's folder (runs/unet-dice/fold-0 -> unet-dice.fold-0.unet-fp16.pt)
  "$PYTHON" -c 'import re, sys; from pathlib import Path; import checkpoint
runs, out = Path(sys.argv[1]), Path(sys.argv[2])
for weights in sorted(runs.glob("**/weights/unet.pt")):
    name = re.sub(r"[^A-Za-z0-9._-]", "_", ".".join(weights.parent.parent.relative_to(runs).parts))
    checkpoint.half_precision_copy(weights, out / f"{name}.unet-fp16.pt")' "$RUNS" "$OUT"
  ls -la "$OUT"
}

step=$1
shift
case "$step" in
  receive)
    mv "$INCOMING"/*.tar "$STORE/packed/"
    ls -la "$STORE/packed"
    ;;
  unpack)
    "$PYTHON" -m tools.gpu.pack_data unpack "$STORE/packed" "$DATA"
    "$PYTHON" -c "import experiments; experiments.warm_cache('$DATA', {'cache_dir': '$CACHE'})"
    "$PYTHON" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name() if \
      torch.cuda.is_available() else 'and no GPU')"
    ;;
  bench)
    "$PYTHON" -m benchmarks.training_speed --data "$DATA" --image-size 256 --batch-size 16 --workers 4 \
      | tee "$OUT/bench-training-speed.txt"
    "$PYTHON" -m benchmarks.training_speed --data "$DATA" --image-size 256 --batch-size 16 --workers 4 --compile \
      | tee "$OUT/bench-training-speed-compile.txt"
    "$PYTHON" -m benchmarks.epoch_end --data "$DATA" | tee "$OUT/bench-epoch-end.txt"
    ;;
  train)
    # SIGINT to the whole process group: each run writes its last checkpoint and stops; rerun to resume
    status=0
    # its output into $OUT/train.log too: a single run (--jobs 1) writes no run.log of its own
    timeout -s INT -k 30 "$LIMIT" "$PYTHON" experiments.py "$@" --executor python --data-path "$DATA" \
      --runs-dir "$RUNS" --set cache_dir="$CACHE" > >(tee -a "$OUT/train.log") 2>&1 || status=$?
    collect
    if [ "$status" -eq 124 ]; then
      echo "stopped at the time limit ($LIMIT s); rerun the step to resume"
    elif [ "$status" -ne 0 ]; then
      echo "experiments.py failed with exit status $status (the lines above, train.log and any run.log say why)" >&2
      exit "$status"
    fi
    ;;
  report)
    "$PYTHON" -m tools.score_runs "$RUNS" --data-path "$DATA"
    "$PYTHON" report.py --runs-dir "$RUNS" --out "$STORE/REPORT.md" --figures-dir "$STORE/report"
    collect
    ;;
  collect)
    collect
    ;;
  torchrun-check)
    "$PYTHON" -m tools.torchrun_check --device cuda --out "$OUT/torchrun-check-gpu.md"
    ;;
esac
