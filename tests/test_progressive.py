"""Progressive resizing: the first epochs train and validate on smaller slices, the rest at image_size."""

import numpy as np
import pytest
import torch

import inference
import parameters
import train
from batches import Batches, datasets, trained_pixels, training_size


def settings(**overrides):
    return parameters.settings(train.DEFAULTS, **overrides)


def test_the_first_progressive_epochs_train_small_and_pixels_add_up_by_hand():
    params = settings(image_size=64, progressive_size=32, progressive_epochs=2, epochs=5)
    assert [training_size(params, epoch) for epoch in range(5)] == [32, 32, 64, 64, 64]
    assert trained_pixels(params, 3, images_per_epoch=100) == 100 * (32 * 32 * 2 + 64 * 64)
    plain = settings(image_size=64, epochs=5)
    assert [training_size(plain, epoch) for epoch in range(5)] == [64] * 5
    assert trained_pixels(plain, 2, images_per_epoch=10) == 10 * 64 * 64 * 2


@pytest.mark.parametrize("pipeline", ["reference", "device"])
def test_small_epochs_see_the_slices_preprocessed_at_the_small_size_as_inference_sees_them(phantom_dir, tmp_path,
                                                                                          pipeline):
    params = settings(image_size=32, progressive_size=16, progressive_epochs=1, epochs=2, batch_size=4, workers=0,
                      validation_cases=3, cache_dir=str(tmp_path / "cache"), aug_scale=None, aug_angle=None,
                      flip_prob=None)
    train_set, valid_set = datasets(params, phantom_dir, augment_on_cpu=pipeline == "reference")
    small_sets = datasets(dict(params, image_size=16), phantom_dir, augment_on_cpu=pipeline == "reference")
    batches = Batches(pipeline, train_set, valid_set, params, torch.device("cpu"), small_sets)
    first, second = next(batches.train(0)), next(batches.train(1))
    assert first[0].shape == (4, 3, 16, 16) and first[1].shape == (4, 1, 16, 16)
    assert second[0].shape == (4, 3, 32, 32)
    small_valid, valid = torch.cat([x for x, _ in batches.validation(0)]), torch.cat([x for x, _ in batches.validation(1)])
    # validation slices in order: the datasets' own preprocessing at each size (float16 storage on "device")
    expected_small = torch.from_numpy(np.concatenate([volume for volume, _ in small_sets[1].volumes])).permute(0, 3, 1, 2)
    expected = torch.from_numpy(np.concatenate([volume for volume, _ in valid_set.volumes])).permute(0, 3, 1, 2)
    tolerance = 1e-2 if pipeline == "device" else 1e-6
    assert torch.allclose(small_valid, expected_small.float(), atol=tolerance)
    assert torch.allclose(valid, expected.float(), atol=tolerance)


def test_a_progressive_run_records_each_epochs_size_and_pixels(phantom_dir, tmp_path):
    results = train.train(data_path=phantom_dir, image_size=32, progressive_size=16, progressive_epochs=1, epochs=2,
                          init_features=4, batch_size=4, workers=0, validation_cases=3, vis_images=0,
                          data_pipeline="reference", weights_dir=tmp_path / "w", logs_dir=tmp_path / "l",
                          cache_dir=tmp_path / "c")
    first, second = results["history"]
    assert (first["image_size"], second["image_size"]) == (16, 32)
    per_epoch = first["images"]
    assert second["images"] == 2 * per_epoch
    assert (first["pixels"], second["pixels"]) == (per_epoch * 16 * 16, per_epoch * (16 * 16 + 32 * 32))
    assert 0 < first["validation_seconds"] < first["train_seconds"]
    best = results["history"][results["best_epoch"] - 1]
    assert results["selected_on"] == "original geometry"
    assert results["best_val_dsc"] == max(entry["val_dsc_native"] for entry in results["history"])
    assert torch.load(tmp_path / "w" / "unet.pt", weights_only=False)["image_size"] == best["image_size"]
    # so inference preprocesses at the size the best epoch was validated at, and scores what training scored
    scored = inference.run(weights=tmp_path / "w" / "unet.pt", data_path=phantom_dir, cache_dir=tmp_path / "c",
                           predictions_dir=tmp_path / "p", workers=0, fuse=False, write_masks=False)
    assert {row["patient"]: row["dsc"] for row in scored["metrics"]} == pytest.approx(
        best["val_dsc_native_per_patient"], abs=1e-9)


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


def test_the_best_weights_record_the_size_their_epoch_was_trained_and_validated_at(phantom_dir, tmp_path):

    from evaluation import EpochEnd
    from logger import Logger
    from unet import UNet

    params = settings(image_size=32, progressive_size=16, progressive_epochs=1, epochs=2, validation_cases=3,
                      workers=0, cache_dir=str(tmp_path / "cache"), weights_dir=str(tmp_path / "w"))
    _, valid_set = datasets(params, phantom_dir)
    results = dict(history=[], best_val_dsc=0.0, best_epoch=None, train_patients=[])
    with Logger(tmp_path / "logs") as logger:
        end = EpochEnd(results, logger, valid_set, params, dict(init_features=4), tmp_path / "checkpoint.pt")
        slices = len(valid_set)
        small = np.zeros((slices, 16, 16), dtype=np.float32)
        end(dict(epoch=1, step=1, image_size=16), dict(train_seconds=1.0, wall_seconds=1.0), 0.5, small,
            small.astype(np.uint8), [], dict(model=UNet(init_features=4).state_dict()))
    assert results["best_epoch"] == 1
    assert torch.load(tmp_path / "w" / "unet.pt", weights_only=False)["image_size"] == 16


@pytest.mark.parametrize("progressive, best_epoch", [(dict(), 1), (dict(progressive_size=16, progressive_epochs=1), 2)])
def test_a_progressive_run_chooses_its_best_epoch_at_the_original_geometry(phantom_dir, tmp_path, monkeypatch,
                                                                          progressive, best_epoch):

    import evaluation
    from logger import Logger
    from unet import UNet

    params = settings(image_size=32, epochs=2, validation_cases=3, workers=0, cache_dir=str(tmp_path / "cache"),
                      weights_dir=str(tmp_path / "w"), **progressive)
    _, valid_set = datasets(params, phantom_dir)
    grid_scores, native_scores = iter([[0.9] * 3, [0.5] * 3]), iter([[0.5] * 3, [0.9] * 3])  # epochs 1, 2
    monkeypatch.setattr(evaluation, "dsc_per_volume", lambda *args: next(grid_scores))
    monkeypatch.setattr(evaluation.EpochEnd, "native_dsc", lambda self, probs: next(native_scores))
    results = dict(history=[], best_val_dsc=0.0, best_epoch=None, train_patients=[])
    with Logger(tmp_path / "logs") as logger:
        end = evaluation.EpochEnd(results, logger, valid_set, params, dict(init_features=4), tmp_path / "ckpt.pt")
        probs = np.zeros((len(valid_set), 32, 32), dtype=np.float32)
        for epoch in (1, 2):
            end(dict(epoch=epoch, step=epoch, image_size=32), dict(train_seconds=1.0, wall_seconds=1.0), 0.5, probs,
                probs.astype(np.uint8), [], dict(model=UNet(init_features=4).state_dict()))
    assert results["best_epoch"] == best_epoch and results["best_val_dsc"] == pytest.approx(0.9)


def test_a_small_best_epoch_is_inferred_at_its_size_and_scores_what_training_scored(phantom_dir, tmp_path,
                                                                                    monkeypatch):
    train_epoch = train.Run.train_epoch

    def second_epoch_predicts_nothing(run, epoch, logger):
        loss = train_epoch(run, epoch, logger)
        if epoch == 1:
            with torch.no_grad():
                run.model.conv.bias.fill_(-100.0)
        return loss

    monkeypatch.setattr(train.Run, "train_epoch", second_epoch_predicts_nothing)
    results = train.train(data_path=phantom_dir, image_size=32, progressive_size=16, progressive_epochs=1, epochs=2,
                          init_features=4, batch_size=4, workers=0, validation_cases=3, vis_images=0,
                          data_pipeline="reference", weights_dir=tmp_path / "w", logs_dir=tmp_path / "l",
                          cache_dir=tmp_path / "c")
    assert results["best_epoch"] == 1 and results["history"][1]["val_dsc_native"] == 0.0
    assert torch.load(tmp_path / "w" / "unet.pt", weights_only=False)["image_size"] == 16
    scored = inference.run(weights=tmp_path / "w" / "unet.pt", data_path=phantom_dir, cache_dir=tmp_path / "c",
                           predictions_dir=tmp_path / "p", workers=0, fuse=False, write_masks=False)
    assert {row["patient"]: row["dsc"] for row in scored["metrics"]} == pytest.approx(
        results["history"][0]["val_dsc_native_per_patient"], abs=1e-9)
