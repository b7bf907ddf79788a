"""No input destroys data or gives a silently wrong result: each case of "Nothing lost, round two"."""

import errno
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

import checkpoint
import safe_files
import dataset
from layouts import kaggle_3m
import preprocessing
import inference
import parameters
import runs
import synthetic
import train
from conftest import write_patient
from unet import UNet

PATIENT = "TCGA_AA_0001_20000101"
TINY = dict(image_size=32, init_features=4, batch_size=4, workers=0, validation_cases=3, lr=1e-3, epochs=1,
            vis_images=0)


def patient_slices(count=5, dtype=np.uint8, value=100):
    images = [np.full((16, 16, 3), value, dtype=dtype) for _ in range(count)]
    masks = [np.zeros((16, 16), dtype=np.uint8) for _ in range(count)]
    for mask in masks:
        mask[4:8, 4:8] = 255
    return images, masks


def listed(root):
    return {patient: [(number, image.name, mask.name) for number, image, mask in slices]
            for patient, slices in kaggle_3m.list_patients(root).items()}


# ---------------------------------------------------------------- inference never writes over its input


def test_inference_refuses_to_write_predictions_over_the_truth_it_reads(phantom_dir, tmp_path):
    weights = tmp_path / "unet.pt"
    checkpoint.save_weights(UNet(init_features=4), weights, 32, dict(init_features=4))
    earlier = tmp_path / "predictions" / "masks"  # an earlier run's kaggle_3m-layout output, used as data
    shutil.copytree(phantom_dir, earlier)
    truth = earlier / "TCGA_SY_0001_20000101" / "TCGA_SY_0001_20000101_3_mask.tif"
    before = truth.read_bytes()
    with pytest.raises(dataset.DataError, match="predictions_dir .*predictions overlaps .*masks"):
        inference.run(weights=str(weights), data_path=str(earlier), predictions_dir=str(tmp_path / "predictions"),
                      workers=0, cache_dir=None)
    with pytest.raises(dataset.DataError, match="overlaps the data folder"):  # and not inside the data folder
        inference.run(weights=str(weights), data_path=str(earlier), predictions_dir=str(earlier / "out"),
                      workers=0, cache_dir=None)
    assert truth.read_bytes() == before


# ---------------------------------------------------------------- data that is read as it is


def test_a_slice_of_another_dtype_is_refused_by_name(tmp_path):
    folder = write_patient(tmp_path, PATIENT, *patient_slices())
    tifffile.imwrite(folder / f"{PATIENT}_3.tif", np.full((16, 16, 3), 100 * 257, np.uint16))  # one 16-bit slice
    with pytest.raises(dataset.DataError, match=rf"{PATIENT}_3\.tif: a uint16 slice among uint8 slices "
                                                rf"\({PATIENT}_1\.tif is uint8\).*convert it to uint8"):
        dataset.BrainSegmentationDataset(tmp_path, subset="all", image_size=16, cache_dir=None, progress=False)


def test_symlinked_patient_folders_are_followed_once(tmp_path):
    store, data = tmp_path / "store", tmp_path / "kaggle_3m"
    write_patient(store, PATIENT, *patient_slices())
    write_patient(data, "TCGA_AA_0002_20000101", *patient_slices())
    (data / PATIENT).symlink_to(store / PATIENT, target_is_directory=True)
    (data / PATIENT / "loop").symlink_to(data, target_is_directory=True)  # a link back up is not a loop
    assert sorted(listed(data)) == [PATIENT, "TCGA_AA_0002_20000101"]
    assert len(listed(data)[PATIENT]) == 5


def test_macos_zip_debris_is_ignored(tmp_path):
    folder = write_patient(tmp_path, PATIENT, *patient_slices())
    (folder / f"._{PATIENT}_1.tif").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    debris = tmp_path / "__MACOSX" / PATIENT
    debris.mkdir(parents=True)
    (debris / f"._{PATIENT}_1.tif").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    assert list(listed(tmp_path)) == [PATIENT]
    assert listed(tmp_path)[PATIENT][0] == (1, f"{PATIENT}_1.tif", f"{PATIENT}_1_mask.tif")


def test_tiff_and_upper_case_extensions_are_slices(tmp_path):
    images, masks = patient_slices(3)
    folder = tmp_path / PATIENT
    folder.mkdir()
    for number, (image, mask), (image_ext, mask_ext) in zip(
            (1, 2, 3), zip(images, masks), ((".tiff", ".tiff"), (".TIF", ".TIF"), (".Tiff", ".tif"))):
        tifffile.imwrite(folder / f"{PATIENT}_{number}{image_ext}", image)
        tifffile.imwrite(folder / f"{PATIENT}_{number}_mask{mask_ext}", mask)
    assert [number for number, _, _ in listed(tmp_path)[PATIENT]] == [1, 2, 3]


@pytest.mark.parametrize("where", ["data/kaggle_3m", "lgg-mri-segmentation/lgg-mri-segmentation/kaggle_3m",
                                   "kaggle_3m-tiff"])
def test_auto_detection_finds_the_common_layouts(where, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if where == "kaggle_3m-tiff":  # the usual place, with .TIFF files only
        folder = tmp_path / "kaggle_3m" / PATIENT
        folder.mkdir(parents=True)
        tifffile.imwrite(folder / f"{PATIENT}_1.TIFF", patient_slices(1)[0][0])
        where = "kaggle_3m"
    else:
        write_patient(tmp_path / where, PATIENT, *patient_slices())
    found, source = dataset.locate_data(synthetic_root=tmp_path / "synthetic")
    assert found == (tmp_path / where).resolve() and source == f"found at {where}"


def test_the_synthetic_fallback_cannot_be_missed(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _, source = dataset.locate_data(synthetic_root=tmp_path / "synthetic")
    out = capsys.readouterr().out
    assert source == "synthetic phantom default"
    assert "NO LGG DATA FOUND: training and predicting on the SYNTHETIC PHANTOM default" in out
    assert "data/kaggle_3m" in out and "set data_path" in out


def test_a_damaged_cache_entry_is_rebuilt_and_said(phantom_dir, tmp_path, capsys):
    files = dict(list(kaggle_3m.list_patients(phantom_dir).items())[:1])
    first = preprocessing.load_volumes(files, image_size=16, cache_dir=tmp_path, workers=1, progress=False)
    entry = next(tmp_path.glob("*.npz"))
    entry.write_bytes(entry.read_bytes()[:100])  # truncated
    again = preprocessing.load_volumes(files, image_size=16, cache_dir=tmp_path, workers=1, progress=False)
    assert f"{entry}: damaged cache entry" in capsys.readouterr().out
    patient = next(iter(files))
    np.testing.assert_array_equal(again[patient][0], first[patient][0])
    assert preprocessing._load_cached(entry) is not None  # rewritten whole


# ---------------------------------------------------------------- two trainings, one folder


def test_a_second_training_on_a_folder_in_use_is_refused(phantom_dir, tmp_path):
    owner = subprocess.Popen(["sleep", "60"])
    try:
        (tmp_path / "w").mkdir()
        (tmp_path / "w" / safe_files.FolderLock.NAME).write_text(str(owner.pid))
        with pytest.raises(safe_files.OutputError, match=rf"w: in use by another run \(pid {owner.pid}\); "
                                                         "give this run other weights_dir and logs_dir"):
            train.train(data_path=str(phantom_dir), weights_dir=str(tmp_path / "w"), logs_dir=str(tmp_path / "l"),
                        cache_dir=str(tmp_path / "c"), **TINY)
        assert not (tmp_path / "w" / "unet.pt").exists()
    finally:
        owner.kill()
        owner.wait()


def test_a_stale_lock_of_a_killed_run_is_taken_over_and_released(phantom_dir, tmp_path, capsys):
    dead_pid = subprocess.Popen(["true"])  # a process that has exited: its pid is free
    dead_pid.wait()
    (tmp_path / "l").mkdir()
    (tmp_path / "l" / safe_files.FolderLock.NAME).write_text(str(dead_pid.pid))
    train.train(data_path=str(phantom_dir), weights_dir=str(tmp_path / "w"), logs_dir=str(tmp_path / "l"),
                cache_dir=str(tmp_path / "c"), **TINY)
    assert f"a stale lock of a stopped run (pid {dead_pid.pid}), taken over" in capsys.readouterr().out
    assert not (tmp_path / "l" / safe_files.FolderLock.NAME).exists()
    assert (tmp_path / "w" / "unet.pt").exists()


# ---------------------------------------------------------------- resume


def run_folders(tmp_path):
    return dict(weights_dir=str(tmp_path / "w"), logs_dir=str(tmp_path / "l"), cache_dir=str(tmp_path / "c"))


@pytest.mark.slow
def test_resume_without_a_checkpoint_never_overwrites_best_weights(phantom_dir, tmp_path, capsys):
    folders = run_folders(tmp_path)
    train.train(data_path=str(phantom_dir), **folders, **TINY)
    weights = (tmp_path / "w" / "unet.pt").read_bytes()
    # the run finished: its checkpoint (93 MB at 256 px) is gone, and resuming it is nothing to do
    assert not (tmp_path / "l" / train.CHECKPOINT_NAME).exists()
    assert "removed (keep_checkpoint=True keeps it)" in capsys.readouterr().out
    again = train.train(data_path=str(phantom_dir), resume=True, **folders, **TINY)
    assert "every one of the 1 epochs has run already; nothing to resume" in capsys.readouterr().out
    assert len(again["history"]) == 1 and (tmp_path / "w" / "unet.pt").read_bytes() == weights
    # logs_dir pointed at another folder (no checkpoint, no results) beside those weights: refused
    with pytest.raises(safe_files.OutputError, match=r"resume=True but .*checkpoint\.pt does not exist, and "
                                                     r"starting afresh would overwrite .*unet\.pt"):
        train.train(data_path=str(phantom_dir), resume=True, **dict(folders, logs_dir=str(tmp_path / "other")),
                    **TINY)
    assert (tmp_path / "w" / "unet.pt").read_bytes() == weights
    fresh = run_folders(tmp_path / "fresh")
    train.train(data_path=str(phantom_dir), resume=True, **fresh, **TINY)
    assert "resume=True: no checkpoint at" in capsys.readouterr().out


def test_a_checkpoint_from_before_a_setting_existed_resumes_at_that_settings_default(phantom_dir, tmp_path):
    folders = run_folders(tmp_path)
    train.train(data_path=str(phantom_dir), **folders, **dict(TINY, epochs=1, keep_checkpoint=True))
    path = tmp_path / "l" / train.CHECKPOINT_NAME
    saved = checkpoint.load_training_checkpoint(path)
    del saved["results"]["params"]["sequence_dropout"]  # as written by the code before sequence_dropout
    safe_files.save_atomic(saved, path)
    with pytest.raises(parameters.ParameterError, match=r"sequence_dropout 0\.0 -> 0\.3"):
        train.train(data_path=str(phantom_dir), resume=True, sequence_dropout=0.3, **folders, **dict(TINY, epochs=1))
    results = train.train(data_path=str(phantom_dir), resume=True, **folders, **dict(TINY, epochs=1))
    assert results["resumed_after_epochs"] == [1]


def test_resume_with_other_settings_is_refused_naming_what_changed(phantom_dir, tmp_path):
    folders = run_folders(tmp_path)
    train.train(data_path=str(phantom_dir), **folders, **dict(TINY, epochs=1, keep_checkpoint=True))
    with pytest.raises(parameters.ParameterError, match=r"checkpoint\.pt: cannot resume with other settings: "
                                                        r"optimizer 'adam' -> 'adamw', lr 0\.001 -> 0\.002"):
        train.train(data_path=str(phantom_dir), resume=True, optimizer="adamw", **folders,
                    **dict(TINY, lr=2e-3))
    with pytest.raises(parameters.ParameterError, match=r"image_size 32 -> 48"):
        train.train(data_path=str(phantom_dir), resume=True, **folders, **dict(TINY, image_size=48))
    # what may change: where files are, the device, the workers, the overlays
    results = train.train(data_path=str(phantom_dir), resume=True, **folders, **dict(TINY, vis_freq=3))
    assert results["resumed_after_epochs"] == [1] and len(results["history"]) == 1
    assert results["earlier_commits"] == [results["commit"]]  # the commit that trained the first epoch


# ---------------------------------------------------------------- files that cannot be written


def test_a_full_disk_keeps_the_previous_checkpoint_and_says_how_much_was_needed(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    safe_files.save_atomic({"epoch": 1}, path)
    before = path.read_bytes()

    def full(descriptor):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(safe_files.OutputError, match=r"checkpoint\.pt: no space left on the device for 0\.\d MiB; "
                                                     r"the previous checkpoint\.pt is kept; free space"):
        safe_files.save_atomic({"epoch": 2, "weights": torch.zeros(100_000)}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no partial .tmp left


def test_an_output_folder_that_is_a_file_or_read_only_is_one_clear_line(phantom_dir, tmp_path, monkeypatch):
    (tmp_path / "weights").write_text("not a folder")
    with pytest.raises(safe_files.OutputError, match="weights: cannot be the weights folder"):
        train.train(data_path=str(phantom_dir), weights_dir=str(tmp_path / "weights"),
                    logs_dir=str(tmp_path / "l"), **TINY)
    read_only = tmp_path / "read-only"
    read_only.mkdir(mode=0o500)
    real_access = os.access  # root may write anywhere: the folder is made to look read-only to this process too
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != read_only and real_access(path, mode))
    with pytest.raises(safe_files.OutputError, match="read-only: .*read-only.*writable"):
        train.train(data_path=str(phantom_dir), weights_dir=str(tmp_path / "w"), logs_dir=str(read_only), **TINY)


# ---------------------------------------------------------------- weights that are not weights


def test_a_checkpoint_a_folder_or_a_whole_model_as_weights_says_what_to_use(phantom_dir, tmp_path):
    folders = run_folders(tmp_path)
    train.train(data_path=str(phantom_dir), **folders, keep_checkpoint=True, **TINY)
    with pytest.raises(checkpoint.WeightsError, match=r"checkpoint\.pt: a training checkpoint .*use weights/unet"):
        checkpoint.load_weights(tmp_path / "l" / train.CHECKPOINT_NAME)
    with pytest.raises(checkpoint.WeightsError, match=r"w: a folder, not a weights file; point weights at .*unet"):
        checkpoint.load_weights(tmp_path / "w")
    torch.save(UNet(init_features=4), tmp_path / "whole.pt")
    with pytest.raises(checkpoint.WeightsError, match=r"whole\.pt: a whole pickled model, not a state_dict"):
        checkpoint.load_weights(tmp_path / "whole.pt")


def test_a_compressed_tiff_without_its_codec_says_to_install_imagecodecs_not_to_download_again(tmp_path):
    import struct

    folder = write_patient(tmp_path, PATIENT, *patient_slices())
    path = folder / f"{PATIENT}_2.tif"
    with tifffile.TiffFile(path) as tiff:
        offset = tiff.pages[0].tags["Compression"].valueoffset
    data = bytearray(path.read_bytes())
    data[offset : offset + 2] = struct.pack("<H", 5)  # LZW, which tifffile decodes only with imagecodecs
    path.write_bytes(bytes(data))
    try:
        import imagecodecs  # noqa: F401
    except ImportError:
        with pytest.raises(dataset.DataError, match=rf"{PATIENT}_2\.tif: a compressed TIFF whose codec needs the "
                                                    r"imagecodecs package .*pip install imagecodecs"):
            kaggle_3m.read_image(path)
    else:
        pytest.skip("imagecodecs is installed here, so every codec decodes")


def test_a_predictions_folder_that_is_a_file_is_one_clear_line(phantom_dir, tmp_path):
    weights = tmp_path / "unet.pt"
    checkpoint.save_weights(UNet(init_features=4), weights, 32, dict(init_features=4))
    (tmp_path / "out").write_text("a file")
    with pytest.raises(safe_files.OutputError, match="out: cannot be the predictions folder"):
        inference.run(weights=str(weights), data_path=str(phantom_dir), predictions_dir=str(tmp_path / "out"),
                      workers=0, cache_dir=str(tmp_path / "c"))


def test_a_fresh_training_into_an_existing_run_is_refused_and_keeps_it(phantom_dir, tmp_path):
    settings = dict(data_path=str(phantom_dir), runs_dir=str(tmp_path / "runs"), run_name="mine",
                    cache_dir=str(tmp_path / "c"), **TINY)
    train.train(**settings)
    run = tmp_path / "runs" / "mine"
    kept = {path: path.read_bytes() for path in run.rglob("*") if path.is_file()}
    with pytest.raises(safe_files.OutputError, match=r"mine/logs: holds a run already \(results\.json, "
                                                     r"unet\.pt\); resume=True continues it"):
        train.train(**dict(settings, lr=0.01))
    assert {path: path.read_bytes() for path in run.rglob("*") if path.is_file()} == kept  # not a byte changed


def test_two_trainings_in_the_same_second_get_folders_of_their_own(tmp_path, monkeypatch):
    monkeypatch.setattr(time, "strftime", lambda pattern: "2026-11-30-120000")
    params = dict(train.DEFAULTS, runs_dir=str(tmp_path))
    names = [runs.training_folders(params)["run_name"] for _ in range(3)]
    assert names == ["2026-11-30-120000-unet-dice", "2026-11-30-120000-unet-dice-2", "2026-11-30-120000-unet-dice-3"]
    assert all((tmp_path / name).is_dir() for name in names)


def test_a_training_refused_before_its_first_epoch_leaves_no_empty_run_folder(phantom_dir, tmp_path):
    with pytest.raises(dataset.DataError):
        train.train(data_path=str(tmp_path / "empty"), runs_dir=str(tmp_path / "runs"), **TINY)  # no patients
    assert not list((tmp_path / "runs").iterdir())
    # a folder another live training holds is never removed, even when it has nothing yet
    owner = subprocess.Popen(["sleep", "60"])
    try:
        held = tmp_path / "runs" / "held"
        (held / "weights").mkdir(parents=True)
        (held / "weights" / safe_files.FolderLock.NAME).write_text(str(owner.pid))
        with pytest.raises(safe_files.OutputError, match="in use by another run"):
            train.train(data_path=str(phantom_dir), runs_dir=str(tmp_path / "runs"), run_name="held",
                        cache_dir=str(tmp_path / "c"), **TINY)
        assert (held / "weights" / safe_files.FolderLock.NAME).exists()
    finally:
        owner.kill()
        owner.wait()


# ---------------------------------------------------------------- round three: inference never mixes or replaces


def trained_run(phantom_dir, tmp_path):
    """A run folder (runs/mine) trained one epoch on phantom_dir; returns its weights file."""
    train.train(data_path=str(phantom_dir), runs_dir=str(tmp_path / "runs"), run_name="mine",
                cache_dir=str(tmp_path / "c"), **TINY)
    return tmp_path / "runs" / "mine" / "weights" / "unet.pt"


@pytest.mark.slow
def test_inference_on_other_data_writes_beside_the_runs_own_predictions(phantom_dir, tmp_path):
    weights = trained_run(phantom_dir, tmp_path)
    own = inference.run(weights=str(weights), data_path=str(phantom_dir), cache_dir=None, workers=0)
    assert own["predictions_dir"] == str(tmp_path / "runs" / "mine" / "predictions")
    metrics = (tmp_path / "runs" / "mine" / "predictions" / "metrics.csv").read_bytes()
    other_data = synthetic.make_phantom_dataset(tmp_path / "other", patients=4, slices=8, seed=11)
    other = inference.run(weights=str(weights), data_path=str(other_data), subset="all", cache_dir=None, workers=0)
    assert other["predictions_dir"] == str(tmp_path / "runs" / "mine" / "predictions-synthetic")
    assert (tmp_path / "runs" / "mine" / "predictions" / "metrics.csv").read_bytes() == metrics  # untouched
    masks = {path.name for path in (tmp_path / "runs" / "mine" / "predictions" / "masks").iterdir()}
    assert masks == set(own["patients"])  # no patient of the other data among the run's own masks


def test_a_predictions_folder_of_other_weights_or_data_is_refused(phantom_dir, tmp_path):
    weights = trained_run(phantom_dir, tmp_path)
    out = tmp_path / "shared-predictions"
    inference.run(weights=str(weights), data_path=str(phantom_dir), predictions_dir=str(out), cache_dir=None,
                  workers=0)
    kept = (out / "metrics.csv").read_bytes()
    other_weights = tmp_path / "other.pt"
    checkpoint.save_weights(UNet(init_features=4), other_weights, 32, dict(init_features=4))
    with pytest.raises(safe_files.OutputError, match=rf"shared-predictions: holds predictions of {weights} on "
                                                     rf"{phantom_dir}; these would be of {other_weights} on"):
        inference.run(weights=str(other_weights), data_path=str(phantom_dir), predictions_dir=str(out),
                      cache_dir=None, workers=0)
    assert (out / "metrics.csv").read_bytes() == kept
    # the same weights on the same data again: the folder is theirs, refreshed
    inference.run(weights=str(weights), data_path=str(phantom_dir), predictions_dir=str(out), cache_dir=None,
                  workers=0)


def test_a_second_inference_into_a_folder_in_use_is_refused(phantom_dir, tmp_path):
    weights = trained_run(phantom_dir, tmp_path)
    owner = subprocess.Popen(["sleep", "60"])
    try:
        out = tmp_path / "p"
        out.mkdir()
        (out / safe_files.FolderLock.NAME).write_text(str(owner.pid))
        with pytest.raises(safe_files.OutputError, match=r"p: in use by another run \(pid \d+\); another inference "
                                                         r"writes there"):
            inference.run(weights=str(weights), data_path=str(phantom_dir), predictions_dir=str(out), workers=0)
        assert [path.name for path in out.iterdir()] == [safe_files.FolderLock.NAME]
        # and weights a live training still writes are refused: mid-training weights scored as the run's
        (weights.parent / safe_files.FolderLock.NAME).write_text(str(owner.pid))
        with pytest.raises(checkpoint.WeightsError, match=rf"unet\.pt: its run is still training \(pid {owner.pid}\)"):
            inference.run(weights=str(weights), data_path=str(phantom_dir), workers=0)
        assert not (tmp_path / "runs" / "mine" / "predictions").exists()
    finally:
        owner.kill()
        owner.wait()


def test_weights_with_a_nan_are_refused_by_name(tmp_path):
    model = UNet(init_features=4)
    with torch.no_grad():
        model.encoder1[0].weight[0, 0, 0, 0] = float("nan")
    path = tmp_path / "diverged.pt"
    checkpoint.save_weights(model, path, 32, dict(init_features=4))
    with pytest.raises(checkpoint.WeightsError, match=r"diverged\.pt: 1 tensor\(s\) hold NaN or infinite values "
                                                      r"\(encoder1\.enc1conv1\.weight\): the training diverged"):
        checkpoint.load_weights(path)


@pytest.mark.parametrize("fault", ["inverted", "all 255"])
def test_masks_marking_most_of_the_volume_are_refused_in_training_and_scoring(fault, phantom_dir, tmp_path):
    data = tmp_path / "kaggle_3m"
    shutil.copytree(phantom_dir, data)
    patient = sorted(path for path in data.iterdir() if path.is_dir())[0]
    for mask in patient.glob("*_mask.tif"):
        values = tifffile.imread(mask)
        tifffile.imwrite(mask, (255 - values) if fault == "inverted" else np.full_like(values, 255))
    expected = rf"{patient.name}: its masks mark \d+% of the case as the object; .*inverted masks"
    with pytest.raises(dataset.DataError, match=expected):
        train.train(data_path=str(data), runs_dir=str(tmp_path / "runs"), cache_dir=None, **TINY)
    checkpoint.save_weights(UNet(init_features=4), tmp_path / "w.pt", 32, dict(init_features=4))
    with pytest.raises(dataset.DataError, match=expected):
        inference.run(weights=str(tmp_path / "w.pt"), data_path=str(data), subset="all", cache_dir=None, workers=0,
                      predictions_dir=str(tmp_path / "p"))


@pytest.mark.parametrize("damage", ["empty", "cut short"])
def test_a_damaged_checkpoint_on_resume_names_the_file_and_the_way_out(damage, phantom_dir, tmp_path):
    folders = run_folders(tmp_path)
    train.train(data_path=str(phantom_dir), **folders, keep_checkpoint=True, **TINY)
    path = tmp_path / "l" / train.CHECKPOINT_NAME
    path.write_bytes(b"" if damage == "empty" else path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(checkpoint.CheckpointError, match=rf"{path}: a damaged training checkpoint \(\w+: .*\), e\.g\. "
                                                         "a copy cut short; put back a whole copy"):
        train.train(data_path=str(phantom_dir), resume=True, **folders, **dict(TINY, epochs=2))
    assert (tmp_path / "w" / "unet.pt").exists()  # nothing of the run removed


def test_a_read_only_file_system_is_one_clear_line(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(Path, "mkdir", read_only)
    with pytest.raises(safe_files.OutputError, match=r"runs: on a read-only file system, the output folder cannot "
                                                     r"be made; choose a folder on a writable one \(on Kaggle"):
        safe_files.make_folder(tmp_path / "runs")
    monkeypatch.undo()
    monkeypatch.setattr("builtins.open", read_only)
    with pytest.raises(safe_files.OutputError, match=r"results\.json: .*read-only.*choose"):
        safe_files.write_json_atomic({}, tmp_path / "results.json")
