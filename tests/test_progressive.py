"""Progressive resizing: the first epochs train and validate on smaller slices, the rest at image_size."""

import pytest
import torch

import inference
import parameters
import train
from batches import Batches, datasets, shrink, trained_pixels, training_size


def settings(**overrides):
    return parameters.settings(train.DEFAULTS, **overrides)


def test_shrink_averages_images_and_keeps_mostly_abnormal_blocks_of_the_mask():
    images = torch.arange(16.0).reshape(1, 1, 4, 4)
    masks = torch.tensor([[1, 1, 1, 0],
                           [1, 0, 1, 0],
                           [0, 0, 0, 0],
                           [1, 0, 0, 0]], dtype=torch.float32).reshape(1, 1, 4, 4)
    small_images, small_masks = shrink(images, masks, 2)
    # blocks: (0,1,4,5) (2,3,6,7) (8,9,12,13) (10,11,14,15); their mask counts 3, 2, 1, 0 of 4
    assert small_images.flatten().tolist() == [2.5, 4.5, 10.5, 12.5]
    assert small_masks.flatten().tolist() == [1.0, 0.0, 0.0, 0.0]
    same_images, same_masks = shrink(images, masks, 4)
    assert same_images is images and same_masks is masks


def test_the_first_progressive_epochs_train_small_and_pixels_add_up_by_hand():
    params = settings(image_size=64, progressive_size=32, progressive_epochs=2, epochs=5)
    assert [training_size(params, epoch) for epoch in range(5)] == [32, 32, 64, 64, 64]
    assert trained_pixels(params, 3, images_per_epoch=100) == 100 * (32 * 32 * 2 + 64 * 64)
    plain = settings(image_size=64, epochs=5)
    assert [training_size(plain, epoch) for epoch in range(5)] == [64] * 5
    assert trained_pixels(plain, 2, images_per_epoch=10) == 10 * 64 * 64 * 2


@pytest.mark.parametrize("pipeline", ["reference", "device"])
def test_training_and_validation_batches_come_at_the_epochs_size(phantom_dir, tmp_path, pipeline):
    params = settings(image_size=32, progressive_size=16, progressive_epochs=1, epochs=2, batch_size=4, workers=0,
                      validation_cases=3, cache_dir=str(tmp_path / "cache"))
    train_set, valid_set = datasets(params, phantom_dir, augment_on_cpu=pipeline == "reference")
    batches = Batches(pipeline, train_set, valid_set, params, torch.device("cpu"))
    first, second = next(batches.train(0)), next(batches.train(1))
    assert first[0].shape == (4, 3, 16, 16) and first[1].shape == (4, 1, 16, 16)
    assert set(first[1].unique().tolist()) <= {0.0, 1.0}
    assert second[0].shape == (4, 3, 32, 32)
    assert next(batches.validation(0))[0].shape[-2:] == (16, 16)
    assert next(batches.validation(1))[0].shape[-2:] == (32, 32)


def test_a_progressive_run_records_each_epochs_size_and_pixels(phantom_dir, tmp_path):
    results = train.train(data_path=phantom_dir, image_size=32, progressive_size=16, progressive_epochs=1, epochs=2,
                          init_features=4, batch_size=4, workers=0, validation_cases=3, vis_images=0,
                          data_pipeline="device", weights_dir=tmp_path / "w", logs_dir=tmp_path / "l",
                          cache_dir=tmp_path / "c")
    first, second = results["history"]
    assert (first["image_size"], second["image_size"]) == (16, 32)
    per_epoch = first["images"]
    assert second["images"] == 2 * per_epoch
    assert (first["pixels"], second["pixels"]) == (per_epoch * 16 * 16, per_epoch * (16 * 16 + 32 * 32))
    assert 0 < first["validation_seconds"] < first["train_seconds"]
    best = results["history"][results["best_epoch"] - 1]
    assert results["best_epoch"] == 2  # the only epoch at image_size
    assert torch.load(tmp_path / "w" / "unet.pt", weights_only=False)["image_size"] == 32
    # so inference preprocesses at image_size, as that epoch was validated, and scores what training scored
    scored = inference.run(weights=tmp_path / "w" / "unet.pt", data_path=phantom_dir, cache_dir=tmp_path / "c",
                           predictions_dir=tmp_path / "p", workers=0, fuse=False, write_masks=False)
    # to 1e-5, not exactly: batches of other sizes take other float kernels on some CPUs, and this untrained
    # model's probabilities near 0.5 flip a voxel (seen 2.5e-7 apart); predicting at 16 or 48 px is 1e-4 apart
    assert {row["patient"]: row["dsc"] for row in scored["metrics"]} == pytest.approx(
        best["val_dsc_native_per_patient"], abs=1e-5)


@pytest.mark.parametrize("overrides, message", [
    (dict(image_size=64, progressive_size=64, progressive_epochs=1), "progressive_size=64: use None or a multiple "
                                                                     "of 16 below image_size=64"),
    (dict(image_size=64, progressive_size=24, progressive_epochs=1), "progressive_size=24"),
    (dict(image_size=64, progressive_size=32, progressive_epochs=5, epochs=5), "progressive_epochs=5: use 0 .. 4"),
    (dict(image_size=64, progressive_epochs=2, epochs=5), "progressive_epochs=2: set progressive_size too"),
])
def test_impossible_progressive_settings_are_refused_before_any_work(overrides, message):
    with pytest.raises(parameters.ParameterError, match=message):
        train.train(**overrides)


@pytest.mark.parametrize("progressive, best_epoch", [(dict(), 1), (dict(progressive_size=16, progressive_epochs=1), 2)])
def test_only_epochs_at_image_size_can_give_the_best_weights(phantom_dir, tmp_path, monkeypatch,
                                                            progressive, best_epoch):
    import numpy as np

    import evaluation
    from logger import Logger
    from unet import UNet

    params = settings(image_size=32, epochs=2, validation_cases=3, workers=0, cache_dir=str(tmp_path / "cache"),
                      weights_dir=str(tmp_path / "w"), **progressive)
    _, valid_set = datasets(params, phantom_dir)
    grid_scores = iter([[0.9] * 3, [0.5] * 3])  # epochs 1 (16 px when progressive) and 2
    monkeypatch.setattr(evaluation, "grid_dsc", lambda *args: next(grid_scores))
    results = dict(history=[], best_val_dsc=0.0, best_epoch=None, train_patients=[])
    with Logger(tmp_path / "logs") as logger:
        end = evaluation.EpochEnd(results, logger, valid_set, params, dict(init_features=4), tmp_path / "ckpt.pt")
        probs = np.zeros((len(valid_set), 32, 32), dtype=np.float32)
        for epoch in (1, 2):
            size = 16 if progressive and epoch == 1 else 32
            trained = evaluation.TrainedEpoch(epoch=epoch, step=epoch, loss=0.3, lr=1e-3, image_size=size, images=0,
                                              pixels=0, validation_seconds=0.0, load_average=None)
            end(trained, dict(train_seconds=1.0, wall_seconds=1.0),
                0.5, probs[:, :size, :size], probs[:, :size, :size].astype(np.uint8), [],
                dict(model=UNet(init_features=4).state_dict()))
    assert results["best_epoch"] == best_epoch
    assert results["best_val_dsc"] == pytest.approx(0.9 if best_epoch == 1 else 0.5)
    assert torch.load(tmp_path / "w" / "unet.pt", weights_only=False)["image_size"] == 32
