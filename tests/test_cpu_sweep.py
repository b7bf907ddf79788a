"""tools/cpu_sweep.sh: which runs the CPU protocol makes, in what order, with what settings (experiments.py
replaced by a stand-in that records its arguments)."""

import os
import subprocess
from pathlib import Path

import pytest

from experiments import EXPERIMENTS

SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "cpu_sweep.sh"


def sweep(tmp_path, step, fail_on=None, **settings):
    """Run the sweep with a stand-in interpreter; returns (exit status, stdout, one argument list per run)."""
    calls = tmp_path / "calls.txt"
    stand_in = tmp_path / "python"
    stand_in.write_text("#!/usr/bin/env bash\n"
                        f'echo "$*" >> {calls}\n'
                        + (f'[[ "$2" == {fail_on} ]] && exit 3\n' if fail_on else "")
                        + "exit 0\n")
    stand_in.chmod(0o755)
    done = subprocess.run(["bash", str(SCRIPT), "DATA", str(tmp_path / "runs"), step], capture_output=True,
                          text=True, env=dict(os.environ, PYTHON=str(stand_in), **settings))
    lines = calls.read_text().splitlines() if calls.exists() else []
    return done.returncode, done.stdout, [line.split() for line in lines]


def test_the_folds_step_runs_four_recipes_on_each_fold_before_the_next_fold(tmp_path):
    status, _, calls = sweep(tmp_path, "folds")
    assert status == 0
    runs = [(args[1], args[args.index("--only-fold") + 1]) for args in calls]
    assert runs == [(name, str(fold)) for fold in range(5) for name in (
        "unet-dice", "unet-bce_dice-adamw-cosine", "unet-bce_dice-fast", "unet-bce_dice-adamw-cosine-seqdrop")]
    assert all(args[args.index("--folds") + 1] == "5" for args in calls)
    # the protocol's settings reach every run
    for args in calls:
        assert args[0] == "experiments.py" and "--executor" in args and args[args.index("--executor") + 1] == "python"
        assert args[args.index("--epochs") + 1] == "12" and "image_size=64" in args and "batch_size=16" in args
        assert args[args.index("--data-path") + 1] == "DATA" and "data_pipeline=device" in args


def test_a_second_training_seed_runs_the_chosen_recipes_on_the_same_folds(tmp_path):
    status, _, calls = sweep(tmp_path, "folds", RECIPES="unet-bce_dice-fast unet-dice", TRAINING_SEED="1",
                             FOLDS="3 1")
    assert status == 0
    runs = [(args[1], args[args.index("--only-fold") + 1]) for args in calls]
    assert runs == [(name, str(fold)) for fold in (3, 1) for name in ("unet-bce_dice-fast", "unet-dice")]
    assert all("training_seed=1" in args and "seed=1" not in args for args in calls)  # the folds' seed unchanged
    (tmp_path / "default").mkdir()
    _, _, calls = sweep(tmp_path / "default", "folds")
    assert calls and not any(arg.startswith("training_seed=") for args in calls for arg in args)


def test_the_split_step_asks_one_question_a_row_with_experiments_that_exist(tmp_path):
    status, _, calls = sweep(tmp_path, "split")
    assert status == 0
    names = [args[1] for args in calls]
    assert all(name in EXPERIMENTS for name in names)
    assert "--folds" not in " ".join(" ".join(args) for args in calls)
    networks = {EXPERIMENTS[name].get("model", "unet") for name in names}
    losses = {EXPERIMENTS[name].get("loss", "dice") for name in names}
    assert networks == {"unet", "attention_unet", "resnet34_unet", "unet++"}
    assert losses == {"dice", "bce_dice", "soft_iou", "lovasz", "focal", "focal_tversky"}
    assert {"unet-dice", "unet-bce_dice-adamw-cosine", "unet-bce_dice-fast"} <= set(names)


@pytest.mark.parametrize("step", ["nothing", "fold"])
def test_an_unknown_step_prints_the_usage(tmp_path, step):
    status, out, calls = sweep(tmp_path, step)
    assert status == 2 and "bash tools/cpu_sweep.sh DATA RUNS [folds|split|all]" in out and not calls


def test_a_failed_run_does_not_stop_the_others_and_fails_the_sweep(tmp_path):
    status, out, calls = sweep(tmp_path, "folds", fail_on="unet-bce_dice-adamw-cosine")
    assert status == 1 and len(calls) == 20
    assert out.count("FAILED: unet-bce_dice-adamw-cosine --folds 5 --only-fold") == 5
