"""tools/folder_results.py: a results file for runs on one's own images, from what training and inference wrote."""

import csv

import imageio.v3 as iio
import numpy as np
import pytest

import synthetic
import train
from metrics import dsc
from runs import read_results, Run
from tools import folder_results, score_runs


@pytest.fixture(scope="module")
def scored_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("nuclei")
    data = synthetic.make_phantom_folder(root / "data", "nuclei", images=12, seed=2)
    train.train(data_path=str(data), runs_dir=str(root / "runs"), run_name="tiny", cache_dir=str(root / "c"),
                epochs=2, image_size=32, init_features=4, batch_size=4, workers=0, vis_images=2, threads=1)
    assert len(score_runs.score(root / "runs", device="cpu")) == 1
    return root / "runs" / "tiny"


def test_the_grid_predictions_are_what_training_validated(scored_run):
    run = Run("tiny", None, scored_run, read_results(scored_run))
    predicted = folder_results.grid_predictions(run)
    recorded = run.best_entry["val_dsc_per_patient"]  # the best weights' epoch, per validation image
    assert list(predicted) == run.results["validation_patients"]
    for case, (probs, truth) in predicted.items():
        assert dsc(probs > 0.5, truth) == pytest.approx(recorded[case], abs=1e-6)


def test_the_results_file_holds_each_runs_figures_and_provenance(scored_run, tmp_path):
    out = tmp_path / "nuclei.md"
    assert folder_results.main([str(scored_run), "--title", "Phantom nuclei", "--out", str(out)]) == 0
    text = out.read_text()
    with open(scored_run / "predictions" / "metrics.csv") as handle:
        iou = [float(row["iou"]) for row in csv.DictReader(handle)]
    row = next(line for line in text.splitlines() if line.startswith("| tiny |"))
    assert f"| {np.mean(iou):.4f} / {np.median(iou):.4f} |" in row and "| 2 of 2 |" in row
    assert "layout nuclei" in text and "training seed 42" in text
    assert (tmp_path / "nuclei-figures" / "tiny-examples.png").exists()
    assert "](nuclei-figures/tiny-examples.png)" in text
    # per image size: each validation image counted once, under its own size, grey (the phantom's channels agree)
    sizes = {}
    with open(scored_run / "predictions" / "metrics.csv") as handle:
        for metrics in csv.DictReader(handle):
            image = scored_run.parent.parent / "data" / metrics["patient"] / "images" / f"{metrics['patient']}.png"
            shape = iio.imread(image).shape
            sizes.setdefault(f"{shape[0]} x {shape[1]}", []).append(float(metrics["iou"]))
    section = text.split("### tiny: per image size and colour", 1)[1].split("##", 1)[0]
    for size, values in sizes.items():
        assert f"| {size} | grey | {len(values)} | {np.mean(values):.3f} / {np.median(values):.3f} |" in section
    assert section.count("| grey |") == len(sizes) and "colour" not in section.replace("and colour", "")


def test_an_unscored_run_is_refused_with_the_step_to_take(scored_run, tmp_path):
    (scored_run / "predictions" / "metrics.csv").rename(tmp_path / "kept.csv")
    try:
        with pytest.raises(FileNotFoundError, match="not scored yet.*tools.score_runs"):
            folder_results.main([str(scored_run), "--title", "t", "--out", str(tmp_path / "x.md")])
    finally:
        (tmp_path / "kept.csv").rename(scored_run / "predictions" / "metrics.csv")
