"""Preprocessing speed: the reference's whole-volume path against ours, side by side.

    python -m benchmarks.preprocessing PATH/TO/kaggle_3m [--patients 5] [--workers N]

1. On the first --patients patients, one process each: the reference's way
   (whole 4-D volume resized at once by skimage) against ours (plane by plane),
   both from the same files; prints seconds and the ratio, and checks that
   both give the same volumes.
2. All patients, ours, parallel, cold cache, then warm cache.
"""

import argparse
import os
import tempfile
import time

import numpy as np
from skimage.transform import resize

from layouts import kaggle_3m
import preprocessing


def reference_style(slices, image_size):
    volume, mask = kaggle_3m.read_patient(slices)
    volume, mask = preprocessing.crop_volume(volume, mask)
    volume, mask = preprocessing.pad_to_square(volume, mask)
    shape = (volume.shape[0], image_size, image_size)
    mask = resize(mask, shape, order=0, mode="constant", cval=0, anti_aliasing=False)
    volume = resize(volume, shape + (volume.shape[3],), order=2, mode="constant", cval=0, anti_aliasing=False)
    return preprocessing.normalize_volume(volume).astype(np.float32), mask


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data")
    parser.add_argument("--patients", type=int, default=5)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    args = parser.parse_args()

    files = kaggle_3m.list_patients(args.data)
    print(f"{len(files)} patients, {sum(len(s) for s in files.values())} slices, {os.cpu_count()} cores")
    subset = dict(list(sorted(files.items()))[: args.patients])

    started = time.perf_counter()
    theirs = {p: reference_style(s, args.image_size) for p, s in subset.items()}
    reference_seconds = time.perf_counter() - started
    started = time.perf_counter()
    ours = preprocessing.load_volumes(subset, args.image_size, cache_dir=None, workers=1, progress=False)
    our_seconds = time.perf_counter() - started
    worst = max(float(np.abs(theirs[p][0] - ours[p][0]).max()) for p in subset)
    masks_equal = all(np.array_equal(theirs[p][1] > 0, ours[p][1] > 0) for p in subset)
    print(
        f"{len(subset)} patients, 1 process: reference-style {reference_seconds:.1f} s, ours {our_seconds:.1f} s, "
        f"ratio {reference_seconds / our_seconds:.1f}x; max |difference| {worst:.2e}, masks equal: {masks_equal}"
    )

    with tempfile.TemporaryDirectory() as cache:
        started = time.perf_counter()
        preprocessing.load_volumes(files, args.image_size, cache_dir=cache, workers=args.workers)
        cold = time.perf_counter() - started
        started = time.perf_counter()
        preprocessing.load_volumes(files, args.image_size, cache_dir=cache, workers=args.workers, progress=False)
        warm = time.perf_counter() - started
    print(f"all {len(files)} patients, {args.workers} workers: cold cache {cold:.1f} s, warm cache {warm:.1f} s")


if __name__ == "__main__":
    main()
