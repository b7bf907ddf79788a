import os

import numpy as np
import pytest
from skimage.transform import resize

import dataset
from layouts import kaggle_3m
import preprocessing
from conftest import SAMPLE_DIR, write_patient

PHANTOM_VALIDATION = ["TCGA_SY_0002_20000101", "TCGA_SY_0001_20000101", "TCGA_SY_0006_20000101"]


def numbered_patient(root, patient="TCGA_AA_0001_20000101", count=12):
    """Slices whose every pixel equals the slice number, so order can be read back from the pixels."""
    images = [np.full((8, 8, 3), n, dtype=np.uint8) for n in range(1, count + 1)]
    masks = [np.zeros((8, 8), dtype=np.uint8) for _ in range(count)]
    return write_patient(root, patient, images, masks)


def test_slices_are_ordered_by_number_not_by_name(tmp_path):
    numbered_patient(tmp_path)
    files = kaggle_3m.list_patients(tmp_path)["TCGA_AA_0001_20000101"]
    assert [number for number, _, _ in files] == list(range(1, 13))
    assert files[9][1].name == "TCGA_AA_0001_20000101_10.tif"
    assert files[9][2].name == "TCGA_AA_0001_20000101_10_mask.tif"


def test_first_and_last_slices_are_dropped(tmp_path):
    numbered_patient(tmp_path)
    volume, mask = kaggle_3m.read_patient(kaggle_3m.list_patients(tmp_path)["TCGA_AA_0001_20000101"])
    assert volume.shape == (10, 8, 8, 3) and mask.shape == (10, 8, 8)
    assert list(volume[:, 0, 0, 0]) == list(range(2, 12))


def test_reference_split_on_phantom_names(phantom_dir):
    patients = kaggle_3m.list_patients(phantom_dir)
    validation = dataset.split_patients(patients, "validation", validation_cases=3)
    train = dataset.split_patients(patients, "train", validation_cases=3)
    assert validation == PHANTOM_VALIDATION  # random.sample's order, kept as the reference does
    assert train == ["TCGA_SY_%04d_20000101" % i for i in (3, 4, 5, 7, 8)]
    assert dataset.split_patients(patients, "all") == sorted(patients)


def test_split_of_sixteen_phantoms_with_ten_validation_cases():
    names = ["TCGA_SY_%04d_20000101" % i for i in range(1, 17)]
    assert dataset.split_patients(names, "validation") == [
        "TCGA_SY_%04d_20000101" % i for i in (4, 1, 12, 5, 16, 14, 3, 2, 9, 13)
    ]


def test_k_fold_split_partitions_the_patients():
    names = ["TCGA_SY_%04d_20000101" % i for i in range(1, 17)]
    folds = [dataset.split_patients(names, "validation", seed=42, folds=5, fold=k) for k in range(5)]
    assert [len(fold) for fold in folds] == [4, 3, 3, 3, 3]
    assert sorted(sum(folds, [])) == names  # every patient validated exactly once
    for k, validation in enumerate(folds):
        train = dataset.split_patients(names, "train", folds=5, fold=k)
        assert sorted(train + validation) == names and not set(train) & set(validation)
    assert dataset.split_patients(names, "validation", seed=7, folds=5, fold=0) != folds[0]
    with pytest.raises(ValueError, match="fold=5 is not one of 0..4"):
        dataset.split_patients(names, "train", folds=5, fold=5)
    with pytest.raises(dataset.DataError, match="folds=20 but the data has only 16 patients"):
        dataset.split_patients(names, "train", folds=20)


def test_crop_zeroes_dim_voxels_and_crops_to_bounding_box():
    volume = np.zeros((5, 10, 12, 3), dtype=np.uint8)
    volume[1:4, 2:7, 3:11, 1] = 200
    volume[0, 0, 0, 0] = 19  # under 10% of 200: zeroed, so it does not widen the box
    volume[4, 9, 11, 2] = 20  # exactly 10%: kept
    mask = np.zeros((5, 10, 12), dtype=np.uint8)
    mask[2, 3, 4] = 255
    cropped, cropped_mask = preprocessing.crop_volume(volume, mask)
    assert cropped.shape == (4, 8, 9, 3)  # z 1..4, y 2..9, x 3..11
    assert cropped_mask.shape == (4, 8, 9)
    assert cropped_mask[1, 1, 1] == 255
    assert volume[0, 0, 0, 0] == 19  # the input is left untouched


def test_pad_to_square_puts_the_odd_pixel_after():
    volume = np.ones((2, 4, 7, 3))
    mask = np.ones((2, 4, 7))
    padded, padded_mask = preprocessing.pad_to_square(volume, mask)
    assert padded.shape == (2, 7, 7, 3) and padded_mask.shape == (2, 7, 7)
    assert padded[0, :, 0, 0].tolist() == [0, 1, 1, 1, 1, 0, 0]
    wide, _ = preprocessing.pad_to_square(np.ones((1, 6, 4, 3)), np.ones((1, 6, 4)))
    assert wide[0, 0, :, 0].tolist() == [0, 1, 1, 1, 1, 0]


def test_resize_matches_skimage_plane_by_plane_and_masks_become_binary():
    rng = np.random.default_rng(0)
    volume = rng.integers(0, 256, size=(3, 20, 20, 3), dtype=np.uint8)
    mask = np.zeros((3, 20, 20), dtype=np.uint8)
    mask[:, 5:12, 6:15] = 255
    image, out_mask = preprocessing.resize_volume(volume, mask, 32)
    assert image.shape == (3, 32, 32, 3) and out_mask.shape == (3, 32, 32)
    assert set(np.unique(out_mask)) == {0, 1}
    expected_mask = resize(mask, (3, 32, 32), order=0, mode="constant", anti_aliasing=False)
    np.testing.assert_array_equal(out_mask * 255, expected_mask)
    plane = resize(volume[1, :, :, 2], (32, 32), order=2, mode="constant", anti_aliasing=False, clip=False)
    np.testing.assert_allclose(image[1, :, :, 2], np.clip(plane, 0, volume.max() / 255), atol=1e-12)
    assert image.min() >= 0 and image.max() <= volume.max() / 255


def test_resize_gives_the_numbers_of_the_reference_4d_resize():
    rng = np.random.default_rng(5)
    volume = rng.integers(0, 256, size=(5, 24, 24, 3), dtype=np.uint8)
    image, _ = preprocessing.resize_volume(volume, np.zeros((5, 24, 24)), 40)
    reference = resize(volume, (5, 40, 40, 3), order=2, mode="constant", cval=0, anti_aliasing=False)
    np.testing.assert_allclose(image, reference, atol=1e-12)


def test_normalisation_rescales_p10_p99_then_standardises_each_channel():
    rng = np.random.default_rng(1)
    volume = rng.uniform(0, 1, size=(4, 16, 16, 3))
    volume[..., 2] *= 0.5
    out = preprocessing.normalize_volume(volume)
    np.testing.assert_allclose(out.mean(axis=(0, 1, 2)), 0, atol=1e-9)
    np.testing.assert_allclose(out.std(axis=(0, 1, 2)), 1, atol=1e-9)
    # values above p99 are clipped: they all share the channel's maximum
    p99 = np.percentile(volume, 99)
    above = volume[..., 0] >= p99
    assert above.any() and np.allclose(out[..., 0][above], out[..., 0].max())


def test_normalisation_of_a_constant_channel_gives_zeros_not_nan():
    volume = np.random.default_rng(2).uniform(0, 1, size=(2, 8, 8, 3))
    volume[..., 1] = 0.0
    out = preprocessing.normalize_volume(volume)
    assert np.isfinite(out).all() and np.all(out[..., 1] == 0)


def test_slice_sampling_weights_match_the_reference_formula():
    mask = np.zeros((3, 4, 4))
    mask[1, :1, :2] = 1  # area 2
    mask[2, :2, :3] = 1  # area 6
    weights = dataset.slice_sampling_weights(mask)
    # the reference: area plus a tenth of the mean area (8 / 3 / 10), over the sum of those (8.8)
    np.testing.assert_allclose(weights, [1 / 33, 17 / 66, 47 / 66])
    assert weights.sum() == pytest.approx(1.0)


def test_a_training_patient_without_tumour_is_a_clear_error(tmp_path):
    images = [np.full((16, 16, 3), 120, dtype=np.uint8)] * 4
    write_patient(tmp_path, "TCGA_AA_0001_20000101", images, [np.zeros((16, 16))] * 4)
    with pytest.raises(dataset.DataError, match="TCGA_AA_0001_20000101 has no tumour pixel"):
        dataset.BrainSegmentationDataset(tmp_path, subset="all", image_size=16, cache_dir=None, progress=False)


def test_dataset_items_have_reference_shapes_and_binary_masks(phantom_dir):
    data = dataset.BrainSegmentationDataset(
        phantom_dir, subset="validation", image_size=32, random_sampling=False, validation_cases=3,
        cache_dir=None, workers=1, progress=False,
    )
    assert data.patients == PHANTOM_VALIDATION
    assert len(data) == 3 * 6
    assert data.patient_slice_index[:7] == [(0, s) for s in range(6)] + [(1, 0)]
    image, mask = data[7]
    assert image.shape == (3, 32, 32) and mask.shape == (1, 32, 32)
    assert image.dtype == mask.dtype == __import__("torch").float32
    all_masks = np.concatenate([m.ravel() for _, m in data.volumes])
    assert set(np.unique(all_masks)) == {0.0, 1.0}
    np.testing.assert_allclose(data.volumes[0][0].mean(axis=(0, 1, 2)), 0, atol=1e-5)


def test_random_sampling_never_draws_a_weightless_slice(phantom_dir):
    data = dataset.BrainSegmentationDataset(
        phantom_dir, subset="train", image_size=16, validation_cases=3, cache_dir=None, workers=1, progress=False
    )
    np.random.seed(0)
    draws = [data[0][1].sum().item() > 0 for _ in range(200)]
    # lesion slices carry ~10/11 of the probability mass
    assert sum(draws) > 150


def test_cache_is_reused_and_keyed_by_image_size(phantom_dir, tmp_path, monkeypatch):
    files = kaggle_3m.list_patients(phantom_dir)
    files = {p: files[p] for p in sorted(files)[:2]}
    first = preprocessing.load_volumes(files, 32, cache_dir=tmp_path, workers=2, progress=False)
    assert len(list(tmp_path.glob("*-32-*.npz"))) == 2
    # a padded entry keeps its 9-field geometry: a run resumed from an older commit's worktree shares the cache
    # and unpacks exactly 9 (a 10th field for "padded" crashed such a run: "too many values to unpack")
    for entry in tmp_path.glob("*-32-*.npz"):
        with np.load(entry) as saved:
            assert saved["geometry"].shape == (9,)

    def fail(*args):
        raise AssertionError("preprocessed again despite the cache")

    monkeypatch.setattr(preprocessing, "_preprocess_patient", fail)
    again = preprocessing.load_volumes(files, 32, cache_dir=tmp_path, workers=1, progress=False)
    for patient in files:
        np.testing.assert_array_equal(first[patient][0], again[patient][0])
        np.testing.assert_array_equal(first[patient][1], again[patient][1])
    with pytest.raises(AssertionError, match="preprocessed again"):
        preprocessing.load_volumes(files, 48, cache_dir=tmp_path, workers=1, progress=False)


def test_parallel_and_serial_preprocessing_agree(phantom_dir):
    files = kaggle_3m.list_patients(phantom_dir)
    files = {p: files[p] for p in sorted(files)[:3]}
    serial = preprocessing.load_volumes(files, 32, cache_dir=None, workers=1, progress=False)
    parallel = preprocessing.load_volumes(files, 32, cache_dir=None, workers=2, progress=False)
    assert list(parallel) == list(files)
    for patient in files:
        np.testing.assert_array_equal(serial[patient][0], parallel[patient][0])


def test_locate_data_prefers_explicit_then_usual_places_then_synthetic(phantom_dir, tmp_path, monkeypatch):
    assert dataset.locate_data(phantom_dir) == (phantom_dir, "explicit path")
    with pytest.raises(dataset.DataError, match="no data in a known layout"):
        dataset.locate_data(tmp_path)
    monkeypatch.chdir(tmp_path)
    found, source = dataset.locate_data(synthetic_root=tmp_path / "synthetic")
    assert source == "synthetic phantom default" and dataset.is_synthetic(found)
    numbered_patient(tmp_path / "archive" / "kaggle_3m")
    found, source = dataset.locate_data(synthetic_root=tmp_path / "synthetic")
    assert found == (tmp_path / "archive" / "kaggle_3m").resolve() and source == "found at archive/kaggle_3m"


def test_validation_split_larger_than_patient_count_is_a_clear_error(phantom_dir):
    with pytest.raises(dataset.DataError, match="validation_cases=10.*only 8 patients"):
        dataset.split_patients(kaggle_3m.list_patients(phantom_dir), "train", validation_cases=10)


@pytest.mark.skipif(not SAMPLE_DIR.is_dir(), reason="real LGG sample not present")
def test_real_sample_patients_load_with_binary_masks(tmp_path):
    files = kaggle_3m.list_patients(SAMPLE_DIR)
    assert len(files) == 6
    assert sum(len(slices) for slices in files.values()) == 188
    data = dataset.BrainSegmentationDataset(
        SAMPLE_DIR, subset="all", image_size=64, random_sampling=False, cache_dir=tmp_path, progress=False
    )
    raw_slices = sum(kaggle_3m.read_patient(slices)[0].shape[0] for slices in files.values())
    assert raw_slices == 188 - 2 * 6
    # the 10% crop also drops 3 all-dark end slices, as the reference's crop does
    assert len(data) == 173
    masks = np.concatenate([m.ravel() for _, m in data.volumes])
    assert set(np.unique(masks)) == {0.0, 1.0}
    assert all(np.isfinite(v).all() for v, _ in data.volumes)


# Figures of the reference's own BrainSegmentationDataset(subset="all", image_size=256) run on the
# 6 sample patients with numpy 2.4 / scikit-image 0.26 (see results/preprocessing-equivalence.md).
REFERENCE_SAMPLE_FIGURES = {
    "TCGA_CS_4944_20010208": ((18, 256, 256, 3), 3052531.93828708, 1.6665723323822021, -0.6390426158905029, 31988),
    "TCGA_HT_7616_19940813": ((28, 256, 256, 3), 4815322.8219861705, 0.717197597026825, -0.7982962131500244, 33076),
}


@pytest.mark.skipif(not SAMPLE_DIR.is_dir(), reason="real LGG sample not present")
@pytest.mark.parametrize("patient", sorted(REFERENCE_SAMPLE_FIGURES))
def test_real_sample_preprocessing_reproduces_the_reference(patient):
    shape, abs_sum, centre_flair, corner_pre, tumour_voxels = REFERENCE_SAMPLE_FIGURES[patient]
    image, mask, _ = preprocessing.load_volumes(
        {patient: kaggle_3m.list_patients(SAMPLE_DIR)[patient]}, 256, cache_dir=None, progress=False
    )[patient]
    assert image.shape == shape
    assert np.abs(image.astype(np.float64)).sum() == pytest.approx(abs_sum, rel=1e-6)
    assert image[9, 128, 128, 1] == pytest.approx(centre_flair, abs=1e-5)
    assert image[5, 60, 200, 0] == pytest.approx(corner_pre, abs=1e-5)
    assert int(mask.sum()) == tumour_voxels


FULL_DATA = os.environ.get("LGG_FULL_DATA")
REFERENCE_VALIDATION = [
    "TCGA_HT_7616_19940813", "TCGA_CS_6668_20011025", "TCGA_CS_4944_20010208", "TCGA_HT_7879_19981009",
    "TCGA_DU_7014_19860618", "TCGA_DU_6408_19860521", "TCGA_DU_6404_19850629", "TCGA_DU_5851_19950428",
    "TCGA_CS_6667_20011105", "TCGA_HT_7692_19960724",
]


@pytest.mark.skipif(not FULL_DATA, reason="set LGG_FULL_DATA to the full kaggle_3m folder")
def test_full_dataset_split_is_the_reference_split():
    files = kaggle_3m.list_patients(FULL_DATA)
    assert len(files) == 110 and sum(len(s) for s in files.values()) == 3929
    assert dataset.split_patients(files, "validation") == REFERENCE_VALIDATION
    assert len(dataset.split_patients(files, "train")) == 100


def test_context_slices_stack_the_neighbours_nearest_first_with_the_ends_repeated():
    volume = np.arange(4, dtype=np.float32).reshape(4, 1, 1, 1) * np.ones((1, 2, 2, 3), dtype=np.float32)
    stacked = preprocessing.with_context(volume, 1)
    assert stacked.shape == (4, 2, 2, 9)
    # slice s holds s-1, s, s+1 (three channels each), clipped to 0 .. 3 at the ends
    assert [list(stacked[s, 0, 0, ::3]) for s in range(4)] == [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 3]]
    assert preprocessing.with_context(volume, 0) is volume
    assert [list(preprocessing.with_context(volume, 2)[0, 0, 0, ::3])] == [[0, 0, 0, 1, 2]]
