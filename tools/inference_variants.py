"""Do flip test-time augmentation and an ensemble of trained runs lift the score? Side by side on the same
patients at the original 256x256 geometry, after the reference's post-processing (threshold 0.5, then the 3-D
largest connected component), each variant paired patient by patient with what it adds to.

    python -m tools.inference_variants RUN_FOLDER [RUN_FOLDER ...] [--ensemble] [--thresholds 0.4 0.3]
                                       [--cache-dir DIR]                                           (repo root)

A run folder is what experiments.py leaves (results.json, weights/unet.pt); each run is scored on its own
validation patients with its best weights, without and with flip TTA (the mean of the prediction and the
flipped prediction of the flipped slices, unet.probabilities). The folds of one experiment (<name>/fold-<k>)
pool into one row over all their patients. With --ensemble the runs must share their validation patients: the
mean of their probabilities is scored too, without and with TTA, against the first run given. With
--thresholds, every variant is scored at those thresholds too ("@ 0.4"), against itself at 0.5. Prints a
markdown table.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

from inference import post_process
from comparisons import paired_comparison
from tools.run_predictions import native_probabilities
from metrics import dsc
import runs

TTA = " + flip TTA"
AT = " @ "


def score(probabilities, truth, threshold=0.5):
    """The reference's DSC of a patient: thresholded, its largest connected component kept (inference's dsc)."""
    _, prediction = post_process(probabilities, threshold, lcc=True)
    return dsc(prediction, truth)


def experiment_of(folder):
    """The row a run folder scores into: "<experiment> (folds)" for a fold (the folds pool), else its name."""
    folder = Path(folder)
    return f"{folder.parent.name} (folds)" if folder.name.startswith("fold-") else folder.name


def validation_patients(folder):
    return sorted(runs.read_results(folder)["validation_patients"])


def score_variants(folders, ensemble=False, cache_dir=None, device="cpu", predict=native_probabilities,
                   thresholds=()):
    """{variant: {patient: DSC}}: per experiment without and with TTA; with ensemble, the mean probabilities of
    all the runs too; each at threshold 0.5 and at each of thresholds. predict(folder, cache_dir, device, tta)
    yields (patient, probabilities, truth)."""
    folders = [Path(folder) for folder in folders]
    if ensemble:
        expected = validation_patients(folders[0])
        for folder in folders[1:]:
            if validation_patients(folder) != expected:
                raise ValueError(f"{folder}: its validation patients differ from those of {folders[0]}; an "
                                 "ensemble needs runs of the same split (leave out --ensemble to score each run)")
    thresholds = [0.5] + [threshold for threshold in thresholds if threshold != 0.5]
    scores, sums, truths = {}, {False: {}, True: {}}, {}

    def add(variant, patient, probabilities, truth):
        for threshold in thresholds:
            name = variant + (f"{AT}{threshold:g}" if threshold != 0.5 else "")
            scores.setdefault(name, {})[patient] = score(probabilities, truth, threshold)

    for folder in folders:
        for tta in (False, True):
            for patient, probabilities, truth in predict(folder, cache_dir, device, tta):
                add(experiment_of(folder) + (TTA if tta else ""), patient, probabilities, truth)
                if ensemble:
                    sums[tta][patient] = sums[tta].get(patient, 0) + probabilities.astype(np.float32)
                    truths[patient] = truth
    if ensemble:
        for tta in (False, True):
            for patient, total in sums[tta].items():
                add(f"ensemble of {len(folders)}" + (TTA if tta else ""), patient, total / len(folders),
                    truths[patient])
    return scores


def baseline_of(variant, first):
    """What a variant adds to: another threshold to the same at 0.5; TTA to the same prediction without it; an
    ensemble to the first run alone."""
    if AT in variant:
        return variant.rsplit(AT, 1)[0]
    if variant.startswith("ensemble of "):
        return first
    return variant[: -len(TTA)] if variant.endswith(TTA) else None


def table(scores, first):
    """Markdown lines: per variant its mean and median DSC, and the paired difference from its baseline."""
    lines = ["| variant | patients | mean DSC | median DSC | against | mean difference | 95% interval | "
             "better / worse / tied |", "|---|---:|---:|---:|---|---:|---|---|"]
    for variant, per_patient in scores.items():
        values = list(per_patient.values())
        cells = [variant, str(len(values)), f"{np.mean(values):.4f}", f"{np.median(values):.4f}"]
        baseline = baseline_of(variant, first)
        paired = paired_comparison(scores[baseline], per_patient) if baseline else None
        if paired:
            cells += [baseline, f"{paired['mean_difference']:+.4f}", f"{paired['low']:+.4f} to {paired['high']:+.4f}",
                      f"{paired['improved']} / {paired['worse']} / {paired['tied']}"]
        else:
            cells += [""] * 4
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run folders (results.json, weights/unet.pt)")
    parser.add_argument("--ensemble", action="store_true", help="also the mean of the runs' probabilities")
    parser.add_argument("--thresholds", type=float, nargs="*", default=(), help="also score at these thresholds")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    try:
        scores = score_variants(args.runs, args.ensemble, args.cache_dir, args.device, thresholds=args.thresholds)
    except ValueError as error:
        parser.error(str(error))
    print("\n".join(table(scores, experiment_of(args.runs[0]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
