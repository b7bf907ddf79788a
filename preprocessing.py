"""The reference's per-volume preprocessing, its inverse, and its cache.

Per patient: slices ordered by their number, first and last slice dropped,
voxels under 10% of the volume maximum zeroed and the volume cropped to their
bounding box, padded to a square (or, with to_square="stretch", not), resized to `image_size` (images with a
2nd-order spline, masks nearest), normalised per volume (p10-p99 rescale, then
per-channel mean/std). Masks come out as 0/1 floats.

Preprocessing runs slice by slice (the same numbers as the reference's 4-D
resize, several times faster), in parallel over patients, and is cached on
disk keyed by the files and the parameters.
"""

import hashlib
import io
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage.exposure import rescale_intensity
from skimage.transform import resize
from tqdm import tqdm

import layouts
from layouts import DataError
from safe_files import write_atomic

PREPROCESSING_VERSION = 2


DEFAULT_CACHE_DIR = Path("data") / "cache"

# How an image that is not square becomes image_size x image_size: "pad" zero-pads its shorter side first (the
# reference: shapes kept), "stretch" resizes each side on its own (the UNet++ tutorial's cv2.resize: the whole grid
# for the image, its shapes squeezed along the longer side)
TO_SQUARE = ("pad", "stretch")


def crop_bounds(volume):
    """(z, y, x) slices of the bounding box of voxels at or above 10% of the maximum."""
    nonzero = volume.max(axis=-1) >= np.max(volume) * 0.1
    nonzero &= volume.max(axis=-1) > 0
    if not nonzero.any():
        raise DataError("volume is entirely black; check the image files")
    bounds = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        indices = np.nonzero(nonzero.any(axis=other))[0]
        bounds.append(slice(int(indices[0]), int(indices[-1]) + 1))
    return tuple(bounds)


def crop_volume(volume, mask):
    """Zero voxels under 10% of the maximum, then crop both to their bounding box."""
    bounds = crop_bounds(volume)
    volume = volume.copy()
    volume[volume < np.max(volume) * 0.1] = 0
    return volume[bounds], mask[bounds]


def pad_to_square(volume, mask):
    """Zero-pad the shorter in-plane side, the extra pixel going after, as the reference."""
    height, width = volume.shape[1:3]
    diff = abs(height - width)
    before, after = diff // 2, diff - diff // 2
    pad = ((0, 0), (0, 0), (before, after)) if height > width else ((0, 0), (before, after), (0, 0))
    if height == width:
        return volume, mask
    return np.pad(volume, pad + ((0, 0),)), np.pad(mask, pad)


def _zoom_slice(plane, size, order):
    zoom = (size / plane.shape[0], size / plane.shape[1])
    # what skimage.transform.resize(mode="constant", anti_aliasing=False) calls
    return ndimage.zoom(plane, zoom, order=order, mode="grid-constant", cval=0, grid_mode=True)


def resize_volume(volume, mask, size):
    """Resize in-plane to size x size, as skimage.transform.resize on the whole volume.

    The reference resizes the 4-D volume at once with an order-2 spline (81
    taps per voxel); the axes it keeps are reproduced exactly by the spline, so
    resizing each 2-D plane (9 taps) gives the same numbers to rounding, about
    15 times faster. Clipping uses the whole volume's range, as the 4-D resize
    does. Images come out as float64 in [0, 1] (uint8 / 255); masks as 0/1
    (the reference kept 0/255 on current scikit-image).
    """
    image = volume.astype(np.float64) / 255.0 if volume.dtype == np.uint8 else volume.astype(np.float64)
    slices, channels = image.shape[0], image.shape[-1]
    out = np.empty((slices, size, size, channels))
    for z in range(slices):
        for c in range(channels):
            out[z, :, :, c] = _zoom_slice(image[z, :, :, c], size, order=2)
    np.clip(out, min(image.min(), 0.0), image.max(), out=out)
    binary = (mask > 0).astype(np.uint8)
    out_mask = np.stack([_zoom_slice(plane, size, order=0) for plane in binary])
    return out, out_mask


def normalize_volume(volume):
    """p10-p99 rescale to [0, 1] over the whole volume, then per-channel mean/std."""
    p10, p99 = np.percentile(volume, 10), np.percentile(volume, 99)
    volume = rescale_intensity(volume, in_range=(p10, p99))
    mean = volume.mean(axis=(0, 1, 2))
    std = volume.std(axis=(0, 1, 2))
    std[std == 0] = 1.0  # a constant channel becomes 0 rather than NaN
    return (volume - mean) / std


def preprocess(volume, mask, image_size, crop=True, to_square="pad"):
    """Crop (unless crop is False: a layout of images, not volumes), pad (unless to_square is "stretch"), resize,
    normalise: (float32 (Z,S,S,C), float32 0/1 (Z,S,S)). Normalised per case: an image of its own is normalised by
    its own percentiles, whatever its bit depth (16-bit CT as 8-bit photographs)."""
    if crop:
        volume, mask = crop_volume(volume, mask)
    if to_square == "pad":
        volume, mask = pad_to_square(volume, mask)
    volume, mask = resize_volume(volume, mask, image_size)
    return normalize_volume(volume).astype(np.float32), mask.astype(np.float32)


def restore_geometry(probs, geometry):
    """Probabilities on the preprocessed grid (Z, S, S) -> the original volume (slices, height, width).

    Undoes the resize (bilinear), the padding to a square (or the stretch) and the crop; slices
    outside the crop (the dropped first and last among them) get 0. A geometry of 9 fields was padded
    (geometry_of).
    """
    slices, z0, z1, y0, y1, x0, x1, height, width = (int(value) for value in geometry[:9])
    stretched = len(geometry) > 9 and bool(geometry[9])
    crop_h, crop_w = y1 - y0, x1 - x0
    side = max(crop_h, crop_w)
    square = resize(
        np.asarray(probs, dtype=np.float64), (probs.shape[0], *((crop_h, crop_w) if stretched else (side, side))),
        order=1, mode="edge", anti_aliasing=False,
    )
    top, left = (0, 0) if stretched else ((side - crop_h) // 2, (side - crop_w) // 2)
    out = np.zeros((slices, height, width))
    out[z0:z1, y0:y1, x0:x1] = square[:, top : top + crop_h, left : left + crop_w]
    return out


def stacked_slices(context_slices):
    """How many slices with_context stacks in each input's channels: the slice and its neighbours on either side."""
    return 2 * context_slices + 1


def with_context(volume, context_slices):
    """(Z, H, W, C) -> (Z, H, W, C * (2k + 1)): each slice with its k neighbours on either side, nearest first
    in slice order (slice s-k ... s ... s+k), the volume's first and last slices repeated beyond its ends
    (2.5-D input: what lies above and below tells a tumour from a bright vessel)."""
    if not context_slices:
        return volume
    last = len(volume) - 1
    order = [np.clip(np.arange(len(volume)) + offset, 0, last) for offset in range(-context_slices,
                                                                                    context_slices + 1)]
    return np.concatenate([volume[index] for index in order], axis=-1)


def slice_paths(slices):
    """Every file of a case: its images and masks (a mask may be several files)."""
    for _, image, mask in slices:
        yield image
        if mask is not None:
            yield from (mask if isinstance(mask, tuple) else (mask,))


def cache_key(patient, slices, image_size, layout=None, channels=None, to_square="pad"):
    stats = [(path.name, path.stat().st_size, path.stat().st_mtime_ns) for path in slice_paths(slices)]
    key = [PREPROCESSING_VERSION, patient, image_size, stats]
    if layout is not None and not layout.volumes:  # another preprocessing (no crop), of these channels
        key.append([layout.name, list(channels)])
    if to_square != "pad":  # the padded entries keep the keys they had before to_square
        key.append(to_square)
    return hashlib.sha1(json.dumps(key).encode()).hexdigest()[:16]


def _cache_path(cache_dir, patient, slices, image_size, layout=None, channels=None, to_square="pad"):
    key = cache_key(patient, slices, image_size, layout, channels, to_square)
    return Path(cache_dir) / f"{patient}-{image_size}-{key}.npz"


def geometry_of(volume, original_slices, crop=True, to_square="pad"):
    """Where the preprocessed volume sits in the original one (slice indices count the dropped first slice);
    without crop, every pixel of every slice; and, for a volume stretched to a square, a tenth field 1.

    A padded volume keeps the 9 fields: its cache entry has the key it had before to_square, and code of those
    commits (a run resumed from a fixed commit's worktree, sharing the cache) unpacks exactly 9."""
    if not crop:
        fields = [len(volume), 0, len(volume), 0, volume.shape[1], 0, volume.shape[2], *volume.shape[1:3]]
    else:
        z, y, x = crop_bounds(volume)
        fields = [original_slices, z.start + 1, z.stop + 1, y.start, y.stop, x.start, x.stop, *volume.shape[1:3]]
    return np.array(fields + ([1] if to_square == "stretch" else []), dtype=np.int64)


def _preprocess_patient(patient, slices, image_size, cache_dir, layout, channels, to_square="pad"):
    try:
        volume, mask = layout.read_case(slices, channels)
        geometry = geometry_of(volume, len(slices), crop=layout.volumes, to_square=to_square)
        image, mask = preprocess(volume, mask, image_size, crop=layout.volumes, to_square=to_square)
    except DataError as error:
        raise DataError(f"{'patient' if layout.volumes else 'case'} {patient}: {error}") from None
    if cache_dir is not None:
        buffer = io.BytesIO()
        np.savez(buffer, image=image, mask=mask.astype(np.uint8), geometry=geometry)
        write_atomic(_cache_path(cache_dir, patient, slices, image_size, layout, channels, to_square),
                     buffer.getvalue())
    return image, mask, geometry


def _load_cached(path):
    """A cache entry, or None (and a line saying so) when it is damaged: it is then rebuilt."""
    try:
        with np.load(path) as data:
            return data["image"], data["mask"].astype(np.float32), data["geometry"]
    except Exception as error:  # a truncated or corrupt .npz raises several types
        print(f"{path}: damaged cache entry ({type(error).__name__}), preprocessing that patient again")
        return None


def load_volumes(patient_files, image_size=256, cache_dir=DEFAULT_CACHE_DIR, workers=None, progress=True,
                 layout=None, channels=None, to_square="pad"):
    """Preprocess (or load from cache) each case of a layout (None: kaggle_3m) with these channels (None: the
    layout's), padded or stretched to a square (TO_SQUARE): {case: (image, mask, geometry)} in the given order."""
    layout = layout or layouts.LAYOUTS["kaggle_3m"]
    channels = tuple(channels or layout.channels(patient_files))
    workers = workers if workers is not None else min(8, os.cpu_count() or 1)
    results, todo = {}, []
    for patient, slices in patient_files.items():
        path = None if cache_dir is None else _cache_path(cache_dir, patient, slices, image_size, layout, channels,
                                                          to_square)
        cached = _load_cached(path) if path is not None and path.exists() else None
        if cached is not None:
            results[patient] = cached
        else:
            todo.append(patient)
    from runtime import on_terminal  # here, not at the top: the worker processes need none of it

    # a bar that redraws on a terminal; elsewhere (a log, a notebook cell) it would write a line per update, so one
    # line when done
    bar = tqdm(total=len(todo), desc="preprocessing", unit="case", disable=not progress or not todo or
               not on_terminal())
    started = time.perf_counter()
    if workers > 1 and len(todo) > 1:
        with ProcessPoolExecutor(max_workers=min(workers, len(todo))) as pool:
            futures = {
                patient: pool.submit(_preprocess_patient, patient, patient_files[patient], image_size, cache_dir,
                                     layout, channels, to_square)
                for patient in todo
            }
            for patient, future in futures.items():
                results[patient] = future.result()
                bar.update()
    else:
        for patient in todo:
            results[patient] = _preprocess_patient(patient, patient_files[patient], image_size, cache_dir, layout,
                                                   channels, to_square)
            bar.update()
    bar.close()
    if progress and todo and not on_terminal():
        print(f"preprocessed {len(todo)} case(s) at {image_size} px in {time.perf_counter() - started:.0f} s"
              + (f" (cached under {cache_dir})" if cache_dir is not None else ""), flush=True)
    return {patient: results[patient] for patient in patient_files}
