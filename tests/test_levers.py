"""The levers on the training recipe: ema_decay (a moving average of the weights is what validation scores, what
the best weights keep, and what a resumed run carries on) and context_slices (2.5-D input, kept in the weights
so that inference feeds the same neighbours)."""

import numpy as np
import pytest
import torch

import checkpoint
import safe_files
import inference
import parameters
import train

TINY = dict(image_size=32, init_features=4, batch_size=4, workers=0, validation_cases=3, lr=1e-2, vis_images=0,
            deterministic=True, device="cpu", threads=1, keep_checkpoint=True)


def trained(phantom_dir, folder, **settings):
    return train.train(data_path=str(phantom_dir), weights_dir=str(folder / "w"), logs_dir=str(folder / "l"),
                       cache_dir=str(folder.parent / "cache"), **dict(TINY, **settings))


def test_the_average_is_validated_and_kept_not_the_last_step(phantom_dir, tmp_path):
    results = trained(phantom_dir, tmp_path / "ema", epochs=2, ema_decay=0.9)
    saved = checkpoint.load_training_checkpoint(tmp_path / "ema" / "l" / train.CHECKPOINT_NAME)
    kept, _ = checkpoint.read_weights(tmp_path / "ema" / "w" / "unet.pt")
    raw, average = saved["model"], saved["weights"]
    assert any(not torch.equal(raw[key], average[key]) for key in raw)  # the average is not the last step's weights
    if results["best_epoch"] == 2:
        assert all(torch.equal(kept[key], average[key]) for key in kept)
    # the kept weights score what validation recorded for their epoch: validation ran on the average
    scored = inference.run(weights=str(tmp_path / "ema" / "w" / "unet.pt"), data_path=str(phantom_dir),
                           cache_dir=None, workers=0, fuse=False, predictions_dir=str(tmp_path / "p"),
                           write_masks=False, lcc=True)
    grid = np.mean([row["dsc_preprocessed"] for row in scored["metrics"]])
    assert grid == pytest.approx(results["best_val_dsc"], abs=1e-5)
    plain = trained(phantom_dir, tmp_path / "plain", epochs=2)
    plain_saved = checkpoint.load_training_checkpoint(tmp_path / "plain" / "l" / train.CHECKPOINT_NAME)
    assert "ema" not in plain_saved and "weights" not in plain_saved  # off by default: the reference's weights
    assert plain["history"][0]["loss"] == results["history"][0]["loss"]  # the average does not change the steps


def test_a_resumed_run_carries_its_average_on(phantom_dir, tmp_path):
    straight = trained(phantom_dir, tmp_path / "straight", epochs=2, ema_decay=0.9)
    trained(phantom_dir, tmp_path / "stopped", epochs=1, ema_decay=0.9)
    path = tmp_path / "stopped" / "l" / train.CHECKPOINT_NAME
    saved = checkpoint.load_training_checkpoint(path)  # as if stopped after epoch 1 of 2
    saved["results"]["params"]["epochs"] = 2
    saved["results"]["wall_seconds"] = 1e6  # as if the first segment had run for 11 days
    safe_files.save_atomic(saved, path)
    resumed = trained(phantom_dir, tmp_path / "stopped", epochs=2, ema_decay=0.9, resume=True)
    assert resumed["resumed_after_epochs"] == [1]
    assert 1e6 < resumed["wall_seconds"] < 1e6 + 600  # the segments' wall time adds up
    assert [entry["val_dsc"] for entry in resumed["history"]] == pytest.approx(
        [entry["val_dsc"] for entry in straight["history"]], abs=1e-6)
    a = checkpoint.load_training_checkpoint(tmp_path / "straight" / "l" / train.CHECKPOINT_NAME)["weights"]
    b = checkpoint.load_training_checkpoint(path)["weights"]
    assert all(torch.allclose(a[key].float(), b[key].float(), atol=1e-6) for key in a)


def test_a_model_trained_with_neighbouring_slices_is_scored_with_them(phantom_dir, tmp_path):
    results = trained(phantom_dir, tmp_path / "context", epochs=1, context_slices=1)
    model, metadata = checkpoint.load_weights(tmp_path / "context" / "w" / "unet.pt")
    assert metadata["context_slices"] == 1 and model.encoder1[0].weight.shape[1] == 9  # 3 slices x 3 sequences
    scored = inference.run(weights=str(tmp_path / "context" / "w" / "unet.pt"), data_path=str(phantom_dir),
                           cache_dir=None, workers=0, fuse=False, predictions_dir=str(tmp_path / "p"),
                           write_masks=False)
    grid = np.mean([row["dsc_preprocessed"] for row in scored["metrics"]])
    assert grid == pytest.approx(results["best_val_dsc"], abs=1e-5)  # inference built the same 9-channel input
    on_device = trained(phantom_dir, tmp_path / "device", epochs=2, context_slices=1, data_pipeline="device",
                        progressive_size=16, progressive_epochs=1, image_size=32)
    assert on_device["history"][0]["image_size"] == 16  # the fast path, averaged down, takes the 9 channels too
    with pytest.raises(parameters.ParameterError, match="context_slices=4: use 0"):
        trained(phantom_dir, tmp_path / "far", epochs=1, context_slices=4)
