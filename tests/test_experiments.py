"""The experiment runner and the report generator, on phantom data and on hand-made results."""

import json
import shutil
import subprocess
import threading
import time

import numpy as np
import pytest

import batches
import comparisons
import experiments
import inference
import report
import results_files
import train
from loss import LOSSES
from runs import Run, describe_model, describe_optimiser, describe_schedule, describe_size, load_runs, native_scores
from tools import score_runs
from unet import MODELS

TINY = dict(image_size=32, init_features=4, batch_size=4, workers=0, validation_cases=3, vis_images=0, epochs=2,
            lr=1e-3)


def test_parameters_are_the_recipe_then_overrides_then_the_run_folder(tmp_path):
    params = experiments.run_parameters("resnet34_unet-bce_dice-adamw-cosine-tta", tmp_path / "run", "data",
                                    dict(epochs=8, lr=5e-4), folds=5, fold=2)
    assert params["model"] == "resnet34_unet" and params["model_args"] == {"pretrained": True}
    assert params["loss"] == "bce_dice" and params["optimizer"] == "adamw" and params["tta"] is True
    assert params["lr"] == 5e-4 and params["epochs"] == 8
    assert params["warmup_epochs"] == 1  # 3 in the recipe, at most an eighth of 8 epochs
    assert params["weights_dir"] == str((tmp_path / "run" / "weights").resolve())
    assert params["logs_dir"] == str((tmp_path / "run" / "logs").resolve())
    assert (params["folds"], params["fold"], params["resume"], params["synthetic_demo"]) == (5, 2, True, False)
    assert params["data_path"].endswith("/data")
    assert experiments.run_parameters("unet-dice", tmp_path, overrides=dict(epochs=100))["data_path"] is None
    assert "warmup_epochs" not in experiments.run_parameters("unet-dice", tmp_path, overrides=dict(epochs=8))
    with pytest.raises(ValueError, match="unknown experiment 'unet-dise'.*--list"):
        experiments.run_parameters("unet-dise", tmp_path)


def test_the_fast_recipe_keeps_its_own_epochs_and_sizes_and_says_so(tmp_path, capsys):
    params = experiments.run_parameters("unet-bce_dice-fast", tmp_path, overrides=dict(epochs=12, image_size=64,
                                                                                     batch_size=16))
    assert (params["epochs"], params["image_size"], params["progressive_size"], params["progressive_epochs"]) == \
        (14, 128, 64, 10)
    assert params["batch_size"] == 16 and params["amp"] == "native" and params["warmup_epochs"] == 1
    assert "unet-bce_dice-fast keeps its own epochs=14, image_size=128 (ignored: {'epochs': 12, 'image_size': 64})" \
        in capsys.readouterr().out
    train.parameters.check_train(train.parameters.settings(train.DEFAULTS, **{
        key: value for key, value in params.items() if key in train.DEFAULTS}))


def test_every_lever_on_the_fast_recipe_trains_within_twice_its_images_x_pixels():
    # the budget of issue "fewer failed patients": a fold's training at most 2x the fast recipe's
    def pixels(name):
        params = experiments.run_parameters(name, "runs/x")
        return batches.trained_pixels(params, params["epochs"], images_per_epoch=1)

    levers = [name for name in experiments.EXPERIMENTS
              if name.startswith("unet-bce_dice-fast") and name != "unet-bce_dice-fast"]
    assert {"unet-bce_dice-fast256", "unet-bce_dice-fast-128"} <= set(levers)
    assert all(pixels(name) <= 2 * pixels("unet-bce_dice-fast") for name in levers)
    # 10 epochs at 64 px and 4 at 128 against 3 at 64 and 12 at 128: (3 * 64**2 + 12 * 128**2) / 106,496
    assert pixels("unet-bce_dice-fast-128") / pixels("unet-bce_dice-fast") == (3 * 4096 + 12 * 16384) / 106496


def test_every_recipe_names_a_known_model_and_loss():
    for name, recipe in experiments.EXPERIMENTS.items():
        assert set(recipe) <= set(train.DEFAULTS), name
        assert recipe.get("model", "unet") in MODELS, name
        assert recipe.get("loss", "dice") in LOSSES, name


@pytest.fixture(scope="module")
def runs(phantom_dir, tmp_path_factory):
    """A reference-split run through the notebook, and two folds of another recipe from Python."""
    runs_dir = tmp_path_factory.mktemp("runs")
    overrides = dict(TINY, cache_dir=str(runs_dir / "cache"))
    notebook_run = experiments.run("attention_unet-dice", runs_dir, phantom_dir, overrides)
    folds = [experiments.run("unet-bce_dice", runs_dir, phantom_dir, overrides, folds=2, fold=k, executor="python")
             for k in (0, 1)]
    return runs_dir, notebook_run, folds


@pytest.mark.slow
def test_a_run_leaves_its_notebook_results_and_weights(runs):
    runs_dir, results, _ = runs
    folder = runs_dir / "attention_unet-dice"
    assert (folder / "train.ipynb").exists() and (folder / "weights" / "unet.pt").exists()
    saved = json.loads((folder / "logs" / "results.json").read_text())
    assert not (folder / "results.json").exists()  # one results.json per run: experiments.py's keys go into it
    assert saved["experiment"] == "attention_unet-dice" and saved["executor"] == "papermill"
    assert saved["params"]["model"] == "attention_unet" and len(saved["history"]) == 2
    assert saved["synthetic_data"] is True
    notebook = (folder / "train.ipynb").read_text()
    assert "Best validation mean DSC" in notebook  # the executed notebook keeps its outputs


@pytest.mark.slow
def test_a_finished_run_is_skipped(runs, phantom_dir, capsys):
    runs_dir, results, _ = runs
    again = experiments.run("attention_unet-dice", runs_dir, phantom_dir, dict(TINY, cache_dir=str(runs_dir / "c")))
    assert "done already, skipped" in capsys.readouterr().out
    assert again["best_val_dsc"] == results["best_val_dsc"]


@pytest.mark.slow
def test_folds_validate_on_disjoint_patients(runs):
    _, _, folds = runs
    first, second = (set(fold["validation_patients"]) for fold in folds)
    assert not first & second and len(first | second) == 8


@pytest.mark.slow
def test_a_fold_model_is_scored_on_its_own_fold_and_names_the_patients_it_trained_on(runs, phantom_dir, tmp_path,
                                                                                     capsys):
    import inference

    runs_dir, _, folds = runs
    common = dict(weights=str(runs_dir / "unet-bce_dice" / "fold-1" / "weights" / "unet.pt"),
                  data_path=str(phantom_dir), predictions_dir=str(tmp_path / "p"), figure=str(tmp_path / "dsc.png"),
                  workers=0, cache_dir=str(tmp_path / "c"), write_masks=False)
    scored = inference.run(**common)
    assert scored["patients"] == folds[1]["validation_patients"] != folds[0]["validation_patients"]
    assert "the model's own validation patients" in capsys.readouterr().out
    trained = sorted(folds[1]["train_patients"][:2])
    inference.run(patients=trained + folds[1]["validation_patients"][:1], **common)
    assert f"was trained on 2 of these patients ({', '.join(trained)})" in capsys.readouterr().out


def hand_made_results(best_epoch, per_patient_by_epoch, folds=0, fold=0, recipe=None, epochs=None):
    history = [dict(epoch=e + 1, val_dsc=float(np.mean(list(p.values()))), val_dsc_per_patient=p, loss=0.1,
                    val_loss=0.1) for e, p in enumerate(per_patient_by_epoch)]
    return dict(
        params=dict(model="unet", loss="dice", optimizer="adam", lr=1e-4, schedule="constant", folds=folds, fold=fold,
                    seed=42, image_size=256, batch_size=16, validation_cases=10, cache_dir="c", epochs=epochs or
                    len(history)),
        history=history, best_epoch=best_epoch, best_val_dsc=history[best_epoch - 1]["val_dsc"], recipe=recipe,
        train_seconds=120.0, device="test device", commit="abc1234", data_dir="d", split="s",
    )


def test_summary_takes_the_median_at_the_best_epoch(tmp_path):
    results = hand_made_results(2, [dict(a=0.1, b=0.2, c=0.3), dict(a=0.5, b=0.9, c=0.8)], recipe={})
    row = report.summary(Run("unet-dice", None, tmp_path, results))
    assert row["best_dsc"] == pytest.approx(2.2 / 3) and row["median_dsc"] == pytest.approx(0.8)
    assert row["experiment"] == "unet-dice (reference recipe)" and row["train_minutes"] == 2.0
    assert row["last_dsc"] == pytest.approx(2.2 / 3)
    peaked = hand_made_results(1, [dict(a=0.5, b=0.9, c=0.8), dict(a=0.1, b=0.2, c=0.3)])
    earlier = report.summary(Run("unet-dice", None, tmp_path, peaked))
    assert earlier["best_dsc"] == pytest.approx(2.2 / 3) and earlier["last_dsc"] == pytest.approx(0.2)
    assert row["hd95"] is None  # no predictions/metrics.csv
    assert row["device"] == "test device" and row["image_px"] == "256"
    shared = report.summary(Run("unet-dice", None, tmp_path, dict(results, shared_by=3)))
    assert shared["device"] == "test device, 3 runs at once"  # its train time is not a speed figure


def test_an_interrupted_run_is_listed_as_unfinished_and_not_taken_as_the_best(tmp_path):
    finished = hand_made_results(2, [dict(a=0.5), dict(a=0.6)], recipe={})
    interrupted = hand_made_results(1, [dict(a=0.9)], epochs=100)  # killed: only logs/results.json is there
    (tmp_path / "unet-dice" / "logs").mkdir(parents=True)
    (tmp_path / "unet-dice" / "logs" / "results.json").write_text(json.dumps(finished))
    (tmp_path / "unet-focal" / "logs").mkdir(parents=True)
    (tmp_path / "unet-focal" / "logs" / "results.json").write_text(json.dumps(interrupted))
    (tmp_path / "unet-lovasz").mkdir()  # started, nothing written yet: not a run
    runs = load_runs(tmp_path)
    assert [(run.name, run.finished) for run in runs] == [("unet-dice", True), ("unet-focal", False)]
    assert report.summary(runs[1])["epochs"] == "1 of 100, unfinished"
    assert report.summary(runs[0])["epochs"] == 2
    assert comparisons.best_run(runs).name == "unet-dice"  # 0.6 finished beats 0.9 after 1 of 100 epochs
    assert comparisons.best_run(runs[1:]).name == "unet-focal"  # unless nothing has finished


def test_a_failing_recipe_does_not_stop_the_others(monkeypatch, capsys):
    ran = []

    def fake_run(name, runs_dir, data_path, overrides, folds, fold, executor, shared_by):
        ran.append((name, fold))
        if name == "unet-focal" and fold == 1:
            raise RuntimeError("CUDA out of memory\nTried to allocate 2 GiB")

    monkeypatch.setattr(experiments, "run", fake_run)
    assert experiments.main(["unet-focal", "unet-dice", "--folds", "2"]) == 1
    assert ran == [("unet-focal", 0), ("unet-focal", 1), ("unet-dice", 0), ("unet-dice", 1)]
    err = capsys.readouterr().err
    assert "1 run(s) failed" in err and "unet-focal fold 1: RuntimeError: Tried to allocate 2 GiB" in err
    # where it broke too (a sweep's log is all there is to debug it from): the traceback, above its one line
    assert err.index("Traceback (most recent call last)") < err.index("in fake_run") < err.index("FAILED unet-focal")
    assert experiments.main(["unet-dice"]) == 0

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(experiments, "run", interrupted)
    assert experiments.main(["unet-dice"]) == 130
    assert "stopped; every run keeps its last finished epoch: the same command resumes them" in capsys.readouterr().err


@pytest.mark.slow
def test_jobs_run_side_by_side_in_their_own_processes(phantom_dir, tmp_path, capsys):
    runs_dir = tmp_path / "runs"
    settings = dict(TINY, cache_dir=str(tmp_path / "cache"), epochs=1)
    argv = ["unet-focal", "unet-dise", "--jobs", "2", "--executor", "python", "--data-path", str(phantom_dir),
            "--runs-dir", str(runs_dir)] + [f"--set={key}={json.dumps(value)}" for key, value in settings.items()]
    assert experiments.main(argv) == 1  # the misspelt one fails, the other still runs
    err = capsys.readouterr().err
    assert "1 run(s) failed" in err and "unet-dise: exit 1: ValueError: unknown experiment 'unet-dise'" in err
    results = json.loads((runs_dir / "unet-focal" / "logs" / "results.json").read_text())
    assert results["shared_by"] == 2 and results["params"]["loss"] == "focal" and len(results["history"]) == 1
    assert "Best validation mean DSC" in (runs_dir / "unet-focal" / "run.log").read_text()
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 8  # preprocessed once, before the runs started
    # the same command again: the finished run is skipped, and its log keeps what the first segment wrote
    experiments.main(argv)
    log = (runs_dir / "unet-focal" / "run.log").read_text()
    assert "Best validation mean DSC" in log and "done already, skipped" in log


def test_model_column_names_width_imagenet_and_deep_supervision():
    assert describe_model(dict(model="unet", init_features=32)) == "unet"
    assert describe_model(dict(model="unet", init_features=64)) == "unet (64 features)"
    assert describe_model(dict(model="unet++", model_args={"deep_supervision": True})) == "unet++ (deep sup.)"
    assert describe_model(experiments.run_parameters("unet-bce_dice-fast-context", "runs/x")) == \
        "unet (2.5-D, ±1 slices)"
    resnet = dict(model="resnet34_unet", model_args={"pretrained": True})
    assert describe_model(resnet) == "resnet34_unet (ImageNet asked)"  # a run from before it was recorded
    assert describe_model(resnet, dict(encoder_weights="random")) == \
        "resnet34_unet (random init: no ImageNet file)"
    assert describe_model(resnet, dict(encoder_weights="ImageNet")) == "resnet34_unet (ImageNet encoder)"


def test_mean_hd95_skips_patients_without_one(tmp_path):
    (tmp_path / "predictions").mkdir()
    (tmp_path / "predictions" / "metrics.csv").write_text("patient,dsc,hd95\na,0.9,2.0\nb,0.0,\nc,0.8,5.0\n")
    assert comparisons.mean_hd95(tmp_path) == 3.5


def test_cross_validation_pools_patients_at_each_folds_best_epoch(tmp_path):
    runs = [
        Run("r", 0, tmp_path, hand_made_results(1, [dict(a=0.7, b=0.9), dict(a=0.1, b=0.1)], 2, 0)),
        Run("r", 1, tmp_path, hand_made_results(2, [dict(c=0.5), dict(c=0.95)], 2, 1)),
        Run("r", None, tmp_path, hand_made_results(1, [dict(x=0.3)])),
    ]
    entry = comparisons.cross_validation(runs)["r"]
    assert entry["fold_dsc"] == {0: pytest.approx(0.8), 1: pytest.approx(0.95)}
    # the sample standard deviation: |0.95 - 0.8| / sqrt(2)
    assert entry["mean"] == pytest.approx(0.875) and entry["std"] == pytest.approx(0.15 / 2 ** 0.5)
    assert entry["pooled"] == pytest.approx((0.7 + 0.9 + 0.95) / 3) and entry["complete"]
    assert entry["pooled_last"] == pytest.approx((0.1 + 0.1 + 0.95) / 3)  # each fold's last epoch, not its best
    assert entry["last_native_mean"] is None  # these runs did not score their epochs at 256x256


@pytest.mark.slow
def test_report_from_the_runs_keeps_the_hand_written_analysis(runs, tmp_path):
    runs_dir, results, folds = runs
    out, figures = tmp_path / "REPORT.md", tmp_path / "figures"
    score_runs.score(runs_dir)  # inference, a step of its own: the report runs none
    rows = report.write_report(runs_dir, out, figures)
    text = out.read_text()
    assert "**Synthetic data.**" in text
    assert [row["name"] for row in rows] == ["attention_unet-dice"]
    row = (f"| attention_unet-dice | attention_unet (4 features) | dice | adam 0.001 | constant | 2 | 32 | "
           f"{results['best_val_dsc']:.4f} |")
    assert row in text
    fold_mean = np.mean([fold["best_val_dsc"] for fold in folds])
    assert "| unet-bce_dice | 2 of 2 |" in text and f"{fold_mean:.4f} ±" in text
    for name in ("val_dsc_curves.png", "best-dsc.png", "examples.png"):
        assert (figures / name).stat().st_size > 1000
        assert f"](figures/{name})" in text
    assert (runs_dir / "attention_unet-dice" / "predictions" / "metrics.csv").exists()
    assert results_files.DEFAULT_ANALYSIS in text

    out.write_text(text.replace(results_files.DEFAULT_ANALYSIS, "Deep supervision helped, by hand."))
    for name in ("best-dsc.png", "examples.png"):
        (figures / name).unlink()
    # without weights or inference (as from the small files a GPU machine sends back) the pictures come back
    collected = tmp_path / "collected"
    shutil.copytree(runs_dir, collected, ignore=shutil.ignore_patterns("weights", "checkpoint.pt"))
    report.write_report(collected, out, figures)
    regenerated = out.read_text()
    assert "Deep supervision helped, by hand." in regenerated and results_files.DEFAULT_ANALYSIS not in regenerated
    assert "## The best run: attention_unet-dice" in regenerated and "](figures/examples.png)" in regenerated
    assert (figures / "examples.png").read_bytes() == (collected / "attention_unet-dice" / "predictions" /
                                                         "examples.png").read_bytes()


def test_real_runs_below_the_reference_settings_are_flagged_as_not_comparable(tmp_path):
    def report_of(**params):
        results = hand_made_results(1, [dict(a=0.5)], epochs=100)
        results["params"].update(params)
        (tmp_path / "runs" / "unet-dice").mkdir(parents=True, exist_ok=True)
        (tmp_path / "runs" / "unet-dice" / "results.json").write_text(json.dumps(results))
        report.write_report(tmp_path / "runs", tmp_path / "REPORT.md", tmp_path / "figures")
        return (tmp_path / "REPORT.md").read_text()

    assert "Reduced settings" not in report_of()  # 256 px, 100 epochs, batch 16: the reference's
    for reduced in (dict(image_size=64), dict(epochs=12), dict(batch_size=8)):
        text = report_of(**reduced)
        assert "**Reduced settings.**" in text and "Synthetic data" not in text
    assert "| 1 of 100, unfinished | 64 |" in report_of(image_size=64)


def test_several_runs_folders_give_a_section_each_with_its_own_figures_and_one_analysis(tmp_path):
    for protocol, size, epochs, value in (("gpu", 256, 100, 0.9), ("cpu", 64, 12, 0.8)):
        results = hand_made_results(1, [dict(a=value, b=value)], recipe={}, epochs=epochs)
        results["params"].update(image_size=size)
        results["history"] *= epochs
        (tmp_path / protocol / "unet-dice").mkdir(parents=True)
        (tmp_path / protocol / "unet-dice" / "results.json").write_text(json.dumps(results))
    out = tmp_path / "REPORT.md"
    argv = ["--out", str(out)]
    for protocol in ("gpu", "cpu"):
        argv += ["--runs-dir", str(tmp_path / protocol), "--figures-dir", str(tmp_path / f"{protocol}-figures")]
    assert report.main(argv) == 0
    text = out.read_text()
    gpu, cpu = text.index(f"## `{tmp_path / 'gpu'}/`: 256 px, 100 epochs, batch 16, test device"), \
        text.index(f"## `{tmp_path / 'cpu'}/`: 64 px, 12 epochs, batch 16, test device")
    assert gpu < cpu and text.count("### Every run on the reference split") == 2
    assert "| 0.9000 |" in text[gpu:cpu] and "| 0.8000 |" in text[cpu:]
    assert "**Reduced settings.**" in text[cpu:] and "**Reduced settings.**" not in text[:cpu]  # the cpu section's
    assert "](gpu-figures/val_dsc_curves.png)" in text and "](cpu-figures/val_dsc_curves.png)" in text
    assert (tmp_path / "gpu-figures" / "val_dsc_curves.png").exists()
    assert (tmp_path / "cpu-figures" / "val_dsc_curves.png").exists()
    assert text.count(results_files.ANALYSIS_START) == 1 and text.count("- unet-dice: commit abc1234") == 2
    with pytest.raises(ValueError, match="2 runs folders and 1 figures folders"):
        report.write_report([tmp_path / "gpu", tmp_path / "cpu"], out, tmp_path / "f")


def test_report_without_runs_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="no results.json under it; run experiments.py first"):
        report.write_report(tmp_path, tmp_path / "REPORT.md", tmp_path / "f")


def test_paired_comparison_hand_computed():
    baseline = dict(a=0.5, b=0.6, c=0.7, only_here=0.9)
    better = dict(a=0.6, b=0.7, c=0.8, only_there=0.1)
    result = comparisons.paired_comparison(baseline, better)
    assert result["patients"] == 3 and (result["improved"], result["worse"], result["tied"]) == (3, 0, 0)
    assert result["mean_difference"] == pytest.approx(0.1)
    assert (result["low"], result["high"]) == pytest.approx((0.1, 0.1))  # every resample's mean is 0.1
    # differences +1 and -1: a resample of two has mean -1, 0 or +1 with chances 1/4, 1/2, 1/4
    split = comparisons.paired_comparison(dict(a=0.0, b=1.0), dict(a=1.0, b=0.0))
    assert split["mean_difference"] == 0.0 and (split["low"], split["high"]) == (-1.0, 1.0)
    assert (split["improved"], split["worse"]) == (1, 1)
    assert comparisons.paired_comparison(dict(a=0.5), dict(b=0.5)) is None
    # Wilcoxon signed-rank, exact for 5 untied differences: |d| ranks 0.05 -> 1 (the only negative), 0.1 -> 2,
    # 0.15 -> 3, 0.2 -> 4, 0.3 -> 5; W- = 1, and of the 32 equally likely sign patterns 2 have W <= 1 (sums 0
    # and 1): one-sided 2/32, two-sided 0.125
    five = comparisons.paired_comparison(dict(zip("abcde", [0.5] * 5)), dict(zip("abcde", [0.6, 0.7, 0.45, 0.8, 0.65])))
    assert five["wilcoxon_p"] == pytest.approx(0.125)
    assert comparisons.paired_comparison(dict(a=0.5, b=0.6), dict(a=0.5, b=0.6))["wilcoxon_p"] is None  # all tied


def write_metrics(folder, scores):
    (folder / "predictions").mkdir(parents=True)
    (folder / "predictions" / "metrics.csv").write_text(
        "patient,dsc,iou,precision,recall,hd95,predicted_voxels,true_voxels,dsc_preprocessed\n"
        + "".join(f"{patient},{value},0,1,{value},2.0,10,10,{value}\n" for patient, value in scores.items()))


def test_paired_rows_compare_every_recipe_with_the_reference_recipe_on_the_same_patients(tmp_path):
    runs = []
    for name, recipe, offset in (("unet-dice", {}, 0.0), ("modern", {"loss": "bce_dice"}, 0.05)):
        for fold, patients in enumerate((("a", "b"), ("c", "d"))):
            folder = tmp_path / name / f"fold-{fold}"
            grid = {patient: 0.5 + offset for patient in patients}
            results = hand_made_results(1, [grid], folds=2, fold=fold, recipe=recipe)
            write_metrics(folder, {patient: 0.6 + offset + 0.01 * index for index, patient in enumerate(patients)})
            runs.append(Run(name, fold, folder, results))
    rows = comparisons.paired_rows(runs, comparisons.cross_validation(runs))
    assert len(rows) == 1
    row = rows[0]
    assert (row["experiment"], row["baseline"], row["patients"]) == ("modern", "unet-dice, 2-fold pooled", 4)
    assert row["mean_difference"] == pytest.approx(0.05) and row["counts"] == "4 / 0 / 0"
    assert row["interval"] == "+0.0500 to +0.0500"
    # a recipe whose folds have no inference yet is compared on the grid, with the reference recipe on the grid too
    (tmp_path / "modern" / "fold-0" / "predictions" / "metrics.csv").unlink()
    (tmp_path / "modern" / "fold-1" / "predictions" / "metrics.csv").unlink()
    rows = comparisons.paired_rows(runs, comparisons.cross_validation(runs))
    assert rows[0]["mean_difference"] == pytest.approx(0.05)


def pairs(runs):
    """paired_rows of runs by (experiment, baseline)."""
    rows = comparisons.paired_rows(runs, comparisons.cross_validation(runs))
    return {(row["experiment"], row["baseline"]): row for row in rows}


def test_pooled_over_folds_a_third_recipe_is_paired_with_the_modern_recipe_as_well_as_the_reference(tmp_path):
    from experiments import FAST, MODERN

    runs = []
    # per patient at 256x256: reference 0.5 0.6 | 0.7 0.8, modern +0.1 each, fast +0.2 on fold 0 and +0.0 on fold 1
    for name, recipe, offsets in (("unet-dice", {}, (0.0, 0.0)), ("unet-bce_dice-adamw-cosine", MODERN, (0.1, 0.1)),
                                  ("unet-bce_dice-fast", FAST, (0.2, 0.0))):
        for fold, patients in enumerate((dict(a=0.5, b=0.6), dict(c=0.7, d=0.8))):
            folder = tmp_path / name / f"fold-{fold}"
            write_metrics(folder, {patient: value + offsets[fold] for patient, value in patients.items()})
            results = hand_made_results(1, [dict.fromkeys(patients, 0.5)], folds=2, fold=fold, recipe=dict(recipe))
            runs.append(Run(name, fold, folder, results))
    rows = pairs(runs)
    assert sorted(rows) == [
        ("unet-bce_dice-adamw-cosine", "unet-dice, 2-fold pooled"),
        ("unet-bce_dice-fast", "unet-bce_dice-adamw-cosine, 2-fold pooled"),
        ("unet-bce_dice-fast", "unet-dice, 2-fold pooled"),
    ]
    against_modern = rows[("unet-bce_dice-fast", "unet-bce_dice-adamw-cosine, 2-fold pooled")]
    assert against_modern["mean_difference"] == pytest.approx(0.0) and against_modern["counts"] == "2 / 2 / 0"
    against_reference = rows[("unet-bce_dice-fast", "unet-dice, 2-fold pooled")]
    assert against_reference["mean_difference"] == pytest.approx(0.1) and against_reference["counts"] == "2 / 0 / 2"
    # a recipe with a fold still to run says how many of them its pairs pool
    partial = [run for run in runs if not (run.name == "unet-bce_dice-fast" and run.fold == 1)]
    pooled = pairs(partial)[("unet-bce_dice-fast", "unet-bce_dice-adamw-cosine, 1 of 2 folds pooled")]
    assert pooled["patients"] == 2
    # a lever on the fast recipe, screened on fold 0 (0.75, 0.85 against its 0.7, 0.8), is paired with it too
    folder = tmp_path / "unet-bce_dice-fast-ema" / "fold-0"
    write_metrics(folder, dict(a=0.75, b=0.85))
    lever = Run("unet-bce_dice-fast-ema", 0, folder, hand_made_results(1, [dict(a=0.5, b=0.5)], folds=2,
                                                                              fold=0, recipe=dict(FAST)))
    rows = pairs(runs + [lever])
    against_fast = rows[("unet-bce_dice-fast-ema", "unet-bce_dice-fast, 1 of 2 folds pooled")]
    assert against_fast["patients"] == 2 and against_fast["mean_difference"] == pytest.approx(0.05)
    assert ("unet-bce_dice-adamw-cosine", "unet-bce_dice-fast, 2-fold pooled") not in rows  # said the other way


def test_on_the_split_a_one_change_run_is_paired_with_the_modern_recipe_as_well_as_the_reference(tmp_path):
    from experiments import MODERN

    runs = []
    for name, recipe, scores in (("unet-dice", {}, dict(a=0.5, b=0.6)),
                                 ("unet-bce_dice-adamw-cosine", dict(MODERN), dict(a=0.7, b=0.7)),
                                 ("unet-lovasz-adamw-cosine", dict(MODERN, loss="lovasz"), dict(a=0.8, b=0.6))):
        write_metrics(tmp_path / name, scores)
        runs.append(Run(name, None, tmp_path / name, hand_made_results(1, [scores], recipe=recipe)))
    rows = pairs(runs)
    assert sorted(rows) == [
        ("unet-bce_dice-adamw-cosine", "unet-dice, reference split"),
        ("unet-lovasz-adamw-cosine", "unet-bce_dice-adamw-cosine, reference split"),
        ("unet-lovasz-adamw-cosine", "unet-dice, reference split"),
    ]
    # lovasz: +0.1 and -0.1 against the modern recipe, +0.3 and 0 against the reference
    against_modern = rows[("unet-lovasz-adamw-cosine", "unet-bce_dice-adamw-cosine, reference split")]
    assert against_modern["mean_difference"] == pytest.approx(0.0) and against_modern["counts"] == "1 / 1 / 0"
    against_reference = rows[("unet-lovasz-adamw-cosine", "unet-dice, reference split")]
    assert against_reference["mean_difference"] == pytest.approx(0.15) and against_reference["counts"] == "1 / 0 / 1"


def test_the_report_shows_what_the_largest_connected_component_changed(tmp_path):
    folder = tmp_path / "unet-dice"
    (folder / "predictions").mkdir(parents=True)
    (folder / "predictions" / "metrics.csv").write_text(
        "patient,dsc,iou,precision,recall,hd95,predicted_voxels,true_voxels,dsc_preprocessed,dsc_without_lcc,"
        "components\n"
        "a,0.0,0,0,0,,8,4,0.0,0.5,2\n"
        "b,0.9,0.8,1,0.8,2.0,8,10,0.9,0.905,3\n")
    results = hand_made_results(1, [dict(a=0.0, b=0.9)], recipe={})
    runs = [Run("unet-dice", None, folder, results)]
    assert comparisons.lcc_effect(folder) == dict(a=(0.0, 0.5, 2), b=(0.9, 0.905, 3))
    (row,) = comparisons.lcc_rows(runs)
    assert row["dsc"] == pytest.approx(0.45) and row["without"] == pytest.approx(0.7025)
    assert row["changed"] == "a 0.000 (without 0.500, 2 components)"  # b moved by 0.005 only
    assert comparisons.lcc_rows([Run("unet-dice", 3, folder, results)])[0]["experiment"] == "unet-dice fold 3"
    assert [(r["patient"], r["components"]) for r in report.best_patients(runs[0])] == [("a", 2), ("b", 3)]
    write_metrics(tmp_path / "older", dict(a=0.5))  # a metrics.csv from before the columns: no row
    assert comparisons.lcc_rows([Run("older", None, tmp_path / "older", results)]) == []
    (tmp_path / "runs" / "unet-dice").mkdir(parents=True)
    (tmp_path / "runs" / "unet-dice" / "results.json").write_text(json.dumps(results))
    shutil.copytree(folder / "predictions", tmp_path / "runs" / "unet-dice" / "predictions")
    report.write_report(tmp_path / "runs", tmp_path / "REPORT.md", tmp_path / "figures")
    text = (tmp_path / "REPORT.md").read_text()
    assert "## What the 3-D largest connected component does" in text
    assert "| unet-dice | 0.4500 | 0.7025 | a 0.000 (without 0.500, 2 components) |" in text
    assert "| patient | DSC | precision | recall | HD95 (px) | true voxels | DSC without LCC | components |" in text
    (tmp_path / "runs" / "unet-dice" / "predictions" / "metrics.csv").write_text(
        (tmp_path / "older" / "predictions" / "metrics.csv").read_text())
    report.write_report(tmp_path / "runs", tmp_path / "REPORT.md", tmp_path / "figures")
    text = (tmp_path / "REPORT.md").read_text()  # a run scored before the columns: no empty ones, no LCC section
    assert "| patient | DSC | precision | recall | HD95 (px) | true voxels |\n" in text
    assert "## What the 3-D largest connected component does" not in text


@pytest.mark.slow
def test_the_report_scores_each_fold_model_on_its_own_fold_at_the_original_geometry(runs, tmp_path):
    runs_dir, _, folds = runs
    score_runs.score(runs_dir)
    report.write_report(runs_dir, tmp_path / "REPORT.md", tmp_path / "figures")
    for fold, results in enumerate(folds):
        scored = native_scores(runs_dir / "unet-bce_dice" / f"fold-{fold}")
        assert sorted(scored) == sorted(results["validation_patients"])
    text = (tmp_path / "REPORT.md").read_text()
    assert "| unet-bce_dice | 2 of 2 |" in text and "| 8 |" in text  # 8 patients at 256x256, pooled


def test_progressive_runs_show_both_sizes_and_bf16_in_the_table():
    fast = experiments.run_parameters("unet-bce_dice-fast", "runs/x")
    assert describe_size(fast) == "64 -> 128 (10 + 4 epochs)"
    assert describe_size(dict(image_size=64)) == "64"
    # the precision a run used (its speed_options), else what its recipe asks for
    assert describe_optimiser(fast) == "adamw 0.001, wd 0.0001, bf16 where native"
    assert describe_optimiser(fast, dict(speed_options=dict(amp="torch.bfloat16"))) == "adamw 0.001, wd 0.0001, bf16"
    assert describe_optimiser(fast, dict(speed_options=dict(amp="None"))) == "adamw 0.001, wd 0.0001"
    assert describe_optimiser(dict(fast, amp="bf16")) == "adamw 0.001, wd 0.0001, bf16"  # runs before "native"
    ema = experiments.run_parameters("unet-bce_dice-fast-ema", "runs/x")
    assert describe_optimiser(ema, dict(speed_options=dict(amp="torch.bfloat16"))) == \
        "adamw 0.001, wd 0.0001, bf16, weights EMA 0.998"
    assert describe_size(experiments.run_parameters("unet-bce_dice-fast256", "runs/x")) == \
        "64 -> 256 (10 + 2 epochs)"
    assert describe_size(experiments.run_parameters("nuclei-unet-fast-stretch", "runs/x")) == "96, stretched"
    assert describe_size(dict(fast, to_square="stretch")) == "64 -> 128 (10 + 4 epochs), stretched"


def test_the_schedule_column_names_tta_sequence_dropout_and_intensity_augmentation():
    assert describe_schedule(experiments.run_parameters("unet-bce_dice-adamw-cosine-seqdrop", "runs/x",
                                                           overrides=dict(epochs=100))) == \
        "cosine, warm-up 3, clip 1, sequence dropout 0.2"
    assert describe_schedule(experiments.run_parameters("unet-bce_dice-fast-intensity", "runs/x")) == \
        "cosine, warm-up 1, clip 1, intensity augmentation"
    assert describe_schedule(dict(schedule="constant", tta=True)) == "constant, flip TTA"


def test_provenance_names_the_commits_of_a_resumed_runs_earlier_epochs():
    assert report.earlier_note(dict(commit="b", earlier_commits=["a", "b"])) == " (earlier epochs at a)"
    assert report.earlier_note(dict(commit="b", earlier_commits=["b"])) == ""
    assert report.earlier_note(dict(commit="b")) == ""
    # a resumed run whose wall time counts its last segment only (older code) is said to
    assert report.wall_note(dict(train_seconds=3111, wall_seconds=2439, resumed_after_epochs=[6])) == \
        " (its last segment only: less than its training time)"
    assert report.wall_note(dict(train_seconds=60, wall_seconds=61, resumed_after_epochs=[6])) == ""
    assert report.wall_note(dict(train_seconds=60, wall_seconds=50)) == ""  # never resumed: no segment to blame


def test_provenance_names_the_training_seed_not_only_the_splits(tmp_path):
    results = dict(commit="c", device="cpu", split="5-fold, fold 0, seed 42", history=[{}], train_seconds=1,
                   data_dir="d", params=dict(seed=42, training_seed=1, image_size=64, batch_size=16))
    runs_given = [Run("r", 0, tmp_path, results),
                  Run("s", None, tmp_path, dict(results, params=dict(results["params"], training_seed=None)))]
    first, second = report.provenance_lines(runs_given)
    assert "seed 42, training seed 1," in first and "training seed 42," in second
    # the precision it trained in, where recorded: amp="native" makes it the machine's
    assert ", batch 16, train" in first
    trained = [Run("r", 0, tmp_path, dict(results, speed_options=dict(amp=amp))) for amp in ("torch.bfloat16", "None")]
    assert [", batch 16, bf16, train" in line for line in report.provenance_lines(trained)] == [True, False]
    assert ", batch 16, float32, train" in report.provenance_lines(trained)[1]


def test_a_training_seed_changes_the_run_but_not_its_folds(phantom_dir, tmp_path):
    def history(name, **seeds):
        out = tmp_path / name
        settings = dict(TINY, data_path=str(phantom_dir), cache_dir=str(tmp_path / "cache"), folds=4, fold=1,
                        weights_dir=str(out / "weights"), logs_dir=str(out / "logs"), device="cpu", threads=1)
        results = train.train(**settings, **seeds)
        return results["validation_patients"], [entry["loss"] for entry in results["history"]]

    patients, losses = history("default")
    assert history("same", training_seed=42) == (patients, losses)  # None means the split's seed: the same run
    other_patients, other_losses = history("other", training_seed=7)
    assert other_patients == patients and other_losses != losses  # same fold, another initialisation and sampling
    assert history("split", seed=7)[0] != patients  # while seed alone moves the folds too


@pytest.mark.slow
def test_runs_trained_on_another_machine_are_scored_on_the_data_here(runs, phantom_dir, tmp_path):
    runs_dir, _, folds = runs
    moved = tmp_path / "moved"
    shutil.copytree(runs_dir / "unet-bce_dice", moved / "unet-bce_dice")
    for fold in range(len(folds)):  # as a GPU machine's runs say: its own data folder, absent here
        path = moved / "unet-bce_dice" / f"fold-{fold}" / "logs" / "results.json"
        path.write_text(path.read_text().replace(json.dumps(str(phantom_dir))[1:-1], "/root/lgg/kaggle_3m"))
        shutil.rmtree(moved / "unet-bce_dice" / f"fold-{fold}" / "predictions", ignore_errors=True)
    with pytest.raises(Exception, match="/root/lgg/kaggle_3m"):
        score_runs.score(moved)
    assert len(score_runs.score(moved, data_path=str(phantom_dir))) == len(folds)
    assert score_runs.score(moved, data_path=str(phantom_dir)) == []  # scored already: skipped
    for fold, results in enumerate(folds):
        scored = native_scores(moved / "unet-bce_dice" / f"fold-{fold}")
        assert sorted(scored) == sorted(results["validation_patients"])
        here = inference.run(weights=str(runs_dir / "unet-bce_dice" / f"fold-{fold}" / "weights" / "unet.pt"),
                             data_path=str(phantom_dir), patients=results["validation_patients"], cache_dir=None,
                             predictions_dir=str(tmp_path / f"here-{fold}"), write_masks=False)
        assert scored == {row["patient"]: row["dsc"] for row in here["metrics"]}  # as if it had trained here


def test_runs_spread_over_gpus_one_at_a_time_on_each_in_order(tmp_path, monkeypatch):
    started, intervals, lock = [], [], threading.Lock()

    def fake_run(command, cwd, stdout, stderr, env):  # a run: its GPU, its order, then a results.json
        name, fold = command[2], command[command.index("--only-fold") + 1]
        begin = time.monotonic()
        with lock:
            started.append((name, fold))
        time.sleep(0.2)
        out = experiments.run_dir(tmp_path / "runs", name, 2, int(fold))
        (out / "logs").mkdir()
        (out / "logs" / "results.json").write_text(json.dumps(dict(best_val_dsc=0.5, best_epoch=1)))
        with lock:
            intervals.append((env["CUDA_VISIBLE_DEVICES"], begin, time.monotonic()))
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(experiments.subprocess, "run", fake_run)
    monkeypatch.setattr(experiments, "warm_cache", lambda data_path, overrides: None)
    argv = ["unet-dice", "unet-focal", "--folds", "2", "--gpus", "0,1", "--executor", "python", "--runs-dir",
            str(tmp_path / "runs")]
    assert experiments.main(argv) == 0
    # the first two runs take the two GPUs (in either order), the other two wait for one to come free
    assert set(started[:2]) == {("unet-dice", "0"), ("unet-dice", "1")}
    assert set(started[2:]) == {("unet-focal", "0"), ("unet-focal", "1")}
    assert {gpu for gpu, _, _ in intervals} == {"0", "1"}  # both GPUs used, and nothing else
    for gpu in "01":  # never two runs at once on one GPU
        spans = sorted((begin, end) for used, begin, end in intervals if used == gpu)
        assert all(end <= next_begin for (_, end), (next_begin, _) in zip(spans, spans[1:]))
    with pytest.raises(SystemExit):
        experiments.main(["unet-dice", "--gpus", "0,0"])  # the same GPU twice: refused before any work


def test_gpu_slots_hold_jobs_runs_per_gpu():
    assert experiments.gpu_slots(None, 1) == [None]
    assert experiments.gpu_slots("0,1", 2) == ["0", "1", "0", "1"]  # a second round on each GPU
    with pytest.raises(ValueError, match="give distinct GPU indices"):
        experiments.gpu_slots("0,cuda:1", 1)
