"""tools/gpu/gpu_session.sh, step by step, on phantom data and a CPU: what a GPU session will run."""

import pytest
import json
import os
import subprocess
import sys
import tarfile

import torch

import checkpoint
from layouts import kaggle_3m
from conftest import REPO
from tools import collect_runs
from tools.gpu import pack_data


def session(step, *args, env):
    """The step run with the interpreter that runs the tests, as a GPU machine runs it with its own."""
    return subprocess.run(["bash", "tools/gpu/gpu_session.sh", step, *args], cwd=REPO,
                          env=dict(env, PYTHON=sys.executable), capture_output=True, text=True)


def test_usage_without_a_step():
    finished = session("", env=dict(os.environ, STORE="/nonexistent/store"))
    assert finished.returncode == 2 and "receive" in finished.stdout and "unpack" in finished.stdout
    assert finished.stdout.rstrip().endswith("(a training stopped at LIMIT is no failure: rerun to resume).")


@pytest.mark.slow
def test_receive_unpack_train_report_and_collect(phantom_dir, tmp_path):
    store, out, incoming = tmp_path / "store", tmp_path / "out", tmp_path / "incoming"
    env = dict(os.environ, STORE=str(store), OUT=str(out), INCOMING=str(incoming), CACHE=str(tmp_path / "cache"))
    chunks = pack_data.pack(phantom_dir, incoming, chunk_mib=0.25)
    for step in ("receive", "unpack"):
        finished = session(step, env=env)
        assert finished.returncode == 0, finished.stderr
    assert sorted(path.name for path in (store / "packed").iterdir()) == [chunk.name for chunk in chunks]
    assert sorted(kaggle_3m.list_patients(store / "kaggle_3m")) == sorted(kaggle_3m.list_patients(phantom_dir))
    assert len(list((tmp_path / "cache").glob("*-256-*.npz"))) == 8  # preprocessed at the training size

    tiny = ["--set", "image_size=32", "--set", "init_features=4", "--set", "batch_size=4", "--set",
            "validation_cases=3", "--set", "vis_images=2"]
    finished = session("train", "unet-dice", "--synthetic", "--epochs", "2", *tiny, env=env)
    assert finished.returncode == 0, finished.stderr
    results = json.loads((store / "runs" / "unet-dice" / "logs" / "results.json").read_text())
    assert len(results["history"]) == 2 and results["data_dir"] == str((store / "kaggle_3m").resolve())
    assert results["params"]["cache_dir"] == str(tmp_path / "cache")
    assert "best validation mean DSC" in (out / "train.log").read_text()  # a single run's log comes back too
    half, metadata = checkpoint.read_weights(out / "unet-dice.unet-fp16.pt")  # the best weights, in float16
    assert half["conv.weight"].dtype == torch.float16 and metadata["image_size"] == 32
    best = checkpoint.read_weights(store / "runs" / "unet-dice" / "weights" / "unet.pt")[0]["conv.weight"]
    assert torch.equal(half["conv.weight"], best.half())

    finished = session("report", env=env)
    assert finished.returncode == 0, finished.stderr
    with tarfile.open(out / "runs.tar.xz") as archive:
        names = set(archive.getnames())
    assert {"runs/unet-dice/logs/results.json", "runs/unet-dice/predictions/metrics.csv", "REPORT.md",
            "report/examples.png", "report/val_dsc_curves.png"} <= names
    # every small file tools/collect_runs.py commits, the telling slices (the failure picture's predictions) too
    assert {f"runs/unet-dice/predictions/{name}" for name in collect_runs.PREDICTIONS} <= names
    assert not [name for name in names if name.endswith(".pt") or "tfevents" in name]  # small files only


@pytest.mark.slow
def test_train_stopped_at_its_time_limit_says_how_to_go_on(phantom_dir, tmp_path):
    store = tmp_path / "store"
    (store / "kaggle_3m").parent.mkdir(parents=True)
    os.symlink(phantom_dir, store / "kaggle_3m")
    env = dict(os.environ, STORE=str(store), OUT=str(tmp_path / "out"), CACHE=str(tmp_path / "cache"), LIMIT="3")
    finished = session("train", "unet-dice", "--synthetic", env=env)
    assert finished.returncode == 0  # a planned stop, not a failure
    assert "stopped at the time limit (3 s); rerun the step to resume" in finished.stdout
    assert (tmp_path / "out" / "runs.tar.xz").exists()


@pytest.mark.slow
def test_a_failed_training_fails_the_step_after_collecting(phantom_dir, tmp_path):
    store = tmp_path / "store"
    (store / "kaggle_3m").parent.mkdir(parents=True)
    os.symlink(phantom_dir, store / "kaggle_3m")
    env = dict(os.environ, STORE=str(store), OUT=str(tmp_path / "out"), CACHE=str(tmp_path / "cache"))
    finished = session("train", "unet-dice", "--synthetic", "--set", "image_size=50", env=env)
    assert finished.returncode == 1
    assert "experiments.py failed with exit status 1" in finished.stderr
    assert "image_size=50: use a positive multiple of 16" in finished.stdout  # its output, teed into train.log
    assert "image_size=50: use a positive multiple of 16" in (tmp_path / "out" / "train.log").read_text()
    assert (tmp_path / "out" / "runs.tar.xz").exists()
