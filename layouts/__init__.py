"""Data layouts: one reader per way of keeping images and masks on disk, registered by name.

A layout lists a folder's cases and reads them; nothing else in the project knows a folder's structure, its
file names or its channels. A case is a list of slices (number, image path, mask), the mask a path, a tuple of
paths whose union is the mask, or None (an image to segment); a slice's image is height x width x channels, its
mask height x width. Adding a layout is one reader and its `register` call (tests/test_layouts.py trains through
a toy one): kaggle_3m (layouts/kaggle_3m.py) and the folder layouts (layouts/folders.py) are registered here.
"""

import re
from pathlib import Path

import numpy as np


class DataError(ValueError):
    """Bad input data: the message says which file, what is wrong, what to do."""


class Layout:
    """What the rest of the code asks of a layout. Subclasses set the facts and implement holds, cases and the
    readers."""

    name = None
    description = ""  # a line for the errors that list the layouts
    # a case's slices form a volume: the reference's preprocessing (first and last slice dropped, voxels under
    # 10% of the maximum cropped away) and its 3-D largest-component post-processing; else each image is
    # resized whole (padded to a square) and no component is dropped (nuclei are many)
    volumes = False
    largest_component = False
    # masks marking more of a case than this are refused as inverted or blank-filled (1.0: none refused)
    max_mask_fraction = 1.0
    # the default split: validation cases (an int) or fraction of them (a float below 1)
    validation_cases = 0.2
    mask_suffix = ".png"  # predicted masks are written in this format
    original_size = "each image's own size"  # where the log says its scores at the original geometry are taken

    def holds(self, folder):
        """Whether folder holds data in this layout (what detection asks)."""
        raise NotImplementedError

    def cases(self, folder, require_masks=True):
        """{case id: [(number, image path, mask or None), ...] ordered by number}; DataError naming the file for
        an image without its mask (with require_masks), a mask without its image, a duplicate."""
        raise NotImplementedError

    def read_image(self, path, channels=None):
        """A slice's image, height x width x channels; with channels, converted to that many."""
        raise NotImplementedError

    def read_mask(self, mask):
        """A slice's mask (a path or a tuple of paths, united), height x width, nonzero where abnormal."""
        raise NotImplementedError

    def channels(self, files):
        """The names of the image channels of these cases ({case: slices}, as cases() gives)."""
        raise NotImplementedError

    def channels_for(self, count, files):
        """The channel names when a model takes count channels a slice: the data's own, where they are as many."""
        own = self.channels(files)
        if len(own) != count:
            raise DataError(f"the model takes {count} channel(s) a slice, the {self.name} data has {len(own)} "
                            f"({', '.join(own)}); use weights trained on data like it")
        return own

    def overlay_channel(self, channels):
        """The channel that overlays draw on (of channels, channels() names)."""
        return 0

    def read_case(self, slices, channels):
        """A case's images and masks as (slices, H, W, C) and (slices, H, W): its slices as they will be
        preprocessed (with volumes, the reference drops the first and the last)."""
        images, masks = [], []
        for _, image_path, mask in slices:
            image = self.read_image(image_path, len(channels))
            truth = self.read_mask(mask) if mask is not None else np.zeros(image.shape[:2], np.uint8)
            if truth.shape != image.shape[:2]:
                raise DataError(f"{describe_mask(mask)}: mask of shape {truth.shape} for an image of shape "
                                f"{image.shape}; give each image a mask of its own size")
            if images and image.shape != images[0].shape:
                raise DataError(f"{image_path}: image of shape {image.shape}, but {slices[0][1].name} has "
                                f"{images[0].shape}; all slices of a case must have one size")
            if images and image.dtype != images[0].dtype:
                raise DataError(
                    f"{image_path}: a {image.dtype} slice among {images[0].dtype} slices ({slices[0][1].name} is "
                    f"{images[0].dtype}); the normalisation is per case, so one slice of another bit depth would "
                    f"blank the others: convert it to {images[0].dtype} like the rest")
            images.append(image)
            masks.append((truth > 0).astype(np.uint8))
        return np.stack(images), np.stack(masks)

    def truth(self, slices):
        """A case's masks at each slice's own geometry, as booleans (slices, height, width)."""
        return np.stack([self.read_mask(mask) for _, _, mask in slices]) > 0

    def grouped(self, cases, pattern):
        """cases (of one image each) grouped into volumes by a regular expression on their ids: its group "case"
        names the volume, its group "number" (digits; else the id's order) orders the slices. None: as they are."""
        if pattern is None:
            return cases
        if self.volumes:
            raise DataError(f"case_pattern={pattern!r}: the {self.name} layout's cases are volumes already; use None")
        try:
            expression = re.compile(pattern)
        except re.error as error:
            raise DataError(f"case_pattern={pattern!r}: not a regular expression ({error}); e.g. "
                            r"'(?P<case>.+)_z(?P<number>\d+)'") from None
        if "case" not in expression.groupindex:
            raise DataError(f"case_pattern={pattern!r}: no group named case, which names the volume; e.g. "
                            r"'(?P<case>.+)_z(?P<number>\d+)'")
        volumes = {}
        for case in sorted(cases):
            match = expression.fullmatch(case)
            if match is None:
                raise DataError(f"{cases[case][0][1]}: its name {case!r} does not match case_pattern={pattern!r}; "
                                "rename it, or write a pattern that every name matches")
            number = int(match["number"]) if "number" in expression.groupindex else len(volumes.get(match["case"], []))
            (_, image, mask), = cases[case]
            volumes.setdefault(match["case"], []).append((number, image, mask))
        for volume, slices in volumes.items():
            numbers = [number for number, _, _ in slices]
            if len(set(numbers)) < len(numbers):
                raise DataError(f"{slices[0][1]}: case_pattern={pattern!r} gives two slices of {volume} the same "
                                "number; number them apart")
            slices.sort(key=lambda entry: entry[0])
        return volumes

    def mask_name(self, case, number, image):
        """The file name of the predicted mask of a case's slice (its number, its image's path): the image's name
        with _mask."""
        return f"{Path(image).stem}_mask{self.mask_suffix}"


def describe_mask(mask):
    """A mask for an error message: its path, or the folder of the files whose union it is."""
    return mask[0].parent if isinstance(mask, tuple) else mask


LAYOUTS = {}


def register(layout):
    """Make a layout known by its name (and to detection, after the ones registered before it)."""
    if not layout.name:
        raise ValueError("a layout needs a name")
    LAYOUTS[layout.name] = layout
    return layout


def by_name(name):
    if name not in LAYOUTS:
        raise DataError(f"dataset={name!r} is no known layout; use one of {', '.join(LAYOUTS)}, or None to detect it")
    return LAYOUTS[name]


def detect(folder, name=None):
    """The layout of folder: by name when given (the folder must hold it), else the first registered that
    holds it; DataError listing the layouts when none does."""
    folder = Path(folder)
    if name is not None:
        layout = by_name(name)
        if not layout.holds(folder):
            raise DataError(f"{folder}: no {name} data ({layout.description}); point data_path at such a folder, "
                            "or set dataset=None to detect the layout")
        return layout
    for layout in LAYOUTS.values():
        if layout.holds(folder):
            return layout
    raise DataError(f"{folder}: no data in a known layout ("
                    + "; ".join(f"{layout.name}: {layout.description}" for layout in LAYOUTS.values())
                    + "); point data_path at such a folder, or set it to None for the synthetic default")


# the built-in layouts register themselves; the folder layouts first, since their named subfolders of TIFFs would
# pass for kaggle_3m patient folders
from layouts import folders  # noqa: E402,F401
from layouts import kaggle_3m  # noqa: E402,F401
