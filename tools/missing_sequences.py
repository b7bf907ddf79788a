"""Which patients lack a sequence, and how each recipe scores them against the others.

The dataset fills a missing pre-contrast or post-contrast sequence with the FLAIR (its README), so such a
channel equals the FLAIR channel in every slice.

    python -m tools.missing_sequences DATA [LABEL=RUNS/EXPERIMENT ...] [--out FILE.md]     (from the repository root)

DATA is a kaggle_3m folder; each LABEL=RUNS/EXPERIMENT a recipe's k-fold runs scored by tools/score_runs.py
(predictions/metrics.csv), each patient scored by the fold that did not train on it, as in
tools/failure_analysis.py. Prints (and with --out writes) a markdown table of the patients with a missing
sequence, a DSC column a recipe, and each recipe's mean and median DSC of the patients with and without one.
"""

import sys

import numpy as np
from tqdm import tqdm

from layouts import kaggle_3m
import results_files
from layouts.kaggle_3m import FLAIR_CHANNEL, SEQUENCES
from tools import scored_recipes


def missing_sequences(slices):
    """The sequences of a patient's slices (list_patients' entries) that copy its FLAIR in every slice."""
    images = [kaggle_3m.read_image(path) for _, path, _ in slices]
    return [sequence for channel, sequence in enumerate(SEQUENCES) if channel != FLAIR_CHANNEL and
            all(np.array_equal(image[..., channel], image[..., FLAIR_CHANNEL]) for image in images)]


def report_lines(missing, recipes):
    """missing: {patient: [missing sequences]} for every patient; recipes: {label: {patient: DSC}}."""
    labels = list(recipes)
    lines = ["| patient | missing | " + " | ".join(labels) + " |", "|---|---|" + "---:|" * len(labels)]
    for patient, sequences in missing.items():
        if sequences:
            scores = [f"{recipes[label][patient]:.3f}" if patient in recipes[label] else "" for label in labels]
            lines.append(f"| {patient} | {', '.join(sequences)} | " + " | ".join(scores) + " |")
    lines += ["", f"{sum(bool(sequences) for sequences in missing.values())} of {len(missing)} patients lack a "
                  "sequence."]
    if labels:
        lines += ["", "| recipe | with a missing sequence: scored, mean, median | with all three: scored, mean, "
                      "median |", "|---|---|---|"]
    for label, scores in recipes.items():
        cells = []
        for wanted in (True, False):
            values = [scores[patient] for patient, sequences in missing.items()
                      if bool(sequences) == wanted and patient in scores]
            cells.append(f"{len(values)}, {np.mean(values):.3f}, {np.median(values):.3f}" if values else "0")
        lines.append(f"| {label} | {cells[0]} | {cells[1]} |")
    return lines


INTRO = ("A sequence is missing when its channel equals the FLAIR channel in every slice: the dataset's README says "
         "a missing pre- or post-contrast sequence was replaced by the FLAIR. DSC per patient at the original "
         "256x256 geometry (inference with each fold's best weights, after the 3-D largest connected component), "
         "each patient scored by the fold that did not train on it.")


def recipe_scores(parser, items):
    """{label, with its folds where not all are scored: {patient: DSC}} of LABEL=RUNS/EXPERIMENT arguments."""
    recipes, runs = scored_recipes.read(parser, items)
    return {scored_recipes.with_folds(label, rows, runs[label]): {patient: row["dsc"] for patient, row in rows.items()}
            for label, rows in recipes.items()}


def main(argv=None):
    parser = scored_recipes.recipes_parser(__doc__, recipes="*")
    args = parser.parse_args(argv)
    recipes = recipe_scores(parser, args.recipes)
    patients = kaggle_3m.list_patients(args.data)
    missing = {patient: missing_sequences(slices) for patient, slices in
               tqdm(patients.items(), desc="reading", unit="patient")}
    lines = report_lines(missing, recipes)
    if args.out:
        results_files.write(args.out, "Patients with a missing sequence, and how they score",
                            "tools.missing_sequences", argv, INTRO, lines)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
