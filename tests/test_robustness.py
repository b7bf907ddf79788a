"""Bad inputs give one clear error; a killed run resumes; NaN stops; seeds hold."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tifffile
import torch

import batches
import checkpoint
import dataset
import loss
import parameters
import train
from conftest import REPO, write_patient
from unet import UNet

PATIENT = "TCGA_AA_0001_20000101"


def good_patient(root, count=5, patient=PATIENT):
    images = [np.full((16, 16, 3), 100, dtype=np.uint8) for _ in range(count)]
    masks = [np.zeros((16, 16), dtype=np.uint8) for _ in range(count)]
    for mask in masks:
        mask[4:8, 4:8] = 255
    return write_patient(root, patient, images, masks)


def load(root, **kwargs):
    return dataset.BrainSegmentationDataset(
        root, subset="all", image_size=16, cache_dir=None, workers=1, progress=False, **kwargs
    )


def test_missing_data_folder(tmp_path):
    with pytest.raises(dataset.DataError, match=r"nowhere: data folder does not exist; point data_path"):
        dataset.locate_data(tmp_path / "nowhere")


def test_empty_data_folder(tmp_path):
    with pytest.raises(dataset.DataError, match=r": no data in a known layout"):
        dataset.locate_data(tmp_path)


def test_image_without_mask(tmp_path):
    folder = good_patient(tmp_path)
    (folder / f"{PATIENT}_3_mask.tif").unlink()
    with pytest.raises(dataset.DataError, match=rf"{PATIENT}_3\.tif: image without its mask; add {PATIENT}_3_mask"):
        load(tmp_path)


def test_mask_without_image(tmp_path):
    folder = good_patient(tmp_path)
    (folder / f"{PATIENT}_2.tif").unlink()
    with pytest.raises(dataset.DataError, match=rf"{PATIENT}_2_mask\.tif: mask without its image"):
        load(tmp_path)


def test_truncated_tiff(tmp_path):
    folder = good_patient(tmp_path)
    path = folder / f"{PATIENT}_4.tif"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(dataset.DataError, match=rf"{PATIENT}_4\.tif: unreadable TIFF .*re-download the file"):
        load(tmp_path)


def blank(*shape):
    return np.zeros(shape, dtype=np.uint8)


@pytest.mark.parametrize("written, message", [
    # the image of slice 2 with a fourth channel
    ({"_2.tif": blank(16, 16, 4)}, r"_2\.tif: image of shape \(16, 16, 4\); expected height x width x 3"),
    # slice 3 (image and mask) taller than the others
    ({"_3.tif": blank(20, 16, 3), "_3_mask.tif": blank(20, 16)},
     r"_3\.tif: image of shape \(20, 16, 3\), but .*_1\.tif has"),
    # a mask of grey values
    ({"_2_mask.tif": np.full((16, 16), 128, dtype=np.uint8)},
     r"_2_mask\.tif: mask values \[128\]; expected \{0, 255\} or \{0, 1\}"),
    ({"_extra.tif": blank(16, 16, 3)}, r"_extra\.tif: slice name without a number"),
    # "02" and "2" are the same slice number
    ({"_02.tif": blank(16, 16, 3)}, r"_2\.tif: slice number 2 already taken by .*_02\.tif"),
], ids=["wrong channel count", "slices of different sizes", "mask with other values", "slice name without number",
        "duplicate slice numbers"])
def test_a_bad_file_in_a_patient_gives_one_clear_error(tmp_path, written, message):
    folder = good_patient(tmp_path)
    for suffix, array in written.items():
        tifffile.imwrite(folder / f"{PATIENT}{suffix}", array)
    with pytest.raises(dataset.DataError, match=message):
        load(tmp_path)


def test_too_few_slices(tmp_path):
    good_patient(tmp_path, count=2)
    with pytest.raises(dataset.DataError, match=rf"patient {PATIENT} has 2 slices, too few to drop the first"):
        load(tmp_path)


def test_validation_split_larger_than_patients(tmp_path):
    good_patient(tmp_path)
    with pytest.raises(dataset.DataError, match=r"validation_cases=10 but the data has only 1 patients"):
        dataset.BrainSegmentationDataset(tmp_path, subset="train", image_size=16, cache_dir=None, progress=False)


def test_empty_mask_patient_in_training_set(tmp_path):
    folder = good_patient(tmp_path)
    for number in range(1, 6):
        tifffile.imwrite(folder / f"{PATIENT}_{number}_mask.tif", np.zeros((16, 16), dtype=np.uint8))
    with pytest.raises(dataset.DataError, match=rf"patient {PATIENT} has no tumour pixel.*move it out of the training"):
        load(tmp_path)


def test_weights_of_another_size(tmp_path):
    path = tmp_path / "small.pt"
    torch.save(UNet(init_features=8).state_dict(), path)
    model, metadata = checkpoint.load_weights(path)  # the width is read off the file
    assert model.encoder1.enc1conv1.weight.shape[0] == 8 and metadata == {}
    state = UNet(init_features=8).state_dict()
    state["decoder1.dec1conv1.weight"] = torch.zeros(8, 3, 3, 3)
    torch.save(state, path)
    with pytest.raises(checkpoint.WeightsError, match=r"small\.pt: weights do not fit UNet\(.*size mismatch"):
        checkpoint.load_weights(path)


def test_weights_of_another_architecture(tmp_path):
    path = tmp_path / "other.pt"
    torch.save(torch.nn.Linear(3, 2).state_dict(), path)
    with pytest.raises(checkpoint.WeightsError, match=r"other\.pt: not U-Net weights"):
        checkpoint.load_weights(path)
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(checkpoint.WeightsError, match=r"junk\.pt: not a readable PyTorch weights file"):
        checkpoint.load_weights(tmp_path / "junk.pt")
    with pytest.raises(checkpoint.WeightsError, match=r"missing\.pt: no such weights file"):
        checkpoint.load_weights(tmp_path / "missing.pt")


TINY = dict(image_size=32, init_features=4, batch_size=4, workers=0, validation_cases=3, lr=1e-3, vis_images=0)


def test_nan_loss_stops_with_the_step_and_keeps_the_last_checkpoint(phantom_dir, tmp_path, monkeypatch):
    calls = {"n": 0}
    original = loss.DiceLoss.forward  # the Dice of build_loss("dice") calls it once per batch

    def poisoned(self, y_pred, y_true):
        calls["n"] += 1
        value = original(self, y_pred, y_true)
        return value * float("nan") if calls["n"] == 14 else value

    monkeypatch.setattr(loss.DiceLoss, "forward", poisoned)
    common = dict(data_path=phantom_dir, epochs=3, logs_dir=tmp_path / "logs", weights_dir=tmp_path / "w",
                  cache_dir=tmp_path / "c", **TINY)
    # 5 training patients x 6 slices / batch 4 = 7 steps, then 5 validation batches: call 14 is step 2 of epoch 2
    with pytest.raises(train.NonFiniteLoss, match=r"loss became nan at epoch 2, step 9; stopped"):
        train.train(**common)
    saved = checkpoint.load_training_checkpoint(tmp_path / "logs" / "checkpoint.pt")
    assert saved["epoch"] == 0 and len(saved["results"]["history"]) == 1


def first_epoch_losses(phantom_dir, tmp_path, name, **extra):
    results = train.train(data_path=phantom_dir, epochs=1, logs_dir=tmp_path / name, weights_dir=tmp_path / name,
                          cache_dir=tmp_path / "cache", deterministic=True, **{**TINY, **extra})
    return results["history"][0]["loss"], results["history"][0]["val_dsc"]


def test_same_seed_same_first_epoch_on_cpu(phantom_dir, tmp_path):
    first = first_epoch_losses(phantom_dir, tmp_path, "a")
    assert first_epoch_losses(phantom_dir, tmp_path, "b") == first
    assert first_epoch_losses(phantom_dir, tmp_path, "c", seed=7) != first


def epoch_batches(loader, epochs=2):
    return [torch.cat([x for x, _ in loader]) for _ in range(epochs)]


def test_two_epochs_draw_different_augmentations_with_workers(phantom_dir):
    params = parameters.settings(train.DEFAULTS, image_size=32, batch_size=4, workers=2, validation_cases=3,
                                 cache_dir=None)
    train_set, valid_set = batches.datasets(params, phantom_dir)
    loader, _ = batches.data_loaders(train_set, valid_set, params, torch.device("cpu"),
                                     torch.Generator().manual_seed(0))
    first, second = epoch_batches(loader)
    assert not torch.equal(first, second)
    # the reference's worker seeding (42 + worker_id) replays epoch 1 in epoch 2
    loader.worker_init_fn = lambda worker_id: np.random.seed(42 + worker_id)
    loader.shuffle = False
    first, second = epoch_batches(loader)
    assert torch.equal(first, second)


KILLABLE = """
import sys, train
train.train(data_path=sys.argv[1], epochs=6, logs_dir=sys.argv[2], weights_dir=sys.argv[2], cache_dir=sys.argv[3],
            resume=True, deterministic=True, image_size=32, init_features=4, batch_size=4, workers=0,
            validation_cases=3, lr=1e-3, vis_images=0, threads=1)
"""  # threads fixed: "auto" follows the machine's load, and two runs with other thread counts differ in the 7th digit


@pytest.mark.slow
def test_training_killed_mid_epoch_resumes_to_the_same_result(phantom_dir, tmp_path):
    def run(logs, kill_after_epoch=None):
        command = [sys.executable, "-c", KILLABLE, str(phantom_dir), str(logs), str(tmp_path / "cache")]
        if kill_after_epoch is None:
            subprocess.run(command, cwd=REPO, check=True, capture_output=True)
            return
        process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        results = logs / "results.json"
        deadline = time.time() + 240
        while time.time() < deadline:
            if results.exists() and len(json.loads(results.read_text())["history"]) >= kill_after_epoch:
                break
            time.sleep(0.05)
        time.sleep(0.3)  # into the next epoch
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert process.returncode == -signal.SIGKILL

    run(tmp_path / "straight")
    run(tmp_path / "killed", kill_after_epoch=2)
    # the checkpoint is written just before results.json: the kill may fall between them
    epochs_saved = checkpoint.load_training_checkpoint(tmp_path / "killed" / "checkpoint.pt")["epoch"] + 1
    assert 2 <= epochs_saved < 6
    run(tmp_path / "killed")  # resume=True picks up the checkpoint
    straight = json.loads((tmp_path / "straight" / "results.json").read_text())
    resumed = json.loads((tmp_path / "killed" / "results.json").read_text())
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3, 4, 5, 6]
    assert resumed["resumed_after_epochs"] == [epochs_saved]
    for a, b in zip(straight["history"], resumed["history"]):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6)
        assert a["val_dsc"] == pytest.approx(b["val_dsc"], abs=1e-6)
    assert resumed["best_val_dsc"] == pytest.approx(straight["best_val_dsc"], abs=1e-6)
    checkpoint.load_weights(tmp_path / "killed" / "unet.pt")
