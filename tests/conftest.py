import os
from pathlib import Path

import json

import numpy as np
import pytest
import tifffile
import torch

import checkpoint
import synthetic
from unet import UNet

REPO = Path(__file__).resolve().parent.parent
SAMPLE_DIR = Path(os.environ.get("LGG_SAMPLE_DIR", REPO.parent / "shared" / "data" / "lgg-sample" / "kaggle_3m"))
# 20 real nuclei images of the 2018 Data Science Bowl (its README), for the nuclei layout
NUCLEI_SAMPLE_DIR = Path(os.environ.get("DSB2018_SAMPLE_DIR",
                                        REPO.parent / "shared" / "data" / "dsb2018-sample" / "stage1_train"))


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory):
    """8 phantom patients of 8 slices each, in the kaggle_3m layout."""
    return synthetic.make_phantom_dataset(tmp_path_factory.mktemp("phantom"), patients=8, slices=8, seed=3)


@pytest.fixture
def blob_run(phantom_dir, tmp_path):
    """A run folder as experiments.py leaves it (results.json, weights/unet.pt) whose untrained U-Net predicts
    blobs of several components on two phantom patients: returns (folder, those patients)."""
    torch.manual_seed(0)
    folder = tmp_path / "run"
    model = UNet(init_features=4)
    with torch.no_grad():  # a random model predicts nothing above 0.5: move its logits so that it predicts blobs
        model.conv.bias -= torch.quantile(model(torch.rand(2, 3, 32, 32)), 0.7)
    checkpoint.save_weights(model, folder / "weights" / "unet.pt", 32, dict(init_features=4))
    patients = ["TCGA_SY_0001_20000101", "TCGA_SY_0003_20000101"]
    (folder / "results.json").write_text(json.dumps(dict(data_dir=str(phantom_dir), validation_patients=patients,
                                                         params=dict(cache_dir=None))))
    return folder, patients


def write_patient(root, patient, images, masks):
    """Write hand-made slices numbered 1..N as <patient>_<n>.tif and <patient>_<n>_mask.tif."""
    folder = Path(root) / patient
    folder.mkdir(parents=True, exist_ok=True)
    for number, (image, mask) in enumerate(zip(images, masks), start=1):
        tifffile.imwrite(folder / f"{patient}_{number}.tif", np.asarray(image, dtype=np.uint8))
        tifffile.imwrite(folder / f"{patient}_{number}_mask.tif", np.asarray(mask, dtype=np.uint8))
    return folder
