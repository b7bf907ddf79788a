"""Do flip test-time augmentation and an ensemble of trained runs lift the score? Side by side on the same
patients at the original 256x256 geometry, after the reference's post-processing (threshold 0.5, then the 3-D
largest connected component), each variant paired patient by patient with what it adds to.

    python -m tools.inference_variants RUN_FOLDER [RUN_FOLDER ...] [--ensemble] [--thresholds 0.4 0.3]
                                       [--without-tta] [--cache-dir DIR] [--out FILE.md]           (repo root)

A run folder is what experiments.py leaves (results.json, weights/unet.pt); each run is scored on its own
validation patients with its best weights, without and with flip TTA (the mean of the prediction and the
flipped prediction of the flipped slices, unet.probabilities). The folds of one experiment (<name>/fold-<k>)
pool into one row over all their patients. With --ensemble the mean of the probabilities of the runs that share
their validation patients is scored too, without and with TTA, against the first run given: runs of several folds
(say two recipes' 5-folds) ensemble fold by fold and pool into one row, so each fold needs as many runs. With
--thresholds, every variant is scored at those thresholds too ("@ 0.4"), against itself at 0.5. Prints a
markdown table.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

from inference import post_process
from comparisons import FAILED, paired_comparison
from tools.run_predictions import native_probabilities
from metrics import dsc
import parameters
import results_files
import runs

TTA = " + flip TTA"
AT = " @ "


def score(probabilities, truth, threshold=0.5):
    """The reference's DSC of a patient: thresholded, its largest connected component kept (inference's dsc)."""
    _, prediction = post_process(probabilities, threshold, lcc=True)
    return dsc(prediction, truth)


def experiment_of(folder):
    """The row a run folder scores into: "<experiment> (folds)" for a fold (the folds pool), else its name; with
    its training seed where that is not the split's (the same recipe at two seeds: two rows)."""
    run = runs.run_at(folder)
    seed = parameters.training_seed(run.params) if "seed" in run.params else None
    other_seed = f", training seed {seed}" if seed is not None and seed != run.params["seed"] else ""
    if run.fold is None:
        return run.name + (f" ({other_seed[2:]})" if other_seed else "")
    return f"{run.name} (folds{other_seed})"


def validation_patients(folder):
    return sorted(runs.read_results(folder)["validation_patients"])


def score_variants(folders, ensemble=False, cache_dir=None, device="cpu", predict=native_probabilities,
                   thresholds=(), tta=True):
    """{variant: {patient: DSC}}: per experiment without and (unless tta is False) with TTA; with ensemble, the
    mean probabilities of all the runs too; each at threshold 0.5 and at each of thresholds. predict(folder,
    cache_dir, device, tta) yields (patient, probabilities, truth)."""
    folders = [Path(folder) for folder in folders]
    check_rows(folders)
    members = ensemble_members(folders) if ensemble else None
    thresholds = [0.5] + [threshold for threshold in thresholds if threshold != 0.5]
    scores, sums, truths = {}, {False: {}, True: {}}, {}

    def add(variant, patient, probabilities, truth):
        for threshold in thresholds:
            name = variant + (f"{AT}{threshold:g}" if threshold != 0.5 else "")
            scores.setdefault(name, {})[patient] = score(probabilities, truth, threshold)

    flips = (False, True) if tta else (False,)
    for folder in folders:
        row = experiment_of(folder)
        for flip in flips:
            for patient, probabilities, truth in predict(folder, cache_dir, device, flip):
                add(row + (TTA if flip else ""), patient, probabilities, truth)
                if ensemble:
                    sums[flip][patient] = sums[flip].get(patient, 0) + probabilities.astype(np.float32)
                    truths[patient] = truth
    if ensemble:
        for flip in flips:
            for patient, total in sums[flip].items():
                add(f"ensemble of {members}" + (TTA if flip else ""), patient, total / members, truths[patient])
    return scores


def check_rows(folders):
    """ValueError, before any prediction, where two runs would score the same patient in one row (the same recipe
    and training seed given twice for a fold)."""
    rows = {}
    for folder in folders:
        row, patients = experiment_of(folder), set(validation_patients(folder))
        for other, its_patients in rows.setdefault(row, []):
            if patients & its_patients:
                raise ValueError(f"{folder}: {row} scores its patients already (from {other}); "
                                 "give each recipe and training seed once per fold")
        rows[row].append((folder, patients))


def ensemble_members(folders):
    """How many runs each ensemble averages: the runs are grouped by their validation patients (one group a
    fold), and every group must hold as many runs, on patients no other group holds. ValueError otherwise."""
    groups = {}
    for folder in folders:
        groups.setdefault(tuple(validation_patients(folder)), []).append(folder)
    first_group = next(iter(groups.values()))
    seen = {}
    for patients, group in groups.items():
        for patient in patients:
            if patient in seen and seen[patient] is not group:
                raise ValueError(f"{group[0]}: its validation patients differ from those of {seen[patient][0]} but "
                                 f"share {patient}; an ensemble needs runs of the same split (leave out --ensemble "
                                 "to score each run)")
            seen[patient] = group
        if len(group) != len(first_group):
            raise ValueError(f"{group[0]}: {len(group)} run(s) on its validation patients, but {len(first_group)} "
                             f"on those of {first_group[0]}; give every fold the same runs to ensemble")
    if len(first_group) < 2:
        raise ValueError(f"{first_group[0]}: no other run on its validation patients to ensemble with (leave out "
                         "--ensemble to score each run)")
    return len(first_group)


def baseline_of(variant, first):
    """What a variant adds to: another threshold to the same at 0.5; TTA to the same prediction without it; an
    ensemble to the first run alone."""
    if AT in variant:
        return variant.rsplit(AT, 1)[0]
    if variant.startswith("ensemble of "):
        return first
    return variant[: -len(TTA)] if variant.endswith(TTA) else None


def table(scores, first):
    """Markdown lines: per variant its mean and median DSC, and the paired difference from its baseline; the
    ensemble (at 0.5, without TTA) against each of its members too, a line each."""
    lines = [f"| variant | patients | mean DSC | median DSC | below {FAILED} | against | mean difference | "
             "95% interval | Wilcoxon p | better / worse / tied |", "|---|---:|---:|---:|---:|---|---:|---|---:|---|"]
    members = [variant for variant in scores if baseline_of(variant, first) is None]  # each run, plain
    for variant, per_patient in scores.items():
        values = np.array(list(per_patient.values()))
        cells = [variant, str(len(values)), f"{values.mean():.4f}", f"{np.median(values):.4f}",
                 str(int((values < FAILED).sum()))]
        baselines = [baseline_of(variant, first)]
        if variant.startswith("ensemble of ") and TTA not in variant and AT not in variant:
            baselines += [member for member in members if member != first]
        for baseline in baselines:
            paired = paired_comparison(scores[baseline], per_patient) if baseline else None
            if paired:
                p = "—" if paired["wilcoxon_p"] is None else f"{paired['wilcoxon_p']:.3g}"
                against = [baseline, f"{paired['mean_difference']:+.4f}",
                           f"{paired['low']:+.4f} to {paired['high']:+.4f}", p,
                           f"{paired['improved']} / {paired['worse']} / {paired['tied']}"]
            else:
                against = [""] * 5
            lines.append("| " + " | ".join(cells + against) + " |")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run folders (results.json, weights/unet.pt)")
    parser.add_argument("--ensemble", action="store_true", help="also the mean of the runs' probabilities")
    parser.add_argument("--thresholds", type=float, nargs="*", default=(), help="also score at these thresholds")
    parser.add_argument("--without-tta", action="store_true", help="no flip TTA variants (half the inference)")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", help="write the table here (markdown: the command, its commit, the runs' provenance "
                                      "and the patients below 0.5), keeping its hand-written analysis")
    args = parser.parse_args(argv)
    try:
        scores = score_variants(args.runs, args.ensemble, args.cache_dir, args.device, thresholds=args.thresholds,
                                tta=not args.without_tta)
    except ValueError as error:
        parser.error(str(error))
    lines = table(scores, experiment_of(args.runs[0]))
    print("\n".join(lines))
    if args.out:
        write_results(args.out, scores, lines, args.runs, argv)
    return 0


def write_results(out, scores, table_lines, folders, argv):
    import report

    failed = ["", f"Patients below {FAILED}:", ""] + [
        f"- {variant}: " + (", ".join(sorted(p for p, value in per_patient.items() if value < FAILED)) or "none")
        for variant, per_patient in scores.items()]
    results_files.write(
        out, "Inference variants: flip TTA, ensembles and thresholds", "tools.inference_variants", argv,
        "Per-patient DSC at the original geometry (each run's best weights, its own validation patients, threshold "
        "0.5 unless \"@\", the 3-D largest connected component); each variant paired patient by patient with what "
        "it adds to (bootstrap 95% interval, 10,000 resamples; Wilcoxon signed-rank p). Runs:",
        report.provenance_lines([runs.run_at(folder) for folder in folders]) + [""] + table_lines + failed)

if __name__ == "__main__":
    sys.exit(main())
