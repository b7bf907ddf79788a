"""LGG FLAIR-abnormality dataset with the reference's semantics: where the kaggle_3m data is, its patients and
slices, the channels, the seed-42 split and k folds, and the Dataset that samples slices as the reference does.
The per-volume preprocessing, its inverse and its cache are preprocessing.py's.
"""

import os
import random
import re
from pathlib import Path

import numpy as np
import tifffile
import torch
from torch.utils.data import Dataset

import synthetic
from preprocessing import DEFAULT_CACHE_DIR, load_volumes, with_context

DEFAULT_SYNTHETIC_ROOT = Path("data") / "synthetic"
SEARCH_PATTERNS = (
    "kaggle_3m",
    "data/kaggle_3m",
    "archive/kaggle_3m",
    "lgg-mri-segmentation/kaggle_3m",
    "lgg-mri-segmentation/lgg-mri-segmentation/kaggle_3m",
    "archive/lgg-mri-segmentation/kaggle_3m",
    "../input/*/kaggle_3m",
    "../input/*/*/kaggle_3m",
    "../input/*/*/*/kaggle_3m",
    "/kaggle/input/*/kaggle_3m",
    "/kaggle/input/*/*/kaggle_3m",
)
MACOS_DEBRIS = "__MACOSX"
_SLICE_NAME = re.compile(r"^(?P<patient>.+)_(?P<number>\d+)(?P<mask>_mask)?\.tiff?$", re.IGNORECASE)


class DataError(ValueError):
    """Bad input data: the message says which file, what is wrong, what to do."""


# ---------------------------------------------------------------- locating data


def is_slice_file(name):
    """A .tif or .tiff of any case, but not macOS zip debris (._name AppleDouble files)."""
    return name.lower().endswith((".tif", ".tiff")) and not name.startswith("._")


def _holds_patients(folder):
    folder = Path(folder)
    return folder.is_dir() and any(
        child.is_dir() and child.name != MACOS_DEBRIS and any(is_slice_file(f.name) for f in child.iterdir())
        for child in folder.iterdir()
    )


def _say_synthetic_fallback():
    line = "=" * 100
    print(f"{line}\nNO LGG DATA FOUND: training and predicting on the SYNTHETIC PHANTOM default instead.\n"
          f"Searched (from {Path.cwd()}): {', '.join(SEARCH_PATTERNS)}.\n"
          f"For the real data, put kaggle_3m in one of those places or set data_path to it.\n{line}")


def locate_data(path=None, synthetic_root=DEFAULT_SYNTHETIC_ROOT):
    """Return (data folder, how it was found).

    An explicit `path` must hold patient folders. Without one, the usual
    places (./kaggle_3m, ./archive/kaggle_3m, ./lgg-mri-segmentation/kaggle_3m,
    Kaggle's and Heywhale's ../input/**/kaggle_3m) are searched, and if none
    holds data the synthetic phantom set is generated and used.
    """
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_dir():
            raise DataError(
                f"{path}: data folder does not exist; point data_path at the kaggle_3m folder of the LGG "
                "dataset, or set it to None for the synthetic default"
            )
        if not _holds_patients(path):
            raise DataError(
                f"{path}: no patient folders with .tif slices found; point data_path at the "
                "kaggle_3m folder of the LGG dataset, or set it to None for the synthetic default"
            )
        return path, "explicit path"
    for pattern in SEARCH_PATTERNS:
        root = Path("/") if pattern.startswith("/") else Path(".")
        for candidate in sorted(root.glob(pattern.lstrip("/"))):
            if _holds_patients(candidate):
                return candidate.resolve(), f"found at {pattern}"
    _say_synthetic_fallback()
    return synthetic.make_phantom_dataset(synthetic_root), "synthetic phantom default"


def is_synthetic(data_dir):
    return (Path(data_dir) / synthetic._MARKER).exists()


# ---------------------------------------------------------------- listing files


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


def split_patients(patients, subset, validation_cases=10, seed=42, folds=0, fold=0):
    """The reference split: sorted ids, random.seed(seed), random.sample(ids, k).

    The validation list keeps random.sample's order (the reference's slice order
    in validation depends on it); the training list is sorted.

    folds > 1 replaces it with patient-level k-fold cross-validation: the sorted
    ids shuffled with random.Random(seed), fold i validates on every folds-th
    patient from position i, so the folds partition the patients
    (validation_cases is then unused).
    """
    if subset not in ("all", "train", "validation"):
        raise ValueError(f"subset must be 'all', 'train' or 'validation', not {subset!r}")
    patients = sorted(patients)
    if subset == "all":
        return patients
    if folds and folds > 1:
        if not 0 <= fold < folds:
            raise ValueError(f"fold={fold} is not one of 0..{folds - 1} for folds={folds}")
        if folds > len(patients):
            raise DataError(f"folds={folds} but the data has only {len(patients)} patients; lower folds")
        shuffled = list(patients)
        random.Random(seed).shuffle(shuffled)
        validation = shuffled[fold::folds]
    else:
        if validation_cases > len(patients) or (subset == "train" and validation_cases >= len(patients)):
            raise DataError(
                f"validation_cases={validation_cases} but the data has only {len(patients)} "
                "patients, which leaves none to train on; lower validation_cases"
            )
        random.seed(seed)
        validation = random.sample(patients, k=validation_cases)
    if subset == "validation":
        return validation
    return sorted(set(patients) - set(validation))


# ---------------------------------------------------------------- reading slices


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
    images, masks = [], []
    for _, image_path, mask_path in slices:
        image = read_image(image_path)
        mask = read_mask(mask_path) if mask_path is not None else np.zeros(image.shape[:2], np.uint8)
        if mask.shape != image.shape[:2]:
            raise DataError(f"{mask_path}: mask of shape {mask.shape} for an image of shape {image.shape}")
        if images and image.dtype != images[0].dtype:
            raise DataError(
                f"{image_path}: a {image.dtype} slice among {images[0].dtype} slices ({slices[0][1].name} is "
                f"{images[0].dtype}); the 10% crop and the normalisation are per volume, so one slice of another "
                f"bit depth would blank the others: convert it to {images[0].dtype} like the rest"
            )
        if images and image.shape != images[0].shape:
            raise DataError(
                f"{image_path}: image of shape {image.shape}, but {slices[0][1].name} has {images[0].shape}; "
                "all slices of a patient must have one size"
            )
        images.append(image)
        masks.append(mask)
    return np.stack(images)[1:-1], np.stack(masks)[1:-1]


def original_truth(slice_files):
    """The truth masks of a patient's original slices, as booleans (slices, height, width)."""
    return np.stack([read_mask(mask) for _, _, mask in slice_files]) > 0


# An LGG abnormality fills at most a few percent of the brain's bounding box (in kaggle_3m at most 3.7%, in
# TCGA_HT_7694, of the box around its nonzero FLAIR voxels); masks marking most of it are inverted or blank-filled.
MAX_MASK_FRACTION = 0.5


def refuse_implausible_masks(mask, slice_files):
    """Refuse a patient's preprocessed masks that mark most of the volume abnormal: trained or scored, they
    would teach or reward the inverse of the task without a word."""
    fraction = float(np.mean(mask > 0))
    if fraction > MAX_MASK_FRACTION:
        raise DataError(
            f"{slice_files[0][1].parent}: its masks mark {fraction:.0%} of the volume abnormal; masks are 0 for "
            "normal tissue and 255 for the abnormality (inverted masks?): fix them, or move the patient out"
        )


# ---------------------------------------------------------------- channels

SEQUENCES = ("pre-contrast", "FLAIR", "post-contrast")  # a kaggle_3m slice's channels, in order
FLAIR_CHANNEL = SEQUENCES.index("FLAIR")


def flair_channel(context_slices=0):
    """The input channel of the centre slice's FLAIR when each slice comes with context_slices neighbours on
    either side (with_context's layout)."""
    return context_slices * len(SEQUENCES) + FLAIR_CHANNEL


# ---------------------------------------------------------------- dataset


def slice_sampling_weights(mask_volume):
    """The reference's per-slice sampling probabilities: tumour area plus 10% of the mean, normalised."""
    areas = mask_volume.reshape(mask_volume.shape[0], -1).sum(axis=1).astype(np.float64)
    total = areas.sum()
    if total == 0:
        raise DataError("no tumour pixel in any slice, so mask-weighted sampling is undefined")
    return (areas + total * 0.1 / len(areas)) / (total * 1.1)


class BrainSegmentationDataset(Dataset):
    """Brain MRI dataset for FLAIR abnormality segmentation (reference semantics)."""

    out_channels = 1

    def __init__(
        self,
        images_dir,
        transform=None,
        image_size=256,
        subset="train",
        random_sampling=True,
        validation_cases=10,
        seed=42,
        cache_dir=DEFAULT_CACHE_DIR,
        workers=None,
        progress=True,
        require_masks=True,
        patients=None,
        folds=0,
        fold=0,
        context_slices=0,
    ):
        self.context_slices = context_slices
        self.in_channels = len(SEQUENCES) * (2 * context_slices + 1)
        all_files = list_patients(images_dir, require_masks=require_masks and random_sampling)
        if patients is not None:
            missing = sorted(set(patients) - set(all_files))
            if missing:
                raise DataError(f"{images_dir}: no patient folder for {', '.join(missing)}")
            all_files = {patient: all_files[patient] for patient in patients}
            subset = "all"
        self.patients = split_patients(all_files, subset, validation_cases, seed, folds, fold)
        if patients is not None:
            self.patients = list(patients)
        files = {patient: all_files[patient] for patient in self.patients}
        self.files = files
        self.has_masks = {patient: all(mask is not None for _, _, mask in files[patient]) for patient in files}
        for patient, slices in files.items():
            if len(slices) < 3:
                raise DataError(
                    f"{slices[0][1].parent}: patient {patient} has {len(slices)} slices, too few to "
                    "drop the first and last; remove the folder or add its slices"
                )
        loaded = load_volumes(files, image_size, cache_dir, workers, progress)
        for patient in self.patients:
            refuse_implausible_masks(loaded[patient][1], files[patient])
        self.volumes = [(with_context(loaded[p][0], context_slices), loaded[p][1][..., np.newaxis])
                        for p in self.patients]
        self.geometries = [loaded[p][2] for p in self.patients]
        self.random_sampling = random_sampling
        self.slice_weights = None
        if random_sampling:
            self.slice_weights = []
            for patient, (_, mask) in zip(self.patients, self.volumes):
                try:
                    self.slice_weights.append(slice_sampling_weights(mask))
                except DataError as error:
                    raise DataError(
                        f"{files[patient][0][2].parent}: patient {patient} has {error}; move it out of "
                        "the training set or fix its masks"
                    ) from None
        self.patient_slice_index = [
            (p, s) for p, (volume, _) in enumerate(self.volumes) for s in range(volume.shape[0])
        ]
        self.transform = transform

    def __len__(self):
        return len(self.patient_slice_index)

    def __getitem__(self, idx):
        patient, slice_n = self.patient_slice_index[idx]
        if self.random_sampling:
            patient = np.random.randint(len(self.volumes))
            slice_n = np.random.choice(len(self.slice_weights[patient]), p=self.slice_weights[patient])
        volume, mask = self.volumes[patient]
        image, mask = volume[slice_n], mask[slice_n]
        if self.transform is not None:
            image, mask = self.transform((image, mask))
        image = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32))
        mask = torch.from_numpy(np.ascontiguousarray(mask.transpose(2, 0, 1), dtype=np.float32))
        return image, mask
