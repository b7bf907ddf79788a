"""Copy the small result files of finished runs into the repository, where report.py reads them without weights
(tools/score_runs.py has scored them).

    python -m tools.collect_runs RUNS DESTINATION

For every finished run under RUNS (runs/<name>/ and runs/<name>/fold-<k>/): its results.json, what inference
wrote beside it (predictions/metrics.csv, metrics-summary.csv, dsc.png, examples.png, telling-slices.npz) and the
last lines of its run.log. Weights, checkpoints, TensorBoard events and per-patient pictures stay behind: they are
large and can be made again. A run still training is left out until it finishes.
"""

import argparse
import shutil
import sys
from pathlib import Path

import runs
from runs import load_runs

PREDICTIONS = ("metrics.csv", "metrics-summary.csv", "dsc.png", "examples.png", runs.TELLING_SLICES_FILE.name)


def log_tail(log, lines=100):
    """The last lines of a log whose progress bars rewrite one line with carriage returns."""
    text = Path(log).read_text(errors="replace").replace("\r", "\n")
    return "\n".join([line for line in text.splitlines() if line.strip()][-lines:]) + "\n"


def collect(runs_dir, destination):
    """Copy the finished runs' small files; returns the run folders written under destination."""
    written = []
    for run in load_runs(runs_dir):
        if not run.finished:
            continue
        relative = run.folder.relative_to(runs_dir)
        target = Path(destination) / relative
        (target / runs.PREDICTIONS_DIR).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(runs.results_file(run.folder), target / runs.COLLECTED_RESULTS_FILE)
        for name in PREDICTIONS:
            if (run.folder / runs.PREDICTIONS_DIR / name).exists():
                shutil.copyfile(run.folder / runs.PREDICTIONS_DIR / name, target / runs.PREDICTIONS_DIR / name)
        if (run.folder / runs.RUN_LOG).exists():
            (target / "run-tail.log").write_text(log_tail(run.folder / runs.RUN_LOG))
        written.append(target)
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs_dir")
    parser.add_argument("destination")
    args = parser.parse_args(argv)
    for folder in collect(Path(args.runs_dir), Path(args.destination)):
        print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
