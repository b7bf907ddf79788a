"""Which patients lack a sequence, and how they score against the others.

The dataset fills a missing pre-contrast or post-contrast sequence with the FLAIR (its README), so such a
channel equals the FLAIR channel in every slice.

    python -m tools.missing_sequences DATA [METRICS_CSV ...]          (from the repository root)

DATA is a kaggle_3m folder; each METRICS_CSV is inference's metrics.csv (e.g. of every fold of a 5-fold
cross-validation). Prints a markdown table of the patients with a missing sequence and, with metrics, the mean
and median DSC of the patients with and without one.
"""

import argparse
import csv
import sys

import numpy as np
from tqdm import tqdm

from layouts import kaggle_3m
from layouts.kaggle_3m import FLAIR_CHANNEL, SEQUENCES


def missing_sequences(slices):
    """The sequences of a patient's slices (list_patients' entries) that copy its FLAIR in every slice."""
    images = [kaggle_3m.read_image(path) for _, path, _ in slices]
    return [sequence for channel, sequence in enumerate(SEQUENCES) if channel != FLAIR_CHANNEL and
            all(np.array_equal(image[..., channel], image[..., FLAIR_CHANNEL]) for image in images)]


def scores_of(metrics_files):
    """{patient: DSC} from inference's metrics.csv files."""
    scores = {}
    for path in metrics_files:
        with open(path, newline="") as file:
            scores.update({row["patient"]: float(row["dsc"]) for row in csv.DictReader(file)})
    return scores


def report_lines(missing, scores):
    """missing: {patient: [missing sequences]} for every patient; scores: {patient: DSC}, possibly empty."""
    lines = ["| patient | missing | DSC |", "|---|---|---:|"]
    for patient, sequences in missing.items():
        if sequences:
            score = f"{scores[patient]:.3f}" if patient in scores else ""
            lines.append(f"| {patient} | {', '.join(sequences)} | {score} |")
    lines.append("")
    lines.append(f"{sum(bool(sequences) for sequences in missing.values())} of {len(missing)} patients lack a "
                 "sequence.")
    for label, wanted in (("with a missing sequence", True), ("with all three", False)):
        values = [scores[patient] for patient, sequences in missing.items()
                  if bool(sequences) == wanted and patient in scores]
        if values:
            lines.append(f"Scored patients {label}: {len(values)}, mean DSC {np.mean(values):.3f}, median "
                         f"{np.median(values):.3f}.")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", help="kaggle_3m folder")
    parser.add_argument("metrics", nargs="*", help="inference's metrics.csv files")
    args = parser.parse_args(argv)
    patients = kaggle_3m.list_patients(args.data)
    missing = {patient: missing_sequences(slices) for patient, slices in
               tqdm(patients.items(), desc="reading", unit="patient")}
    print("\n".join(report_lines(missing, scores_of(args.metrics))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
