"""Phantom generator: a small, brain-like dataset in the kaggle_3m layout.

It is the embedded default (every notebook runs end to end before the real
data is downloaded) and the data of most tests. Each patient is an ellipsoid
head with a bright skull ring and one FLAIR-bright lesion that spans the middle
slices, so the end slices carry no lesion, as in the real data.
"""

import json
from pathlib import Path

import numpy as np
import tifffile

SLICE_SIZE = 256
_MARKER = "synthetic.json"


def patient_name(index):
    return f"TCGA_SY_{index + 1:04d}_20000101"


def phantom_volume(rng, slices, size=SLICE_SIZE):
    """Return (image uint8 (Z, size, size, 3), mask uint8 (Z, size, size) in {0, 255})."""
    z = np.arange(slices, dtype=np.float64)[:, None, None]
    y = np.arange(size, dtype=np.float64)[None, :, None]
    x = np.arange(size, dtype=np.float64)[None, None, :]

    centre_y, centre_x = size / 2 + rng.uniform(-8, 8, size=2)
    radius_y, radius_x = size * rng.uniform(0.33, 0.40), size * rng.uniform(0.28, 0.34)
    radius_z = slices / 2 * 1.02
    head = ((z - (slices - 1) / 2) / radius_z) ** 2 + ((y - centre_y) / radius_y) ** 2 + (
        (x - centre_x) / radius_x
    ) ** 2
    brain = head < 0.85
    skull = (head >= 0.85) & (head < 1.0)

    lesion_radius = rng.uniform(0.04, 0.09, size=2) * size
    lesion_centre = np.array([centre_y, centre_x]) + rng.uniform(-0.5, 0.5, size=2) * np.array(
        [radius_y, radius_x]
    )
    lesion_z = rng.uniform(0.25, 0.4) * slices
    lesion = (
        ((z - (slices - 1) / 2) / lesion_z) ** 2
        + ((y - lesion_centre[0]) / lesion_radius[0]) ** 2
        + ((x - lesion_centre[1]) / lesion_radius[1]) ** 2
    ) < 1.0
    lesion &= brain

    texture = rng.normal(0, 1, size=(slices, size // 16, size // 16))
    texture = np.kron(texture, np.ones((1, 16, 16)))
    image = np.zeros((slices, size, size, 3))
    tissue = np.array([85.0, 100.0, 90.0])
    lesion_shift = np.array([-15.0, 90.0, 10.0])
    for channel in range(3):
        plane = np.full((slices, size, size), 3.0)
        plane[brain] = tissue[channel] + 8 * texture[brain]
        plane[skull] = 170.0
        plane[lesion] += lesion_shift[channel]
        image[..., channel] = plane + rng.normal(0, 4, size=plane.shape)
    image = np.clip(image, 0, 255).astype(np.uint8)
    mask = (lesion * 255).astype(np.uint8)
    return image, mask


def make_phantom_dataset(root, patients=16, slices=16, seed=0):
    """Write `patients` phantom patients under root/kaggle_3m and return that folder.

    Re-running with the same parameters reuses what is already there.
    """
    data_dir = Path(root) / "kaggle_3m"
    params = {"patients": patients, "slices": slices, "seed": seed, "size": SLICE_SIZE}
    marker = data_dir / _MARKER
    if marker.exists() and json.loads(marker.read_text()) == params:
        return data_dir
    rng = np.random.default_rng(seed)
    for index in range(patients):
        name = patient_name(index)
        folder = data_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        image, mask = phantom_volume(rng, slices)
        for number in range(slices):
            tifffile.imwrite(folder / f"{name}_{number + 1}.tif", image[number])
            tifffile.imwrite(folder / f"{name}_{number + 1}_mask.tif", mask[number])
    (data_dir / "README.md").write_text(
        "Synthetic phantom patients made by synthetic.py: not real MRI.\n"
    )
    marker.write_text(json.dumps(params))
    return data_dir
