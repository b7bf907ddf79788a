"""Lossless packing of a kaggle_3m folder into chunks, and back."""

import pytest
import numpy as np
import tifffile

from layouts import kaggle_3m
from conftest import write_patient
from tools.gpu import pack_data


@pytest.mark.slow
def test_pack_and_unpack_give_back_the_same_files_and_pixels(phantom_dir, tmp_path):
    chunks = pack_data.pack(phantom_dir, tmp_path / "packed", chunk_mib=0.25)
    assert len(chunks) > 1
    original_bytes = sum(path.stat().st_size for path in phantom_dir.rglob("*.tif"))
    assert sum(chunk.stat().st_size for chunk in chunks) < original_bytes / 2
    assert pack_data.unpack(tmp_path / "packed", tmp_path / "kaggle_3m") == 8
    before, after = kaggle_3m.list_patients(phantom_dir), kaggle_3m.list_patients(tmp_path / "kaggle_3m")
    assert sorted(before) == sorted(after)
    for patient in before:
        names = [[(n, i.name, m.name) for n, i, m in listing[patient]] for listing in (before, after)]
        assert names[0] == names[1]
        for (_, image, mask), (_, image2, mask2) in zip(before[patient], after[patient]):
            assert np.array_equal(tifffile.imread(image), tifffile.imread(image2))
            assert np.array_equal(tifffile.imread(mask), tifffile.imread(mask2))


def test_masks_keep_their_value_range(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(3, 8, 8, 3), dtype=np.uint8)
    masks = np.zeros((3, 8, 8), np.uint8)
    masks[1, 2:5, 3:6] = 1  # a 0/1 mask stays 0/1
    write_patient(tmp_path / "data", "TCGA_AA_0001_20000101", images, masks)
    pack_data.pack(tmp_path / "data", tmp_path / "packed")
    pack_data.unpack(tmp_path / "packed", tmp_path / "out")
    folder = tmp_path / "out" / "TCGA_AA_0001_20000101"
    assert np.array_equal(tifffile.imread(folder / "TCGA_AA_0001_20000101_2_mask.tif"), masks[1])
    assert np.array_equal(tifffile.imread(folder / "TCGA_AA_0001_20000101_3.tif"), images[2])
