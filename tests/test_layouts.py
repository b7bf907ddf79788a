"""Data layouts (layouts/): each folder layout detected, read, trained on and predicted at each image's own size;
a layout registered from outside trains through the same code; the real nuclei sample read as its README says."""

import csv
import shutil
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import torch

import checkpoint
import dataset
import inference
import parameters
import layouts
import preprocessing
import synthetic
import train
from conftest import NUCLEI_SAMPLE_DIR
from layouts import DataError, Layout, folders
from metrics import dsc
from unet import UNet

TINY = dict(epochs=2, image_size=32, init_features=4, batch_size=4, workers=0, vis_images=2, vis_freq=1, threads=1)


@pytest.fixture(scope="module", params=["images_masks", "nuclei", "lung_ct"])
def folder_data(request, tmp_path_factory):
    """(layout name, root) of 12 phantom cell images in each folder layout."""
    root = tmp_path_factory.mktemp(request.param)
    return request.param, synthetic.make_phantom_folder(root, request.param, images=12, seed=1)


def test_each_folder_layout_is_detected_and_read_as_written(folder_data):
    name, root = folder_data
    layout = layouts.detect(root)
    assert layout.name == name and not layout.volumes and not layout.largest_component
    cases = layout.cases(root)
    assert sorted(cases) == [f"cell_{index:03d}" for index in range(12)]
    channels = layout.channels(cases)
    assert channels == (folders.GREY if name == "lung_ct" else folders.COLOUR)  # RGBA: the alpha dropped
    rng = np.random.default_rng(1)  # the generator's draws again: the second image and its cells
    synthetic.phantom_cells(rng, *synthetic.FOLDER_SIZES[0])
    image, cells = synthetic.phantom_cells(rng, *synthetic.FOLDER_SIZES[1])
    images, masks = layout.read_case(cases["cell_001"], channels)
    assert images.shape == (1, 48, 80, len(channels)) and masks.shape == (1, 48, 80)
    assert images.dtype == (np.int16 if name == "lung_ct" else np.uint8)  # each bit depth kept for the normalisation
    assert np.array_equal(masks[0], np.any(cells, axis=0))  # nuclei: the union of one file per cell


def test_a_folder_layout_trains_and_predicts_each_image_at_its_own_size(folder_data, tmp_path):
    name, root = folder_data
    results = train.train(data_path=str(root), runs_dir=str(tmp_path / "runs"), cache_dir=str(tmp_path / "c"), **TINY)
    assert results["layout"] == name and results["params"]["validation_cases"] == 0.2
    assert len(results["validation_patients"]) == 2 and len(results["train_patients"]) == 10  # 20% of 12, rounded
    out = inference.run(data_path=str(root), runs_dir=str(tmp_path / "runs"), cache_dir=str(tmp_path / "c"),
                        workers=0)
    assert sorted(out["patients"]) == sorted(results["validation_patients"])  # the model's own validation cases
    assert out["gifs"] == []  # one image a case: no GIF
    folder = Path(out["predictions_dir"])
    for case in out["patients"]:
        height, width = iio.imread(folder / f"{case}.png").shape[:2]  # the overlay, at the image's own size
        image = layouts.LAYOUTS[name].cases(root)[case][0][1]
        assert (height, width) == layouts.LAYOUTS[name].read_image(image).shape[:2]
        mask = iio.imread(folder / "masks" / f"{case}_mask.png")
        assert mask.shape == (height, width) and set(np.unique(mask)) <= {0, 255}
    with open(folder / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(row["patient"] for row in rows) == sorted(out["patients"])
    assert all(0 <= float(row["iou"]) <= float(row["dsc"]) <= 1 for row in rows)  # IoU <= DSC, per image
    if name == "images_masks":  # images without masks: predicted, nothing scored
        shutil.copytree(root / "images", tmp_path / "unlabelled" / "images")
        weights = next((tmp_path / "runs").glob("*/weights/unet.pt"))
        out = inference.run(data_path=str(tmp_path / "unlabelled"), weights=str(weights), cache_dir=None,
                            workers=0, predictions_dir=str(tmp_path / "p"))
        assert len(out["patients"]) == 12 and out["metrics"] == [] and out["figure"] is None
        assert sorted(path.name for path in (tmp_path / "p" / "masks").glob("*_mask.png")) == [
            f"cell_{index:03d}_mask.png" for index in range(12)]
        # one image file: the same mask as in the folder, at its own size
        image = tmp_path / "unlabelled" / "images" / "cell_001.png"
        one = inference.run(data_path=str(image), weights=str(weights), cache_dir=None, workers=0,
                            predictions_dir=str(tmp_path / "one"))
        assert one["patients"] == ["cell_001"] and one["metrics"] == []
        assert np.array_equal(iio.imread(tmp_path / "one" / "masks" / "cell_001_mask.png"),
                              iio.imread(tmp_path / "p" / "masks" / "cell_001_mask.png"))
        with pytest.raises(DataError, match=r"cell_001\.png: one image file has no mask to train on"):
            train.train(data_path=str(image), runs_dir=str(tmp_path / "runs2"), **TINY)


def test_stretched_to_the_square_a_wide_image_keeps_more_of_its_mask_trains_and_predicts_so(tmp_path):
    root = synthetic.make_phantom_folder(tmp_path / "data", "images_masks", images=12, seed=1)
    layout = layouts.detect(root)
    cases = layout.cases(root)
    wide = cases["cell_001"]  # 48 x 80

    def round_trip(to_square):
        loaded = preprocessing.load_volumes({"cell_001": wide}, 16, cache_dir=tmp_path / "c", progress=False,
                                            layout=layout, to_square=to_square)["cell_001"]
        return dsc(preprocessing.restore_geometry(loaded[1], loaded[2]) > 0.5, layout.truth(wide))

    # a 16 px grid: padded, the 48 rows get 10 of its rows; stretched, all 16 (DSC 0.83 against 0.81)
    assert round_trip("stretch") > round_trip("pad")
    assert len(list((tmp_path / "c").glob("cell_001-16-*.npz"))) == 2  # one cache entry each
    assert preprocessing.cache_key("cell_001", wide, 16, layout, ("R", "G", "B")) == \
        preprocessing.cache_key("cell_001", wide, 16, layout, ("R", "G", "B"), "pad")  # padded keys as before
    train.train(data_path=str(root), runs_dir=str(tmp_path / "runs"), cache_dir=str(tmp_path / "c"),
                to_square="stretch", **TINY)
    assert checkpoint.load_weights(next((tmp_path / "runs").glob("*/weights/unet.pt")))[1]["to_square"] == "stretch"
    # inference preprocesses as the weights say: one model saved both ways predicts the square image alike and
    # the wide one otherwise (an untrained U-Net whose logits are moved to predict blobs, as conftest's blob_run)
    torch.manual_seed(0)
    model = UNet(init_features=4)
    with torch.no_grad():
        model.conv.bias -= torch.quantile(model(torch.rand(2, 3, 32, 32)), 0.7)
    masks = {}
    for to_square in preprocessing.TO_SQUARE:
        checkpoint.save_weights(model, tmp_path / to_square / "unet.pt", 32, dict(init_features=4),
                                to_square=to_square)
        inference.run(data_path=str(root), weights=str(tmp_path / to_square / "unet.pt"), cache_dir=None, workers=0,
                      patients=["cell_000", "cell_001"], predictions_dir=str(tmp_path / f"p-{to_square}"))
        masks[to_square] = {case: iio.imread(tmp_path / f"p-{to_square}" / "masks" / f"{case}_mask.png") > 0
                            for case in ("cell_000", "cell_001")}
    assert np.array_equal(masks["pad"]["cell_000"], masks["stretch"]["cell_000"])  # 64 x 64: nothing to square
    assert masks["pad"]["cell_000"].any() and not np.array_equal(masks["pad"]["cell_001"], masks["stretch"]["cell_001"])
    with pytest.raises(parameters.ParameterError, match="to_square='squash': use 'pad' or 'stretch'"):
        train.train(data_path=str(root), runs_dir=str(tmp_path / "runs"), to_square="squash", **TINY)


class NumpyCases(Layout):
    """A toy layout: <case>.npy images (H, W, 2) beside <case>.mask.npy masks."""

    name = "toy_numpy"
    description = "<case>.npy with <case>.mask.npy"

    def holds(self, folder):
        return any(folder.glob("*.mask.npy"))

    def cases(self, folder, require_masks=True):
        return {path.name[:-len(".mask.npy")]: [(0, path.with_name(path.name.replace(".mask", "")), path)]
                for path in sorted(folder.glob("*.mask.npy"))}

    def read_image(self, path, channels=None):
        return np.load(path)

    def read_mask(self, mask):
        return np.load(mask)

    def channels(self, files):
        return ("near infrared", "thermal")


def test_a_layout_registered_from_outside_trains_through_the_same_code(tmp_path):
    rng = np.random.default_rng(0)
    for index in range(10):
        image, cells = synthetic.phantom_cells(rng, 40, 40)
        np.save(tmp_path / f"case{index}.npy", np.dstack([image, 1 - image]).astype(np.float32))
        np.save(tmp_path / f"case{index}.mask.npy", np.any(cells, axis=0).astype(np.uint8))
    layouts.register(NumpyCases())
    try:
        results = train.train(data_path=str(tmp_path), dataset="toy_numpy", runs_dir=str(tmp_path / "runs"),
                              cache_dir=str(tmp_path / "c"), **dict(TINY, epochs=1))
    finally:
        del layouts.LAYOUTS["toy_numpy"]
    assert results["layout"] == "toy_numpy" and results["channels"] == ["near infrared", "thermal"]
    assert len(results["history"]) == 1 and len(results["validation_patients"]) == 2


def test_the_split_takes_a_number_or_a_fraction_of_the_cases():
    assert dataset.validation_count(10, 110) == 10 and dataset.validation_count(0.2, 664) == 133
    assert dataset.validation_count(0.2, 12) == 2 and dataset.validation_count(0.01, 12) == 1  # at least one
    cases = [f"c{index}" for index in range(10)]
    validation = dataset.split_patients(cases, "validation", 0.3, seed=42)
    assert len(validation) == 3 and sorted(dataset.split_patients(cases, "train", 0.3) + validation) == cases


def test_folder_data_errors_name_the_file_and_the_fix(tmp_path):
    root = synthetic.make_phantom_folder(tmp_path / "d", "images_masks", images=3)
    (root / "masks" / "cell_001.png").unlink()
    with pytest.raises(DataError, match=r"cell_001\.png: image without its mask; add .*masks/cell_001\.png"):
        layouts.detect(root).cases(root)
    assert layouts.detect(root).cases(root, require_masks=False)["cell_001"][0][2] is None  # to segment: fine
    (root / "images" / "cell_002.png").write_bytes(b"not a picture")
    with pytest.raises(DataError, match=r"cell_002\.png: unreadable image .*re-save it as PNG or TIFF"):
        folders.read_picture(root / "images" / "cell_002.png")
    with pytest.raises(DataError, match=r"context_slices=1, but the images_masks layout's images are no slices"):
        dataset.BrainSegmentationDataset(root, subset="all", context_slices=1, require_masks=False,
                                         cache_dir=None, progress=False)
    with pytest.raises(DataError, match=r"sequence_dropout=0.2: .*kaggle_3m's pre- and post-contrast.*use 0"):
        train.train(data_path=str(synthetic.make_phantom_folder(tmp_path / "fresh", "images_masks", images=3)),
                    sequence_dropout=0.2, runs_dir=str(tmp_path / "r"), **TINY)
    with pytest.raises(DataError, match=r"no nuclei data"):
        layouts.detect(root, "nuclei")
    sized = synthetic.make_phantom_folder(tmp_path / "sized", "images_masks", images=2)
    iio.imwrite(sized / "masks" / "cell_001.png", np.zeros((10, 10), np.uint8))
    with pytest.raises(DataError, match=r"masks/cell_001\.png: mask of shape \(10, 10\) for an image of shape "
                                        r"\(48, 80, 3\); give each image a mask of its own size"):
        dataset.BrainSegmentationDataset(sized, subset="all", image_size=32, cache_dir=None, progress=False)
    inverted = synthetic.make_phantom_folder(tmp_path / "inv", "images_masks", images=5)
    mask = inverted / "masks" / "cell_003.png"
    iio.imwrite(mask, np.full_like(iio.imread(mask), 255))  # blank-filled
    with pytest.raises(DataError, match=r"masks/cell_003\.png: its masks mark 100% of the case .*inverted masks"):
        dataset.BrainSegmentationDataset(inverted, subset="all", image_size=32, cache_dir=None, progress=False)
    grey = synthetic.make_phantom_folder(tmp_path / "ct", "lung_ct", images=2)
    data = dataset.BrainSegmentationDataset(grey, subset="all", channels=3, random_sampling=False, image_size=32,
                                            cache_dir=None, progress=False)
    assert data.in_channels == 3 and data[0][0].shape == (3, 32, 32)  # a colour model: grey repeated


def test_kaggle_3m_keeps_the_flair_for_overlays_and_its_cache_keys(phantom_dir, tmp_path):
    data = dataset.BrainSegmentationDataset(phantom_dir, subset="validation", validation_cases=2, image_size=32,
                                            random_sampling=False, cache_dir=tmp_path, progress=False,
                                            context_slices=1)
    assert data.layout.name == "kaggle_3m" and data.layout.largest_component and data.in_channels == 9
    assert data.overlay_channel == 4  # the centre slice's FLAIR: neighbours' three channels first
    # the kaggle_3m layout's cache entries keep their keys: caches made before the layouts stay valid
    files = data.files[data.patients[0]]
    assert preprocessing.cache_key(data.patients[0], files, 32, data.layout, data.channels) == \
        preprocessing.cache_key(data.patients[0], files, 32)


@pytest.mark.skipif(not NUCLEI_SAMPLE_DIR.is_dir(), reason="set DSB2018_SAMPLE_DIR to the nuclei sample")
def test_the_real_nuclei_sample_reads_as_its_readme_says():
    layout = layouts.detect(NUCLEI_SAMPLE_DIR)
    cases = layout.cases(NUCLEI_SAMPLE_DIR)
    assert layout.name == "nuclei" and len(cases) == 20 and layout.channels(cases) == folders.COLOUR
    sizes = set()
    for case, [(_, image_path, masks)] in cases.items():
        image = layout.read_image(image_path)
        sizes.add(image.shape[:2])
        union = np.zeros(image.shape[:2], bool)
        for path in masks:
            union |= iio.imread(path) > 0
        assert np.array_equal(layout.read_mask(masks) > 0, union)
    assert {(256, 256), (256, 320), (360, 360), (520, 696), (1024, 1024), (260, 347)} <= sizes
    # preprocessed and put back: a 256x256 image's mask at 256 px is itself; the 1024x1024 image's loses the
    # smallest nuclei's edges at 256 px and much more at 64 (what a training grid costs at the image's own size)
    def round_trip(case, size):
        image, mask, geometry = preprocessing.load_volumes({case: cases[case]}, size, cache_dir=None, progress=False,
                                                           layout=layout)[case]
        assert image.shape == (1, size, size, 3)
        return dsc(preprocessing.restore_geometry(mask, geometry) > 0.5, layout.truth(cases[case]))

    square = next(name for name in cases if layout.read_image(cases[name][0][1]).shape[:2] == (256, 256))
    largest = max(cases, key=lambda name: np.prod(layout.read_image(cases[name][0][1]).shape[:2]))
    assert round_trip(square, 256) == 1.0
    assert round_trip(largest, 256) > 0.9 > 0.7 > round_trip(largest, 64)


def test_a_lung_ct_slice_keeps_its_sign_and_is_normalised_by_its_own_percentiles(tmp_path):
    root = synthetic.make_phantom_folder(tmp_path, "lung_ct", images=1)
    raw = tifffile.imread(root / "2d_images" / "cell_000.tif")
    assert raw.dtype == np.int16 and raw.min() < -500  # CT numbers: air below -500
    layout = layouts.detect(root)
    loaded = preprocessing.load_volumes(layout.cases(root), 64, cache_dir=None, progress=False, layout=layout)
    image = loaded["cell_000"][0]
    assert image.shape == (1, 64, 64, 1) and abs(float(image.mean())) < 1e-4 and abs(float(image.std()) - 1) < 1e-3


def test_a_name_pattern_groups_images_into_volumes_trained_and_predicted_slice_by_slice(tmp_path):
    rng = np.random.default_rng(4)
    for folder in ("images", "masks"):
        (tmp_path / "d" / folder).mkdir(parents=True)
    for volume in "abcd":
        for number in (3, 1, 2, 10):
            image, cells = synthetic.phantom_cells(rng, 32, 32)
            iio.imwrite(tmp_path / "d" / "images" / f"{volume}_z{number}.png", (image * 255).astype(np.uint8))
            iio.imwrite(tmp_path / "d" / "masks" / f"{volume}_z{number}.png", np.any(cells, axis=0).astype(np.uint8))
    pattern = r"(?P<case>\w)_z(?P<number>\d+)"
    layout, cases = dataset.list_cases(tmp_path / "d", case_pattern=pattern)
    assert sorted(cases) == ["a", "b", "c", "d"]
    assert [(number, image.name) for number, image, _ in cases["b"]] == [
        (1, "b_z1.png"), (2, "b_z2.png"), (3, "b_z3.png"), (10, "b_z10.png")]  # by number, not by name
    results = train.train(data_path=str(tmp_path / "d"), case_pattern=pattern, validation_cases=1,
                          runs_dir=str(tmp_path / "runs"), cache_dir=None, **dict(TINY, epochs=1))
    [case] = results["validation_patients"]
    out = inference.run(data_path=str(tmp_path / "d"), case_pattern=pattern, runs_dir=str(tmp_path / "runs"),
                        cache_dir=None, workers=0)
    assert out["patients"] == [case] and len(out["gifs"]) == 1  # a volume: a GIF of its slices
    masks = sorted(path.name for path in (Path(out["predictions_dir"]) / "masks" / case).iterdir()
                   if path.name.endswith("_mask.png"))
    assert masks == sorted(f"{case}_z{number}_mask.png" for number in (1, 2, 3, 10))
    with pytest.raises(DataError, match=r"case_pattern=.*: no group named case"):
        dataset.list_cases(tmp_path / "d", case_pattern=r"(?P<number>\d+)")
    with pytest.raises(DataError, match=r"a_z1\.png: its name 'a_z1' does not match case_pattern"):
        dataset.list_cases(tmp_path / "d", case_pattern=r"(?P<case>\w)-(?P<number>\d+)")
    with pytest.raises(DataError, match=r"same number"):
        dataset.list_cases(tmp_path / "d", case_pattern=r"(?P<case>\w)_z(?P<number>\d)\d*")
