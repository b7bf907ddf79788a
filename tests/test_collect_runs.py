"""tools/collect_runs.py: the small files of finished runs, nothing large, nothing unfinished."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tools import collect_runs


def make_run(folder, epochs_done, epochs=2):
    (folder / "logs").mkdir(parents=True)
    (folder / "weights").mkdir()
    (folder / "predictions").mkdir()
    history = [dict(epoch=e + 1, val_dsc=0.5, val_dsc_per_patient={"a": 0.5}, loss=0.1, val_loss=0.1)
               for e in range(epochs_done)]
    results = dict(params=dict(epochs=epochs, folds=0), history=history, best_epoch=1, best_val_dsc=0.5)
    (folder / "logs" / "results.json").write_text(json.dumps(results))
    (folder / "logs" / "checkpoint.pt").write_bytes(b"large")
    (folder / "logs" / "events.out.tfevents.1").write_bytes(b"large")
    (folder / "weights" / "unet.pt").write_bytes(b"large")
    (folder / "predictions" / "metrics.csv").write_text("patient,dsc\na,0.5\n")
    (folder / "predictions" / "telling-slices.npz").write_bytes(b"small")
    (folder / "predictions" / "a-00.png").write_bytes(b"picture")
    (folder / "run.log").write_text("start\n" + "".join(f"epoch 1: {k}%\r" for k in range(0, 101, 10)) + "\ndone\n")


def test_only_the_small_files_of_finished_runs_are_copied(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "out"
    make_run(runs / "finished", 2)
    make_run(runs / "recipe" / "fold-1", 2)
    make_run(runs / "training", 1)
    written = collect_runs.collect(runs, out)
    assert sorted(str(path.relative_to(out)) for path in written) == ["finished", "recipe/fold-1"]
    files = sorted(str(path.relative_to(out)) for path in out.rglob("*") if path.is_file())
    assert files == ["finished/predictions/metrics.csv", "finished/predictions/telling-slices.npz",
                     "finished/results.json", "finished/run-tail.log", "recipe/fold-1/predictions/metrics.csv",
                     "recipe/fold-1/predictions/telling-slices.npz", "recipe/fold-1/results.json",
                     "recipe/fold-1/run-tail.log"]
    tail = (out / "finished" / "run-tail.log").read_text().splitlines()
    assert tail[0] == "start" and tail[-2:] == ["epoch 1: 100%", "done"] and len(tail) == 13


def test_git_keeps_what_collect_writes_under_results():
    """The collected files are the report's provenance: git must not ignore them (an unanchored `runs/` or
    `predictions/` pattern in .gitignore once dropped every collected run from the commits)."""
    repo = Path(__file__).resolve().parent.parent
    if shutil.which("git") is None or not (repo / ".git").exists():
        pytest.skip("not a git checkout")
    collected = ["results/real-data-gpu/runs/unet-dice/results.json",
                 "results/real-data-cpu/runs/unet-dice/fold-1/predictions/metrics.csv",
                 "results/real-data-cpu/runs/unet-dice/predictions/dsc.png"]
    scratch = ["runs/unet-dice/weights/unet.pt", "weights/unet.pt", "logs/results.json", "predictions/dsc.png",
               "data/cache/x.npz"]
    ignored = subprocess.run(["git", "check-ignore", "--no-index", *collected, *scratch], cwd=repo,
                             capture_output=True, text=True).stdout.split()
    assert ignored == scratch
