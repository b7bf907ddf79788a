"""Which patients fail (DSC < 0.5 at the original 256x256 geometry) in cross-validation, and why.

    python -m tools.failure_analysis DATA LABEL=RUNS/EXPERIMENT [LABEL=RUNS/EXPERIMENT ...] \\
        [--picture results/failure-analysis-cpu.png [--weights LABEL=RUNS/EXPERIMENT ...]] \\
        [--out results/failure-analysis-cpu.md]

Each LABEL=RUNS/EXPERIMENT is a recipe's k-fold runs (RUNS/EXPERIMENT/fold-<k>/), scored by
tools/score_runs.py (predictions/metrics.csv); a recipe with only some folds scored is shown as
"LABEL (folds 1, 3)". For every patient below the threshold in any recipe it gives the tumour's
size (voxels at the original geometry and its quartile among all scored patients), its FLAIR contrast
(flair_contrast, and its quartile), the sequences the dataset filled with the FLAIR, and per recipe the DSC,
the DSC without the 3-D largest component, precision, recall, the predicted components and where the
prediction went (DIAGNOSES). The picture shows each such patient's slice with the most tumour: the FLAIR with the
truth outlined green and, for every recipe whose fold kept its prediction there, that recipe's prediction red: the
committed predictions/telling-slices.npz (tools/score_runs.py writes it; runs scored before it existed have none),
else the fold's weights (weights/unet.pt: runs of this machine; committed runs keep none).
--weights LABEL=RUNS/EXPERIMENT says where a recipe's runs with weights are (the runs on this machine that
tools/collect_runs copied the small files of): the table reads the committed files, the picture those runs.
"""

import io
import sys
import tempfile
from pathlib import Path

import numpy as np

from layouts import kaggle_3m
import results_files
import runs
from comparisons import FAILED
from runs import fold_runs
from tools.missing_sequences import missing_sequences
from tools.scored_recipes import labelled, read, recipes_parser, with_folds

# where the prediction went, first match wins; each a (name, test on a metrics.csv row as floats)
DIAGNOSES = (
    ("nothing predicted", lambda row: row["predicted_voxels"] == 0),
    # the 3-D largest component was not the tumour: the prediction found more of it than the component kept
    ("wrong component kept", lambda row: row["dsc_without_lcc"] >= row["dsc"] + 0.1),
    # what was kept lies off the tumour (runs scored before dsc_without_lcc existed cannot say whether more was found)
    ("only a false blob kept", lambda row: row["recall"] == 0),
    ("under-segmented", lambda row: row["recall"] < 0.5 <= row["precision"]),
    ("false positives", lambda row: row["precision"] < 0.5 <= row["recall"]),
    ("under-segmented and false positives", lambda row: row["recall"] < 0.5 and row["precision"] < 0.5),
    ("boundary", lambda row: True),  # found and mostly right, yet DSC < 0.5: the outline is off
)


def diagnose(row):
    """Where a failed prediction went (DIAGNOSES' first match); row: a metrics.csv row with floats."""
    return next(name for name, test in DIAGNOSES if test(row))


def quartiles(values):
    """{patient: 1..4}, the quartile of each patient's value among all of values ({patient: value}; 1: the
    lowest)."""
    edges = np.percentile(list(values.values()), [25, 50, 75])
    return {patient: int(np.searchsorted(edges, value, side="right")) + 1 for patient, value in values.items()}


def size_quartiles(rows):
    """{patient: 1..4}, the quartile of its true tumour volume among the scored patients (1: the smallest)."""
    return quartiles({patient: row["true_voxels"] for patient, row in rows.items()})


def flair_contrast(slices):
    """The abnormality's mean FLAIR over the mean FLAIR of the rest of the head (Otsu's threshold on the volume
    tells the head from the background), over a patient's slices (list_patients' entries): below 1 the
    abnormality is darker than the tissue around it; nan without one. It asks whether the abnormalities the
    models miss are the ones that are not FLAIR-bright."""
    from skimage.filters import threshold_otsu

    flair = np.stack([kaggle_3m.read_image(path)[..., kaggle_3m.FLAIR_CHANNEL] for _, path, _ in slices])
    truth = kaggle_3m.LAYOUT.truth(slices) > 0
    rest = (flair > threshold_otsu(flair)) & ~truth
    if not truth.any() or not rest.any():
        return float("nan")
    return float(flair[truth].astype(float).mean() / flair[rest].astype(float).mean())


def failures(recipes, threshold=FAILED):
    """The patients below threshold in any recipe ({label: {patient: row}}), worst mean DSC first."""
    patients = {patient for rows in recipes.values() for patient, row in rows.items() if row["dsc"] < threshold}
    return sorted(patients, key=lambda patient: np.mean([rows[patient]["dsc"] for rows in recipes.values()
                                                         if patient in rows]))


def table_lines(recipes, failed, missing, sizes, contrast, contrast_quartiles):
    labels = list(recipes)
    lines = ["| patient | tumour voxels (quartile) | FLAIR contrast (quartile) | missing | " + " | ".join(labels)
             + " |", "|---|---:|---:|---|" + "---|" * len(labels)]
    for patient in failed:
        first = next(rows[patient] for rows in recipes.values() if patient in rows)
        cells = []
        for rows in recipes.values():
            row = rows.get(patient)
            if row is None:
                cells.append("not scored")
                continue
            cell = f"{row['dsc']:.2f}"
            if row["dsc"] < FAILED:
                components = "?" if np.isnan(row["components"]) else int(row["components"])
                without = "?" if np.isnan(row["dsc_without_lcc"]) else f"{row['dsc_without_lcc']:.2f}"
                cell = (f"**{row['dsc']:.2f}** {diagnose(row)} (without the component {without}; "
                        f"P {row['precision']:.2f}, R {row['recall']:.2f}, {components} comp.)")
            cells.append(cell)
        flair = f"{contrast[patient]:.2f} ({contrast_quartiles[patient]})" if patient in contrast else "—"
        lines.append(f"| {patient} (fold {first['fold']}) | {int(first['true_voxels'])} ({sizes[patient]}) | {flair} | "
                     f"{', '.join(missing.get(patient, [])) or '—'} | " + " | ".join(cells) + " |")
    return lines


def summary_lines(recipes, failed, missing, sizes, contrast, contrast_quartiles):
    lines = []
    for label, rows in recipes.items():
        below = [patient for patient, row in rows.items() if row["dsc"] < FAILED]
        counts = {}
        for patient in below:
            counts[diagnose(rows[patient])] = counts.get(diagnose(rows[patient]), 0) + 1
        said = ", ".join(f"{count} {name}" for name, count in sorted(counts.items(), key=lambda item: -item[1]))
        lines.append(f"- {label}: {len(below)} of {len(rows)} patients below {FAILED}" + (f" ({said})" if said
                                                                                             else ""))
    everywhere = [patient for patient in failed if all(rows[patient]["dsc"] < FAILED for rows in recipes.values()
                                                        if patient in rows)]
    lines.append(f"- Below {FAILED} in every recipe that scored them: {len(everywhere)} "
                 f"({', '.join(everywhere) or 'none'}); in some but not all: {len(failed) - len(everywhere)}.")
    lines.append(f"- Of the {len(failed)} failing patients, {sum(bool(missing.get(p)) for p in failed)} lack a "
                 f"sequence and {sum(sizes[p] == 1 for p in failed)} have a tumour in the smallest quartile.")
    values = list(contrast.values())
    in_lowest = sum(contrast_quartiles.get(p) == 1 for p in failed)
    darker = sum(contrast.get(p, np.inf) < 1 for p in failed)
    lines.append("- FLAIR contrast (the abnormality's mean FLAIR over the rest of the head's): "
                 f"{np.median(values):.2f} at the median patient; {in_lowest} of the {len(failed)} failing patients "
                 f"are in its lowest quartile (below {np.percentile(values, 25):.2f}), {darker} below 1 (an "
                 f"abnormality darker than the tissue around it; {sum(v < 1 for v in values)} of all {len(values)} "
                 "patients).")
    return lines


def predicted_slices(run, patients, work_dir):
    """{patient: (its telling slice's number, the predicted mask there)} for those of patients in run's fold:
    from the run's predictions/telling-slices.npz (tools/score_runs.py writes it, tools/collect_runs.py commits
    it), else by inference with its best weights (as scored: largest component), else {} (a run scored before
    the file existed whose weights are gone)."""
    import inference

    mine = [patient for patient in patients if patient in run.results["validation_patients"]]
    saved = runs.telling_slices(run.folder)
    if all(patient in saved for patient in mine):
        return {patient: saved[patient] for patient in mine}
    weights = run.folder / runs.WEIGHTS_FILE
    if not weights.exists() or not mine:
        return {}
    out = Path(work_dir) / f"{run.name}-fold-{run.fold}"
    predicted = inference.run(weights=str(weights), data_path=run.results["data_dir"], patients=mine,
                              predictions_dir=str(out), figure=str(out / "dsc.png"), cache_dir=run.params["cache_dir"],
                              tta=run.params.get("tta", False), write_masks=False, workers=1)
    return {patient: (predicted["telling_slice"][patient], predicted["telling_masks"][patient]) for patient in mine}


def picture(data_dir, failed, recipes, runs, path):
    """A row per failing patient: its slice with the most tumour, truth green, each recipe's prediction red."""
    from matplotlib.figure import Figure
    from PIL import Image

    from utils import overlay

    patients = kaggle_3m.list_patients(data_dir)
    with tempfile.TemporaryDirectory() as work_dir:
        predicted = {label: {} for label in recipes}
        for number, (label, label_runs) in enumerate(runs.items()):
            scored = [patient for patient in failed if patient in recipes[label]]  # as the table: no run in training
            # a folder per label: two labels may hold the same recipe and fold (at two training seeds)
            for run in label_runs:
                predicted[label].update(predicted_slices(run, scored, Path(work_dir) / f"label-{number}"))
        shown = [label for label in recipes if predicted[label]]
        figure = Figure(figsize=(3 * (1 + len(shown)), 3 * len(failed)))
        axes = np.atleast_2d(figure.subplots(len(failed), 1 + len(shown), squeeze=False))
        for row, patient in zip(axes, failed):
            slices = patients[patient]
            truth = kaggle_3m.LAYOUT.truth(slices)
            index = int(np.argmax(truth.sum(axis=(1, 2))))
            flair = kaggle_3m.read_image(slices[index][1])[..., kaggle_3m.FLAIR_CHANNEL]
            row[0].imshow(overlay(flair, np.zeros_like(truth[index]), truth[index]), interpolation="nearest")
            row[0].set_title(f"{patient}\nslice {slices[index][0]}, truth", fontsize="small")
            for axis, label in zip(row[1:], shown):
                number, mask = predicted[label].get(patient, (None, None))
                if mask is None:
                    why = "prediction not kept" if patient in recipes[label] else "not scored"
                    axis.set_title(f"{label}: {why}", fontsize="small")
                    axis.imshow(overlay(flair, np.zeros_like(truth[index]), truth[index]), interpolation="nearest")
                elif number != slices[index][0]:
                    raise ValueError(f"{patient}: {label}'s prediction is of slice {number}, its slice with the most "
                                     f"tumour in {data_dir} is {slices[index][0]}: another copy of the data? Give "
                                     "the folder the runs were scored on")
                else:
                    axis.imshow(overlay(flair, mask, truth[index]), interpolation="nearest")
                    axis.set_title(f"{label}: DSC {recipes[label][patient]['dsc']:.2f}", fontsize="small")
            for axis in row:
                axis.axis("off")
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, dpi=80, format="png")
        save_with_outline_palette(Image.open(buffer), path)
    return shown


def save_with_outline_palette(image, path):
    """Save a PIL image of grey slices and red and green outlines as a PNG of 64 colours: 62 greys, RED and GREEN.

    A row a patient makes a tall picture, and 64 colours keep it small; but a palette the image chooses for itself
    (median cut) spends them on the slices' many greys and merges the outlines' few pixels into grey, so the
    predictions vanished. A fixed palette keeps both outline colours exact."""
    from PIL import Image

    from utils import GREEN, RED

    greys = [(level, level, level) for level in np.linspace(0, 255, 62).round().astype(int)]
    palette = Image.new("P", (1, 1))
    palette.putpalette([channel for colour in (*greys, RED, GREEN) for channel in colour])
    image.convert("RGB").quantize(palette=palette, dither=Image.Dither.NONE).save(path, optimize=True)


def quartile_lines(recipes, sizes, contrast_quartiles):
    """Each recipe's mean DSC and failures in each quartile of tumour volume and of FLAIR contrast (quartiles
    among every scored patient): where a lever gains, not only how much. A recipe scored on some folds has only
    their patients in each cell."""
    header = ["volume Q1 (smallest)", "Q2", "Q3", "Q4 (largest)", "contrast Q1 (faintest)", "Q2", "Q3", "Q4"]
    lines = ["| recipe | " + " | ".join(header) + " |", "|---|" + "---:|" * len(header)]
    for label, rows in recipes.items():
        cells = []
        for by in (sizes, contrast_quartiles):
            for quartile in (1, 2, 3, 4):
                dsc = [row["dsc"] for patient, row in rows.items() if by.get(patient) == quartile]
                failed = sum(value < FAILED for value in dsc)
                cells.append(f"{np.mean(dsc):.3f} ({failed} of {len(dsc)} fail)" if dsc else "—")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def main(argv=None):
    parser = recipes_parser(__doc__)
    parser.add_argument("--picture", help="write the failing patients' figure here (PNG)")
    parser.add_argument("--weights", action="append", default=[], metavar="LABEL=RUNS/EXPERIMENT",
                        help="the picture's predictions of LABEL from these runs' weights (repeatable)")
    args = parser.parse_args(argv)
    recipes, runs = read(parser, args.recipes)
    for item in args.weights:
        label, folder = labelled(parser, item)
        if label not in recipes:
            parser.error(f"--weights {item!r}: {label!r} is none of the recipes ({', '.join(recipes)})")
        runs[label] = fold_runs(folder)
    named = {label: with_folds(label, recipes[label], runs[label]) for label in recipes}
    recipes = {named[label]: rows for label, rows in recipes.items()}
    runs = {named[label]: label_runs for label, label_runs in runs.items()}
    failed = failures(recipes)
    patients = kaggle_3m.list_patients(args.data)
    missing = {patient: missing_sequences(patients[patient]) for patient in failed}
    # among every patient any recipe scored (the true volume is the same in each)
    scored = {patient: row for rows in recipes.values() for patient, row in rows.items()}
    sizes = size_quartiles(scored)
    contrast = {patient: flair_contrast(patients[patient]) for patient in sorted(scored)}
    contrast = {patient: value for patient, value in contrast.items() if not np.isnan(value)}  # no abnormality
    facts = (missing, sizes, contrast, quartiles(contrast))
    lines = summary_lines(recipes, failed, *facts) + [""] + table_lines(recipes, failed, *facts)
    lines += ["", "Each recipe's mean DSC by quartile of tumour volume and of FLAIR contrast (every scored patient):",
              "", *quartile_lines(recipes, sizes, facts[3])]
    if args.picture:
        shown = picture(args.data, failed, recipes, runs, args.picture)
        named = ", ".join(shown) or "no recipe: no prediction kept"
        lines += ["", "One row a failing patient: the FLAIR at its slice with the most tumour, the truth outlined "
                  f"green, each recipe's prediction red (predictions of {named}).",
                  "", results_files.image_line(args.picture, args.out, "The failing patients")]
    if args.out:
        results_files.write(args.out, "Which patients fail, and where their predictions went", "tools.failure_analysis",
                            argv, "DSC per patient at the original 256x256 geometry (inference with each fold's best "
                            f"weights, after the 3-D largest connected component); below {FAILED} counts as failed. "
                            "P and R: precision and recall.", lines)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
