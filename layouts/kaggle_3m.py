"""The kaggle_3m layout of the LGG dataset (Kaggle mateuszbuda/lgg-mri-segmentation), with the reference's
semantics: a folder per patient of <patient>_<n>.tif slices (pre-contrast, FLAIR, post-contrast) and their
<patient>_<n>_mask.tif masks; a patient is a volume (its first and last slices dropped, as the reference does).
"""

import os
import re
from pathlib import Path

import numpy as np
import tifffile

from layouts import DataError, Layout, register

MACOS_DEBRIS = "__MACOSX"
_SLICE_NAME = re.compile(r"^(?P<patient>.+)_(?P<number>\d+)(?P<mask>_mask)?\.tiff?$", re.IGNORECASE)


def is_slice_file(name):
    """A .tif or .tiff of any case, but not macOS zip debris (._name AppleDouble files)."""
    return name.lower().endswith((".tif", ".tiff")) and not name.startswith("._")


def holds_patients(folder):
    folder = Path(folder)
    return folder.is_dir() and any(
        child.is_dir() and child.name != MACOS_DEBRIS and any(is_slice_file(f.name) for f in child.iterdir())
        for child in folder.iterdir()
    )


def list_patients(data_dir, require_masks=True):
    """Map patient id -> list of (slice number, image path, mask path), ordered by number.

    With require_masks=False, images may come without masks (mask path None),
    as for new patients to segment.
    """
    data_dir = Path(data_dir)
    patients, seen = {}, set()
    for dirpath, dirnames, filenames in os.walk(data_dir, followlinks=True):  # symlinked patient folders too
        real = os.path.realpath(dirpath)
        if real in seen:  # a link back to a folder already read: no loop, no patient twice
            dirnames.clear()
            continue
        seen.add(real)
        dirnames[:] = [name for name in dirnames if name != MACOS_DEBRIS]
        slices = {}
        for filename in sorted(filenames):
            if not is_slice_file(filename):
                continue
            path = Path(dirpath) / filename
            match = _SLICE_NAME.match(filename)
            if match is None:
                raise DataError(
                    f"{path}: slice name without a number; expected <patient>_<number>.tif "
                    "or <patient>_<number>_mask.tif: rename or remove it"
                )
            entry = slices.setdefault(int(match["number"]), {})
            kind = "mask" if match["mask"] else "image"
            if kind in entry:
                raise DataError(
                    f"{path}: slice number {int(match['number'])} already taken by {entry[kind].name}; "
                    "remove the duplicate"
                )
            entry[kind] = path
        if not slices:
            continue
        patient = Path(dirpath).name
        if patient in patients:
            raise DataError(
                f"{dirpath}: patient {patient} appears twice under {data_dir}; "
                "point data_path at a single kaggle_3m folder"
            )
        for number, entry in slices.items():
            if "mask" not in entry and require_masks:
                raise DataError(
                    f"{entry['image']}: image without its mask; add {patient}_{number}_mask.tif "
                    "or remove the image"
                )
            if "image" not in entry:
                raise DataError(
                    f"{entry['mask']}: mask without its image; add {patient}_{number}.tif "
                    "or remove the mask"
                )
        patients[patient] = [(n, slices[n]["image"], slices[n].get("mask")) for n in sorted(slices)]
    if not patients:
        raise DataError(
            f"{data_dir}: no patient folders with .tif slices found; point data_path at the "
            "kaggle_3m folder of the LGG dataset"
        )
    return patients


def _read_tiff(path):
    try:
        return tifffile.imread(path)
    except Exception as error:  # tifffile raises many types for damaged files
        if "imagecodecs" in str(error) or "compression" in str(error):
            raise DataError(
                f"{path}: a compressed TIFF whose codec needs the imagecodecs package ({error}); "
                "pip install imagecodecs, the file itself is fine"
            ) from None
        raise DataError(
            f"{path}: unreadable TIFF ({type(error).__name__}: {error}); re-download the file or remove the slice"
        ) from None


def read_image(path):
    image = _read_tiff(path)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise DataError(
            f"{path}: image of shape {image.shape}; expected height x width x 3 "
            "(pre-contrast, FLAIR, post-contrast)"
        )
    return image


def read_mask(path):
    mask = _read_tiff(path)
    if mask.ndim == 3 and all(np.array_equal(mask[..., 0], mask[..., c]) for c in range(mask.shape[-1])):
        mask = mask[..., 0]  # a grey mask saved with identical channels
    if mask.ndim != 2:
        raise DataError(f"{path}: mask of shape {mask.shape}; expected height x width")
    values = np.unique(mask)
    if not (set(values.tolist()) <= {0, 255} or set(values.tolist()) <= {0, 1}):
        raise DataError(
            f"{path}: mask values {values[:6].tolist()}{'...' if len(values) > 6 else ''}; "
            "expected {0, 255} or {0, 1}: binarise the mask"
        )
    return mask


def read_patient(slices):
    """Read one patient's slices and drop the first and the last, as the reference does."""
    return LAYOUT.read_case(slices, SEQUENCES)


SEQUENCES = ("pre-contrast", "FLAIR", "post-contrast")  # a kaggle_3m slice's channels, in order
PRE_CONTRAST, FLAIR_CHANNEL, POST_CONTRAST = (SEQUENCES.index(name) for name in SEQUENCES)


class Kaggle3m(Layout):
    name = "kaggle_3m"
    description = "a folder per patient of <patient>_<n>.tif slices and <patient>_<n>_mask.tif masks"
    volumes = True
    largest_component = True
    # An LGG abnormality fills at most a few percent of the brain's bounding box (in kaggle_3m at most 3.7%, in
    # TCGA_HT_7694, of the box around its nonzero FLAIR voxels); masks marking most of it are inverted or blank-filled.
    max_mask_fraction = 0.5
    validation_cases = 10  # the reference split
    mask_suffix = ".tif"
    original_size = "256x256"  # every kaggle_3m slice's

    def holds(self, folder):
        return holds_patients(folder)

    def cases(self, folder, require_masks=True):
        return list_patients(folder, require_masks)

    def read_image(self, path, channels=None):
        return read_image(path)

    def read_mask(self, mask):
        return read_mask(mask)

    def channels(self, files):
        return SEQUENCES

    def overlay_channel(self, channels):
        return FLAIR_CHANNEL

    def read_case(self, slices, channels):
        images, masks = super().read_case(slices, channels)
        return images[1:-1], masks[1:-1]  # the first and the last slice dropped, as the reference does

    def mask_name(self, case, number, image):
        return f"{case}_{number}_mask{self.mask_suffix}"  # the dataset's own name, as its truth


LAYOUT = register(Kaggle3m())
