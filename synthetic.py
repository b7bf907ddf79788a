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


def _smooth_noise(rng, shape, cell):
    """Noise that varies over about `cell` pixels: blocks of normal noise, blurred."""
    from scipy import ndimage

    coarse = rng.normal(0, 1, size=tuple(max(1, n // cell) for n in shape))
    fine = np.kron(coarse, np.ones((1,) + (cell,) * (len(shape) - 1)))[: shape[0], : shape[1], : shape[2]]
    return ndimage.gaussian_filter(fine, sigma=(0,) + (cell / 2,) * (len(shape) - 1))


def phantom_volume(rng, slices, size=SLICE_SIZE):
    """Return (image uint8 (Z, size, size, 3), mask uint8 (Z, size, size) in {0, 255}).

    The lesion is FLAIR-bright with an irregular outline that fades into the tissue over a few pixels, and
    two decoys are FLAIR-bright too but also bright after contrast (as vessels are): telling them apart
    needs the three channels together, so a network learns it over several epochs rather than in ten steps.
    """
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

    def blob(radius_range, z_range):
        radius = rng.uniform(*radius_range, size=2) * size
        centre = np.array([centre_y, centre_x]) + rng.uniform(-0.5, 0.5, size=2) * np.array([radius_y, radius_x])
        extent = rng.uniform(*z_range) * slices
        return np.sqrt(((z - (slices - 1) / 2) / extent) ** 2 + ((y - centre[0]) / radius[0]) ** 2
                       + ((x - centre[1]) / radius[1]) ** 2)

    shape = (slices, size, size)
    distance = blob((0.05, 0.10), (0.25, 0.4)) * (1 + 0.25 * _smooth_noise(rng, shape, 32))  # irregular outline
    lesion = (distance < 1.0) & brain
    fade = np.clip((1.15 - distance) / 0.3, 0, 1) * brain  # partial volume: the edge is dimmer than the core
    lesion[[0, -1]], fade[[0, -1]] = False, 0  # the end slices carry no lesion, as in the real data
    decoys = sum(np.clip((1.1 - blob((0.02, 0.04), (0.15, 0.3))) / 0.2, 0, 1) for _ in range(2)) * brain * ~lesion

    texture = np.kron(rng.normal(0, 1, size=(slices, size // 16, size // 16)), np.ones((1, 16, 16)))
    image = np.zeros((slices, size, size, 3))
    tissue = np.array([85.0, 100.0, 90.0])
    lesion_shift = np.array([-8.0, 28.0, 4.0])
    decoy_shift = np.array([0.0, 28.0, 40.0])
    for channel in range(3):
        plane = np.full(shape, 3.0)
        plane[brain] = tissue[channel] + 10 * texture[brain]
        plane[skull] = 170.0
        plane += lesion_shift[channel] * fade + decoy_shift[channel] * decoys
        image[..., channel] = plane + rng.normal(0, 1, size=shape) * np.where(brain | skull, 12.0, 2.0)
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


# ---------------------------------------------------------------- one's own images: the folder layouts

FOLDER_SIZES = ((64, 64), (48, 80), (96, 72))  # images of different sizes, as users' own are


def phantom_cells(rng, height, width, cells=5):
    """(grey float image (H, W) in [0, 1], one bool mask (H, W) per cell): bright round cells of different sizes
    on a dark, noisy background, a few of them touching the image's edge."""
    y, x = np.mgrid[:height, :width]
    image = rng.normal(0.1, 0.03, size=(height, width))
    masks = []
    for _ in range(cells):
        radius = rng.uniform(0.06, 0.12) * min(height, width)
        centre = rng.uniform(0, 1, size=2) * (height, width)
        cell = (y - centre[0]) ** 2 + (x - centre[1]) ** 2 < radius ** 2
        image[cell] += rng.uniform(0.5, 0.8)
        masks.append(cell)
    return np.clip(image, 0, 1), masks


def make_phantom_folder(root, layout="images_masks", images=12, seed=0):
    """Write `images` phantom cell images in one of the folder layouts (layouts/folders.py) under root and return
    root: images_masks (RGB PNGs, 0/255 masks), nuclei (RGBA PNGs, a mask file per cell) or lung_ct (signed 16-bit
    TIFFs in CT numbers, 0/255 masks); the sizes vary (FOLDER_SIZES)."""
    import imageio.v3 as iio

    root = Path(root)
    rng = np.random.default_rng(seed)
    for index in range(images):
        name = f"cell_{index:03d}"
        image, cells = phantom_cells(rng, *FOLDER_SIZES[index % len(FOLDER_SIZES)])
        union = (np.any(cells, axis=0) * 255).astype(np.uint8)
        if layout == "images_masks":
            (root / "images").mkdir(parents=True, exist_ok=True)
            (root / "masks").mkdir(parents=True, exist_ok=True)
            iio.imwrite(root / "images" / f"{name}.png", np.repeat((image * 255).astype(np.uint8)[..., None], 3, -1))
            iio.imwrite(root / "masks" / f"{name}.png", union)
        elif layout == "nuclei":
            (root / name / "images").mkdir(parents=True, exist_ok=True)
            (root / name / "masks").mkdir(parents=True, exist_ok=True)
            grey = (image * 255).astype(np.uint8)
            iio.imwrite(root / name / "images" / f"{name}.png", np.dstack([grey, grey, grey, np.full_like(grey, 255)]))
            for number, cell in enumerate(cells):
                iio.imwrite(root / name / "masks" / f"{number}.png", (cell * 255).astype(np.uint8))
        elif layout == "lung_ct":
            (root / "2d_images").mkdir(parents=True, exist_ok=True)
            (root / "2d_masks").mkdir(parents=True, exist_ok=True)
            tifffile.imwrite(root / "2d_images" / f"{name}.tif", (image * 1400 - 1000).astype(np.int16))
            tifffile.imwrite(root / "2d_masks" / f"{name}.tif", union)
        else:
            raise ValueError(f"no phantom for layout {layout!r}: use images_masks, nuclei or lung_ct")
    return root
