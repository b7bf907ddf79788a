"""The dataset with the reference's semantics: where the data is, the seed-42 split and k folds, and the Dataset
that samples slices as the reference does. Each layout's files and channels are its reader's (layouts/); the
preprocessing, its inverse and its cache are preprocessing.py's.
"""

import random
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

import layouts
import synthetic
from layouts import DataError
from preprocessing import DEFAULT_CACHE_DIR, load_volumes, stacked_slices, with_context

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


# ---------------------------------------------------------------- locating data


def _say_synthetic_fallback():
    line = "=" * 100
    print(f"{line}\nNO LGG DATA FOUND: training and predicting on the SYNTHETIC PHANTOM default instead.\n"
          f"Searched (from {Path.cwd()}): {', '.join(SEARCH_PATTERNS)}.\n"
          f"For the real data, put kaggle_3m in one of those places or set data_path to it.\n{line}")


def locate_data(path=None, synthetic_root=DEFAULT_SYNTHETIC_ROOT, dataset=None):
    """Return (data folder, how it was found).

    An explicit `path` must hold data in a known layout (dataset's, when given). Without one, the usual
    places (./kaggle_3m, ./archive/kaggle_3m, ./lgg-mri-segmentation/kaggle_3m,
    Kaggle's and Heywhale's ../input/**/kaggle_3m) are searched, and if none
    holds data the synthetic phantom set is generated and used.
    """
    if path is not None:
        path = Path(path).expanduser()
        if not path.exists():
            raise DataError(
                f"{path}: data folder does not exist; point data_path at the kaggle_3m folder of the LGG "
                "dataset (or a folder of your own images), or set it to None for the synthetic default"
            )
        layouts.detect(path, dataset)  # a folder of no known layout is said now, with the layouts it could be
        return path, "explicit path"
    for pattern in SEARCH_PATTERNS:
        root = Path("/") if pattern.startswith("/") else Path(".")
        for candidate in sorted(root.glob(pattern.lstrip("/"))):
            if layouts.LAYOUTS["kaggle_3m"].holds(candidate):
                return candidate.resolve(), f"found at {pattern}"
    _say_synthetic_fallback()
    return synthetic.make_phantom_dataset(synthetic_root), "synthetic phantom default"


def is_synthetic(data_dir):
    return (Path(data_dir) / synthetic._MARKER).exists()


def list_cases(data_dir, dataset=None, require_masks=True, case_pattern=None):
    """(layout, {case: slices}) of data_dir: its layout (dataset's, else detected) and its cases, grouped into
    volumes by case_pattern (layouts.Layout.grouped)."""
    layout = layouts.detect(data_dir, dataset)
    return layout, layout.grouped(layout.cases(data_dir, require_masks=require_masks), case_pattern)


# ---------------------------------------------------------------- the split


def validation_count(validation_cases, cases):
    """How many of cases validate: validation_cases itself (an int), or that fraction of them (a float below 1,
    rounded, at least 1)."""
    if isinstance(validation_cases, float) and 0 < validation_cases < 1:
        return max(1, round(validation_cases * cases))
    return validation_cases


def split_patients(patients, subset, validation_cases=10, seed=42, folds=0, fold=0):
    """The reference split: sorted ids, random.seed(seed), random.sample(ids, k), k = validation_count.

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
        count = validation_count(validation_cases, len(patients))
        if count > len(patients) or (subset == "train" and count >= len(patients)):
            raise DataError(
                f"validation_cases={validation_cases} but the data has only {len(patients)} "
                "patients, which leaves none to train on; lower validation_cases"
            )
        random.seed(seed)
        validation = random.sample(patients, k=count)
    if subset == "validation":
        return validation
    return sorted(set(patients) - set(validation))


# ---------------------------------------------------------------- dataset


def refuse_implausible_masks(mask, where, max_fraction):
    """Refuse a case's preprocessed masks that mark more than max_fraction of it (the layout's) as the object:
    trained or scored, they would teach or reward the inverse of the task without a word. where: the folder or
    file to name."""
    fraction = float(np.mean(mask > 0))
    if fraction > max_fraction:
        raise DataError(
            f"{where}: its masks mark {fraction:.0%} of the case as the object; masks are 0 for the background "
            "(normal tissue) and nonzero for the object (inverted masks?): fix them, or move the case out"
        )


def slice_sampling_weights(mask_volume):
    """The reference's per-slice sampling probabilities: tumour area plus 10% of the mean, normalised."""
    areas = mask_volume.reshape(mask_volume.shape[0], -1).sum(axis=1).astype(np.float64)
    total = areas.sum()
    if total == 0:
        raise DataError("no tumour pixel in any slice, so mask-weighted sampling is undefined")
    return (areas + total * 0.1 / len(areas)) / (total * 1.1)


class BrainSegmentationDataset(Dataset):
    """Brain MRI dataset for FLAIR abnormality segmentation (reference semantics), and a case per image for the
    folder layouts (layouts/folders.py): dataset names the layout, None detects it; validation_cases None is the
    layout's own split (kaggle_3m: 10 patients; folders: 20% of the images); to_square: how an image that is not
    square fills the square grid (preprocessing.TO_SQUARE)."""

    out_channels = 1

    def __init__(
        self,
        images_dir,
        transform=None,
        image_size=256,
        subset="train",
        random_sampling=True,
        validation_cases=None,
        seed=42,
        cache_dir=DEFAULT_CACHE_DIR,
        workers=None,
        progress=True,
        require_masks=True,
        patients=None,
        folds=0,
        fold=0,
        context_slices=0,
        dataset=None,
        channels=None,
        case_pattern=None,
        to_square="pad",
    ):
        self.layout, all_files = list_cases(images_dir, dataset, require_masks and random_sampling, case_pattern)
        layout = self.layout
        if context_slices and not layout.volumes:
            raise DataError(f"{images_dir}: context_slices={context_slices}, but the {layout.name} layout's images "
                            "are no slices of volumes; use context_slices=0")
        self.context_slices = context_slices
        # the channels the model takes (channels: a trained model's count, at inference), else the data's own
        self.channels = layout.channels(all_files) if channels is None else layout.channels_for(channels, all_files)
        self.in_channels = len(self.channels) * stacked_slices(context_slices)
        if validation_cases is None:
            validation_cases = layout.validation_cases
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
            if layout.volumes and len(slices) < 3:
                raise DataError(
                    f"{slices[0][1].parent}: patient {patient} has {len(slices)} slices, too few to "
                    "drop the first and last; remove the folder or add its slices"
                )
        loaded = load_volumes(files, image_size, cache_dir, workers, progress, layout, self.channels, to_square)
        for patient in self.patients:
            slices = files[patient]
            where = slices[0][1].parent if layout.volumes else layouts.describe_mask(slices[0][2]) or slices[0][1]
            refuse_implausible_masks(loaded[patient][1], where, layout.max_mask_fraction)
        self.volumes = [(with_context(loaded[p][0], context_slices), loaded[p][1][..., np.newaxis])
                        for p in self.patients]
        self.geometries = [loaded[p][2] for p in self.patients]
        self.random_sampling = random_sampling
        self.slice_weights = None
        if random_sampling and not layout.volumes:  # a case per image: each image as often as any other
            self.slice_weights = [np.full(len(mask), 1 / len(mask)) for _, mask in self.volumes]
        elif random_sampling:
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

    @property
    def overlay_channel(self):
        """The input channel overlays draw on: the layout's (kaggle_3m: the FLAIR), of the centre slice when each
        slice comes with context_slices neighbours on either side (with_context's layout)."""
        return self.context_slices * len(self.channels) + self.layout.overlay_channel(self.channels)

    def truth(self, patient):
        """A case's masks at each slice's own geometry, as booleans (slices, height, width)."""
        return self.layout.truth(self.files[patient])

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
