"""Which post-processing of the thresholded prediction scores best: the reference's 3-D largest connected
component against other rules, side by side on the same predictions of trained runs, at 256x256.

    python -m tools.postprocessing RUN_FOLDER [RUN_FOLDER ...] [--cache-dir DIR]     (from the repository root)

A run folder is what experiments.py leaves (results.json and weights/unet.pt); each is scored on its own
validation patients. Prints a markdown table: per run and rule, the mean DSC and how many patients score 0.
"""

import argparse
import sys

import numpy as np
from scipy import ndimage

from tools.run_predictions import native_probabilities
from utils import dsc


def components(probabilities, threshold=0.5):
    """The labelled face-connected components of probabilities > threshold, and per component (label order):
    its size, its probability mass and its peak probability."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels, count = ndimage.label(probabilities > threshold)
    index = np.arange(1, count + 1)
    stats = [np.asarray(function(source, labels, index), dtype=np.float64) for function, source in
             ((ndimage.sum, np.ones_like(probabilities)), (ndimage.sum, probabilities),
              (ndimage.maximum, probabilities))] if count else [np.zeros(0)] * 3
    return labels, index, *stats


def keep(labels, chosen):
    return np.isin(labels, chosen)


RULES = {
    "none": lambda labels, index, size, mass, peak: labels > 0,
    "largest (reference)": lambda labels, index, size, mass, peak: keep(labels, index[np.argmax(size)]),
    "largest mass": lambda labels, index, size, mass, peak: keep(labels, index[np.argmax(mass)]),
    "peak > 0.95": lambda labels, index, size, mass, peak: keep(labels, index[peak > 0.95]),
    ">= 10% of largest": lambda labels, index, size, mass, peak: keep(labels, index[size >= 0.1 * size.max()]),
    ">= 50% of largest": lambda labels, index, size, mass, peak: keep(labels, index[size >= 0.5 * size.max()]),
}


def apply_rules(probabilities, threshold=0.5):
    """{rule: binary mask} for one patient's probabilities; with no component, every rule gives it empty."""
    labels, index, size, mass, peak = components(probabilities, threshold)
    if not len(index):
        return {rule: labels > 0 for rule in RULES}
    return {rule: function(labels, index, size, mass, peak) for rule, function in RULES.items()}


def score_run(folder, cache_dir=None, device="cpu"):
    """{rule: [DSC per validation patient at the original geometry]} with the run's best weights."""
    scores = {rule: [] for rule in RULES}
    for _, probabilities, truth in native_probabilities(folder, cache_dir, device):
        for rule, mask in apply_rules(probabilities).items():
            scores[rule].append(dsc(mask, truth, lcc=False))
    return scores


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run folders (results.json, weights/unet.pt)")
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args(argv)
    print("| run | patients | " + " | ".join(RULES) + " |")
    print("|---|---|" + "---|" * len(RULES))
    for folder in args.runs:
        scores = score_run(folder, args.cache_dir)
        cells = [f"{np.mean(values):.4f} ({sum(value == 0 for value in values)} at 0)" for values in scores.values()]
        print(f"| {folder} | {len(scores['none'])} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
