import os
from pathlib import Path

import numpy as np
import pytest
import tifffile

import synthetic

REPO = Path(__file__).resolve().parent.parent
SAMPLE_DIR = Path(os.environ.get("LGG_SAMPLE_DIR", REPO.parent / "shared" / "data" / "lgg-sample" / "kaggle_3m"))


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory):
    """8 phantom patients of 8 slices each, in the kaggle_3m layout."""
    return synthetic.make_phantom_dataset(tmp_path_factory.mktemp("phantom"), patients=8, slices=8, seed=3)


def write_patient(root, patient, images, masks):
    """Write hand-made slices numbered 1..N as <patient>_<n>.tif and <patient>_<n>_mask.tif."""
    folder = Path(root) / patient
    folder.mkdir(parents=True, exist_ok=True)
    for number, (image, mask) in enumerate(zip(images, masks), start=1):
        tifffile.imwrite(folder / f"{patient}_{number}.tif", np.asarray(image, dtype=np.uint8))
        tifffile.imwrite(folder / f"{patient}_{number}_mask.tif", np.asarray(mask, dtype=np.uint8))
    return folder
