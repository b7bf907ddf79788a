"""Which post-processing of the thresholded prediction scores best: the reference's 3-D largest connected
component against other rules, side by side on the same predictions of trained runs, at 256x256.

    python -m tools.postprocessing RUN_FOLDER [RUN_FOLDER ...] [--cache-dir DIR]     (from the repository root)
    python -m tools.postprocessing --folds RUNS/EXPERIMENT [--cache-dir DIR] [--out FILE.md]

A run folder is what experiments.py leaves (results.json and weights/unet.pt); each is scored on its own
validation patients. Prints a markdown table: per run and rule, the mean DSC and how many patients score 0.
With --folds, a recipe's k-fold runs are pooled and the rule is chosen by cross-validation, as nnU-Net decides
its post-processing: for each fold, the rule best on the other folds' patients, applied to that fold; the
pooled result beside the reference's rule, paired patient by patient (the reference's figure stays the
comparable one).
"""

import argparse
import sys

import numpy as np
from scipy import ndimage

from comparisons import paired_comparison
import results_files
import runs
from tools.run_predictions import native_probabilities
from metrics import dsc

REFERENCE_RULE = "largest (reference)"


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
    # the component the network is surest of on average: a small tumour against a larger, fainter false blob
    "highest mean": lambda labels, index, size, mass, peak: keep(labels, index[np.argmax(mass / size)]),
}


def apply_rules(probabilities, threshold=0.5):
    """{rule: binary mask} for one patient's probabilities; with no component, every rule gives it empty."""
    labels, index, size, mass, peak = components(probabilities, threshold)
    if not len(index):
        return {rule: labels > 0 for rule in RULES}
    return {rule: function(labels, index, size, mass, peak) for rule, function in RULES.items()}


def score_run(folder, cache_dir=None, device="cpu"):
    """{rule: {patient: DSC at the original geometry}} on the run's validation patients, with its best weights."""
    scores = {rule: {} for rule in RULES}
    for patient, probabilities, truth in native_probabilities(folder, cache_dir, device):
        for rule, mask in apply_rules(probabilities).items():
            scores[rule][patient] = dsc(mask, truth)
    return scores


def choose_by_folds(per_fold):
    """per_fold: {fold: {rule: {patient: DSC}}}. For each fold the rule with the best mean DSC over the other
    folds' patients (ties: the reference's rule, then RULES' order); returns ({fold: rule}, {patient: DSC} of
    every fold under its chosen rule)."""
    chosen, pooled = {}, {}
    for fold, scores in per_fold.items():
        others = {rule: [value for other, other_scores in per_fold.items() if other != fold
                         for value in other_scores[rule].values()] for rule in RULES}
        order = [REFERENCE_RULE] + [rule for rule in RULES if rule != REFERENCE_RULE]
        chosen[fold] = max(order, key=lambda rule: (round(float(np.mean(others[rule])), 12), -order.index(rule)))
        pooled.update(scores[chosen[fold]])
    return chosen, pooled


def fold_runs(recipe_folder):
    """The fold runs of RUNS/EXPERIMENT that kept weights; SystemExit without one."""
    found = [run for run in runs.fold_runs(recipe_folder) if (run.folder / runs.WEIGHTS_FILE).exists()]
    if not found:
        raise SystemExit(f"{recipe_folder}: no fold run with weights/unet.pt under it")
    return found


def folds_lines(found, cache_dir=None, device="cpu"):
    """The --folds table of one recipe's fold runs (fold_runs) and its cross-validated choice, as markdown lines."""
    per_fold = {run.fold: score_run(run.folder, cache_dir, device) for run in found}
    pooled = {rule: {p: v for scores in per_fold.values() for p, v in scores[rule].items()} for rule in RULES}
    lines = [f"{found[0].name}, folds {', '.join(map(str, sorted(per_fold)))}, "
             f"{len(pooled[REFERENCE_RULE])} patients", "",
             "| rule | pooled mean DSC | patients at 0 |", "|---|---:|---:|"]
    for rule, scores in pooled.items():
        values = list(scores.values())
        lines.append(f"| {rule} | {np.mean(values):.4f} | {sum(value == 0 for value in values)} |")
    chosen, cv = choose_by_folds(per_fold)
    result = paired_comparison(pooled[REFERENCE_RULE], cv)
    lines += ["", "Chosen by cross-validation (each fold: the rule best on the other folds): "
              + ", ".join(f"fold {fold} {rule}" for fold, rule in sorted(chosen.items())),
              f"Pooled: {np.mean(list(cv.values())):.4f} against the reference rule's "
              f"{np.mean(list(pooled[REFERENCE_RULE].values())):.4f}"
              + ("" if result is None or result["wilcoxon_p"] is None else
                 f"; paired {result['mean_difference']:+.4f} [{result['low']:+.4f}, {result['high']:+.4f}], "
                 f"Wilcoxon p {result['wilcoxon_p']:.3g}, {result['improved']} better / {result['worse']} worse")]
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run folders (results.json, weights/unet.pt)")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--folds", action="store_true", help="RUNS/EXPERIMENT: pool its folds, choose by folds")
    parser.add_argument("--out", help="write the tables here (markdown: the command, its commit, the runs' "
                                      "provenance), keeping its hand-written analysis")
    args = parser.parse_args(argv)
    if args.folds:
        recipes = [fold_runs(folder) for folder in args.runs]
        lines = [line for found in recipes for line in folds_lines(found, args.cache_dir) + [""]]
        used = [run for found in recipes for run in found]
    else:
        lines = ["| run | patients | " + " | ".join(RULES) + " |", "|---|---|" + "---|" * len(RULES)]
        for folder in args.runs:
            scores = score_run(folder, args.cache_dir)
            cells = [f"{np.mean(list(values.values())):.4f} ({sum(value == 0 for value in values.values())} at 0)"
                     for values in scores.values()]
            lines.append(f"| {folder} | {len(scores['none'])} | " + " | ".join(cells) + " |")
        used = [runs.run_at(folder) for folder in args.runs]
    print("\n".join(lines))
    if args.out:
        import report

        results_files.write(
            args.out, "Post-processing: the reference's 3-D largest connected component against other rules",
            "tools.postprocessing", argv,
            "Every rule post-processes the same probabilities (each run's best weights, its own validation "
            "patients, put back to the original 256x256 geometry, threshold 0.5); DSC per patient at 256x256. "
            "Runs:", report.provenance_lines(used) + [""] + lines)
    return 0

if __name__ == "__main__":
    sys.exit(main())
