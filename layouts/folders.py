"""Folder layouts of one's own 2-D images: each image is a case, its mask a file of the same name (or the union of
a folder of files, as the 2018 Data Science Bowl's nuclei).

- images_masks: <folder>/images/<name>.<ext> and <folder>/masks/<name>.<ext> (or <name>_mask.<ext>);
- lung_ct: the lung-CT tutorial's <folder>/2d_images/*.tif and <folder>/2d_masks/*.tif, the same pairing;
- nuclei: <folder>/<id>/images/<id>.png and <folder>/<id>/masks/*.png, the mask the union of the nucleus masks;
- image_file: data_path one image file, to segment (inference on a single image).

Images are png, tif/tiff, jpg or bmp; grey, RGB or RGBA (the alpha dropped); of any size and bit depth (each is
normalised by its own percentiles). The data's channels are its first image's (grey: 1, colour: 3); a grey image
among colour ones is repeated into three channels, a colour one among grey ones averaged. Masks are any nonzero
value where the object is (0/1, 0/255, ...).
"""

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import tifffile

from layouts import DataError, Layout, describe_mask, register

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
GREY, COLOUR = ("grey",), ("red", "green", "blue")


def is_image_file(path):
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def image_files(folder):
    return sorted(path for path in Path(folder).iterdir() if is_image_file(path)) if Path(folder).is_dir() else []


def read_picture(path):
    """An image file as height x width x channels (1 or 3; an alpha channel dropped)."""
    try:
        picture = tifffile.imread(path) if path.suffix.lower() in (".tif", ".tiff") else iio.imread(path)
    except Exception as error:  # the readers raise many types for damaged or foreign files, some over lines
        reason = " ".join(str(error).split())
        raise DataError(f"{path}: unreadable image ({type(error).__name__}: {reason[:160]}); re-save it as PNG or "
                        "TIFF, or remove it") from None
    picture = np.asarray(picture)
    if picture.ndim == 2:
        return picture[..., np.newaxis]
    if picture.ndim == 3 and picture.shape[-1] in (1, 2, 3, 4):
        return picture[..., :1] if picture.shape[-1] <= 2 else picture[..., :3]  # grey(+alpha), RGB(+alpha)
    raise DataError(f"{path}: image of shape {picture.shape}; expected height x width, grey or RGB(A): one 2-D "
                    "image per file")


def with_channels(image, count):
    """image (H, W, C) with count channels: grey repeated, colour averaged (in its own dtype)."""
    if image.shape[-1] == count:
        return image
    if count == 3:
        return np.repeat(image, 3, axis=-1)
    return image.mean(axis=-1, keepdims=True).astype(image.dtype)


def read_union(mask):
    """A mask (one file, or a tuple of files united) as a 0/1 uint8 height x width: nonzero is the object."""
    union = None
    for path in mask if isinstance(mask, tuple) else (mask,):
        picture = read_picture(path)
        plane = picture.max(axis=-1) > 0
        if union is not None and plane.shape != union.shape:
            raise DataError(f"{path}: mask of shape {plane.shape}, but the other masks of {describe_mask(mask)} "
                            f"have {union.shape}; give every mask file the image's size")
        union = plane if union is None else union | plane
    return union.astype(np.uint8)


class FolderLayout(Layout):
    """What the folder layouts share: a case per image, the image's own channels."""

    # a mask marking nearly all of its image is inverted or blank-filled (the most any image's mask marks: 59% in
    # DSB2018's stage1_train, 57% in the lung-CT tutorial's slices; medians 11% and 24%)
    max_mask_fraction = 0.95

    def read_image(self, path, channels=None):
        image = read_picture(path)
        return image if channels is None else with_channels(image, channels)

    def read_mask(self, mask):
        return read_union(mask)

    def channels(self, files):
        first = next(iter(files.values()))[0][1]
        return GREY if read_picture(first).shape[-1] == 1 else COLOUR

    def channels_for(self, count, files):
        """Grey or colour as the model takes them (each image converted: with_channels)."""
        if count not in (1, 3):
            return super().channels_for(count, files)
        return GREY if count == 1 else COLOUR


class PairedFolders(FolderLayout):
    """images/ beside masks/, a mask named as its image (or <name>_mask)."""

    def __init__(self, name, images, masks):
        self.name, self.images, self.masks = name, images, masks
        self.description = (f"{images}/<name>.png (tif, jpg, bmp) with {masks}/<name>.png (or <name>_mask.png) "
                            "beside it")

    def holds(self, folder):
        return bool(image_files(Path(folder) / self.images))

    def cases(self, folder, require_masks=True):
        folder = Path(folder)
        masks = {}
        for path in image_files(folder / self.masks):
            stem = path.stem[:-len("_mask")] if path.stem.endswith("_mask") else path.stem
            if stem in masks:
                raise DataError(f"{path}: a second mask of {stem} (the other is {masks[stem].name}); remove one")
            masks[stem] = path
        cases = {}
        for path in image_files(folder / self.images):
            if path.stem in cases:
                raise DataError(f"{path}: a second image named {path.stem} (the other is {cases[path.stem][0][1].name})"
                                "; rename or remove one")
            mask = masks.pop(path.stem, None)
            if mask is None and require_masks:
                raise DataError(f"{path}: image without its mask; add {folder / self.masks / path.stem}.png (0 "
                                "background, nonzero object) or remove the image")
            cases[path.stem] = [(0, path, mask)]
        if masks and cases:
            stray = next(iter(masks.values()))
            raise DataError(f"{stray}: mask without its image in {folder / self.images}; add the image or remove "
                            "the mask")
        if not cases:
            raise DataError(f"{folder / self.images}: no images (png, tif, jpg, bmp) in it; put the images there")
        return cases


class Nuclei(FolderLayout):
    """The 2018 Data Science Bowl's stage1_train: a folder per image, its nuclei one mask file each."""

    name = "nuclei"
    description = "<id>/images/<id>.png with <id>/masks/*.png (one file per object, united)"

    def holds(self, folder):
        folder = Path(folder)
        return folder.is_dir() and any(child.is_dir() and image_files(child / "images") for child in folder.iterdir())

    def cases(self, folder, require_masks=True):
        cases = {}
        for child in sorted(path for path in Path(folder).iterdir() if path.is_dir()):
            images = image_files(child / "images")
            if not images:
                continue
            if len(images) > 1:
                raise DataError(f"{child / 'images'}: {len(images)} images; a case folder holds one image (its "
                                "masks in masks/): move the others to folders of their own")
            masks = tuple(image_files(child / "masks"))
            if not masks and require_masks:
                raise DataError(f"{child}: image without masks; add {child / 'masks'}/*.png (one per object) or "
                                "remove the folder")
            cases[child.name] = [(0, images[0], masks or None)]
        return cases


class ImageFile(FolderLayout):
    """One image file, a case of its own to segment: inference on a single image."""

    name = "image_file"
    description = "one image file (png, tif, jpg, bmp), to segment"

    def holds(self, folder):
        return is_image_file(Path(folder))

    def cases(self, folder, require_masks=True):
        if require_masks:
            raise DataError(f"{folder}: one image file has no mask to train on or to score; point data_path at a "
                            "folder of images with their masks (images/ + masks/)")
        return {Path(folder).stem: [(0, Path(folder), None)]}


register(PairedFolders("images_masks", "images", "masks"))
register(PairedFolders("lung_ct", "2d_images", "2d_masks"))
register(Nuclei())
register(ImageFile())
