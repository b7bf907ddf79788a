import json
import os
import shutil

import imageio.v3 as iio
import numpy as np
import pytest

import checkpoint
import dataset
import synthetic
import train
import utils
from conftest import REPO
from unet import UNet

TINY = dict(image_size=32, init_features=4, batch_size=4, workers=0, validation_cases=3, lr=1e-3)


def test_training_writes_logs_results_and_loadable_best_weights(phantom_dir, tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    results = train.train(
        data_path=phantom_dir, epochs=2, vis_freq=1, vis_images=5,
        weights_dir=tmp_path / "weights", logs_dir=tmp_path / "logs", cache_dir=tmp_path / "cache", **TINY,
    )
    assert "Best validation mean DSC: " in capsys.readouterr().out
    saved = json.loads((tmp_path / "logs" / "results.json").read_text())
    assert [entry["epoch"] for entry in saved["history"]] == [1, 2]
    assert saved["best_val_dsc"] == max(entry["val_dsc"] for entry in saved["history"]) == results["best_val_dsc"]
    assert saved["validation_patients"] == ["TCGA_SY_0002_20000101", "TCGA_SY_0001_20000101", "TCGA_SY_0006_20000101"]
    assert all(0 <= entry["val_dsc"] <= 1 and 0 <= entry["loss"] <= 1 for entry in saved["history"])
    model, metadata = checkpoint.load_weights(tmp_path / "weights" / "unet.pt")
    assert metadata["image_size"] == 32 and metadata["model_args"]["init_features"] == 4
    assert model.encoder1.enc1conv1.weight.shape[0] == 4
    events = EventAccumulator(str(tmp_path))  # the run folder holding weights/ and logs/: its events beside them
    events.Reload()
    assert {"val_loss", "val_dsc"} <= set(events.Tags()["scalars"])
    assert len(events.Scalars("val_dsc")) == 2
    # drawn in the background from the first 5 validation slices: 32 x 32 RGB, the truth outlined green where there
    # is one, each named by its patient and the dataset's slice number (the first validation patient's files 2-6)
    valid_set = dataset.BrainSegmentationDataset(phantom_dir, subset="validation", random_sampling=False,
                                                 image_size=32, validation_cases=3, cache_dir=tmp_path / "cache")
    first = valid_set.patients[0]
    tags = [f"validation overlays (red prediction, green truth)/{first} slice {number}"
            for number, _, _ in valid_set.files[first][1:6]]
    assert events.Tags()["images"] == tags
    for index, tag in enumerate(tags):
        picture = iio.imread(events.Images(tag)[-1].encoded_image_string)
        assert picture.shape == (32, 32, 3)
        has_truth = valid_set.volumes[0][1][index].any()
        assert (picture == utils.GREEN).all(axis=-1).any() == has_truth, tag


def test_each_epoch_is_scored_at_the_original_geometry_as_inference_scores_it(phantom_dir, tmp_path):
    import inference

    results = train.train(data_path=phantom_dir, epochs=1, vis_images=0, weights_dir=tmp_path / "w",
                          logs_dir=tmp_path / "l", cache_dir=tmp_path / "c", **TINY)
    entry = results["history"][0]
    scored = inference.run(weights=tmp_path / "w" / "unet.pt", data_path=phantom_dir, cache_dir=tmp_path / "c",
                           predictions_dir=tmp_path / "p", workers=0, fuse=False, write_masks=False)
    assert {row["patient"]: row["dsc"] for row in scored["metrics"]} == pytest.approx(
        entry["val_dsc_native_per_patient"], abs=1e-9)
    assert {row["patient"]: row["dsc_without_lcc"] for row in scored["metrics"]} == pytest.approx(
        entry["val_dsc_native_without_lcc_per_patient"], abs=1e-9)
    assert entry["val_dsc_native"] == pytest.approx(np.mean(list(entry["val_dsc_native_per_patient"].values())))
    assert entry["images"] == entry["step"] * 4 and entry["pixels"] == entry["images"] * 32 * 32
    assert 0 < entry["train_seconds"] <= results["train_seconds"]


def test_training_loss_goes_down_on_the_phantom(phantom_dir, tmp_path):
    results = train.train(
        data_path=phantom_dir, epochs=4, vis_freq=100, vis_images=0, aug_scale=None, aug_angle=None,
        weights_dir=tmp_path / "w", logs_dir=tmp_path / "l", cache_dir=tmp_path / "c", **{**TINY, "lr": 3e-3},
    )
    losses = [entry["loss"] for entry in results["history"]]
    assert losses[-1] < losses[0]


def test_synthetic_demo_settings_apply_only_on_the_synthetic_default(phantom_dir):
    params, message = train.prepare(data_path=phantom_dir, epochs=7)
    assert params["epochs"] == 7 and "yours kept: {'epochs': 7}" in message  # asked for: kept, and said
    assert params["image_size"] == train.SYNTHETIC_DEMO["image_size"] and "synthetic demo settings" in message
    params, _ = train.prepare(synthetic_demo=False, data_path=phantom_dir, epochs=7)
    assert params["epochs"] == 7


@pytest.mark.slow
def test_the_synthetic_demo_shows_learning(tmp_path):
    """What a newcomer runs first: the phantom default at SYNTHETIC_DEMO. Its validation DSC must rise over the
    epochs (the phantom's lesion is faint and has FLAIR-bright decoys, so it is not learnt in ten steps)."""
    data = synthetic.make_phantom_dataset(tmp_path / "synthetic")
    params, _ = train.prepare(data_path=str(data), runs_dir=str(tmp_path / "runs"), cache_dir=str(tmp_path / "c"))
    history = train.train(**params)["history"]
    curve = [entry["val_dsc"] for entry in history]
    assert len(curve) == train.SYNTHETIC_DEMO["epochs"]
    assert max(curve[-3:]) >= curve[0] + 0.05 and min(curve[-3:]) >= curve[0], curve
    assert history[-1]["loss"] < 0.8 * history[0]["loss"]


def run_notebook(name, cwd, parameters):
    import papermill

    env_path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env_path]))
    try:
        papermill.execute_notebook(
            str(REPO / name), str(cwd / name), parameters=parameters, cwd=str(cwd), kernel_name="python3",
            progress_bar=False,
        )
    finally:
        os.environ["PYTHONPATH"] = env_path


@pytest.mark.slow
def test_a_misspelt_notebook_parameter_stops_the_notebook_before_any_work(tmp_path):
    import papermill

    with pytest.raises(papermill.PapermillExecutionError, match=r"unknown notebook parameter\(s\): epoch;"):
        run_notebook("train.ipynb", tmp_path, dict(epoch=2, data_path=str(tmp_path / "not-read")))
    with pytest.raises(papermill.PapermillExecutionError, match=r"unknown notebook parameter\(s\): treshold;"):
        run_notebook("inference.ipynb", tmp_path, dict(treshold=0.3))


@pytest.mark.slow
def test_notebooks_run_end_to_end_each_run_in_its_own_folder(phantom_dir, tmp_path):
    common = dict(data_path=str(phantom_dir), workers=0, validation_cases=3)
    tiny = dict(common, synthetic_demo=False, image_size=32, init_features=4, epochs=2, batch_size=4, vis_freq=1,
                vis_images=4)
    run_notebook("train.ipynb", tmp_path, dict(tiny, run_name="first"))
    run_notebook("train.ipynb", tmp_path, tiny)  # a second run: a new folder, named by its time, model and loss
    first, second = sorted((tmp_path / "runs").iterdir(), key=lambda folder: folder.name != "first")
    assert first.name == "first" and second.name.endswith("-unet-dice")
    for run in (first, second):
        assert (run / "weights" / "unet.pt").exists()
        assert len(list(run.glob("events.out.tfevents.*"))) == 1  # nothing merged into another run
        assert len(json.loads((run / "logs" / "results.json").read_text())["history"]) == 2
    run_notebook("inference.ipynb", tmp_path, dict(common, batch_size=8))  # the latest run's weights by default
    predictions = second / "predictions"
    assert (predictions / "dsc.png").stat().st_size > 10_000
    pngs = sorted(predictions.glob("*.png"))
    # every original slice at its own size, named as the dataset's files (the phantom's 1 .. 8), and dsc.png
    assert len(pngs) == 3 * 8 + 1 and pngs[0].name == "TCGA_SY_0001_20000101_1.png"
    assert iio.imread(pngs[0]).shape == (synthetic.SLICE_SIZE, synthetic.SLICE_SIZE, 3)  # not the 32 px grid
    gifs = sorted(predictions.glob("*.gif"))
    assert [gif.stem for gif in gifs] == ["TCGA_SY_0001_20000101", "TCGA_SY_0002_20000101", "TCGA_SY_0006_20000101"]
    assert iio.imread(gifs[0], index=None).shape[0] == 8
    assert (predictions / "metrics.csv").exists() and not (first / "predictions").exists()


@pytest.mark.slow
def test_inference_notebook_runs_on_patients_without_masks(phantom_dir, tmp_path):
    checkpoint.save_weights(UNet(init_features=4), tmp_path / "weights" / "unet.pt", 32, dict(init_features=4))
    new = tmp_path / "new" / "TCGA_SY_0003_20000101"
    new.mkdir(parents=True)
    for image in (phantom_dir / new.name).glob("*.tif"):
        if not image.name.endswith("_mask.tif"):
            shutil.copy(image, new / image.name)
    run_notebook("inference.ipynb", tmp_path, dict(data_path=str(new.parent), workers=0,
                                                   weights=str(tmp_path / "weights" / "unet.pt")))
    # weights outside a run folder: predictions beside the working folder
    assert (tmp_path / "predictions" / "TCGA_SY_0003_20000101.gif").exists()
    assert len(list((tmp_path / "predictions" / "masks" / new.name).glob("*_mask.tif"))) == 8
    assert not (tmp_path / "predictions" / "metrics.csv").exists()
