"""REPORT.md from the results files that experiments.py left under a runs folder.

    python -m tools.score_runs runs                # first: inference for the finished runs (scores at 256x256)
    python report.py [--runs-dir runs] [--out REPORT.md] [--figures-dir report]
    python report.py --runs-dir gpu-runs --figures-dir gpu-figures --runs-dir cpu-runs --figures-dir cpu-figures

The report holds one table of every run on the reference split, the k-fold
cross-validation of the recipes that have one, the val_dsc curves in one
plot, and for the best run its dsc.png and overlays of its best, median and
worst validation patient, from what tools/score_runs.py left in each run's
predictions folder (it runs no inference itself). Text between the analysis markers of an
existing report is kept when it is regenerated. Several runs folders (runs
made under different protocols: image size, epochs, device) give a section
each, with one analysis.
"""

import argparse
import datetime
import shutil
import sys
from pathlib import Path

import numpy as np

from comparisons import best_run, cross_validation, is_reference_recipe, lcc_rows, mean_hd95, paired_rows
from runs import (PREDICTIONS_DIR, describe_epochs, describe_model, describe_optimiser, describe_schedule,
                  describe_size, load_runs, metrics_rows, native_scores, precision_used)
from results_files import ANALYSIS_END, ANALYSIS_START, image_line, kept_analysis
from safe_files import write_atomic

# The reference's training (its README: mean DSC 91%, median 92% on the 10 validation patients).
REFERENCE_SETTINGS = dict(image_size=256, epochs=100, batch_size=16)


def reduced_settings(runs):
    """Whether any run trained on less than the reference's image size, epochs or batch size."""
    return any(run.params.get(key, value) < value for run in runs for key, value in REFERENCE_SETTINGS.items())


def summary(run):
    """The table row of a run."""
    params, results = run.params, run.results
    per_patient = list(run.per_patient_at_best.values())
    native = list(native_scores(run.folder).values())
    reference = is_reference_recipe(run)
    return dict(
        experiment=run.name + (" (reference recipe)" if reference else ""),
        name=run.name,
        model=describe_model(params, results),
        loss=params.get("loss", "dice"),
        optimiser=describe_optimiser(params, results),
        schedule=describe_schedule(params),
        epochs=len(results["history"]) if len(results["history"]) >= params["epochs"] else describe_epochs(results),
        image_px=describe_size(params),
        best_dsc=results["best_val_dsc"],
        median_dsc=float(np.median(per_patient)) if per_patient else None,
        best_epoch=results["best_epoch"],
        last_dsc=results["history"][-1]["val_dsc"] if results["history"] else None,
        native_dsc=float(np.mean(native)) if native else None,
        native_median=float(np.median(native)) if native else None,
        hd95=mean_hd95(run.folder),
        train_minutes=results["train_seconds"] / 60,
        device=results["device"] + (f", {results['shared_by']} runs at once" if results.get("shared_by", 1) > 1
                                    else ""),
        synthetic=results.get("synthetic_data", False),
    )


def plot_curves(runs, path):
    """Validation mean DSC per epoch of every run on the reference split, in one plot."""
    import matplotlib
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 6))
    axes = figure.subplots()
    cmap = matplotlib.colormaps["tab20"]
    for index, run in enumerate(run for run in runs if run.fold is None):
        history = run.results["history"]
        axes.plot([entry["epoch"] for entry in history], [entry["val_dsc"] for entry in history],
                  label=f"{run.name} ({run.results['best_val_dsc']:.3f})", color=cmap(index % 20), linewidth=1.5)
    axes.set_xlabel("epoch")
    axes.set_ylabel("validation mean DSC")
    axes.set_ylim(0, 1)
    axes.grid(alpha=0.3)
    axes.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small")
    figure.tight_layout()
    figure.savefig(path)


def format_value(value, spec=".4f"):
    if value is None:
        return "—"
    return format(value, spec) if isinstance(value, float) else str(value)


def markdown_table(rows, columns):
    """columns: (title, key) or (title, key, float format)."""
    lines = ["| " + " | ".join(column[0] for column in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [format_value(row.get(column[1]), *column[2:]) for column in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


TABLE_COLUMNS = [
    ("experiment", "experiment"), ("model", "model"), ("loss", "loss"), ("optimiser", "optimiser"),
    ("schedule", "schedule"), ("epochs", "epochs"), ("px", "image_px"), ("best val mean DSC", "best_dsc"),
    ("median", "median_dsc"), ("best epoch", "best_epoch"), ("last epoch's", "last_dsc"),
    ("DSC at 256x256", "native_dsc"),
    ("its median", "native_median"), ("HD95 (px)", "hd95", ".2f"), ("train min", "train_minutes", ".1f"),
    ("device", "device"),
]


CV_COLUMNS = [
    ("recipe", "experiment"), ("folds run", "folds"), ("best DSC per fold", "per_fold"),
    ("mean ± std over folds", "mean"), ("pooled patient mean", "pooled"), ("at the last epoch", "pooled_last"),
    ("patients at 256x256", "native_n"), ("their mean DSC", "native_mean"), ("median", "native_median"),
    ("last epoch at 256x256", "last_native_mean"), ("reference split", "reference"),
]

LCC_COLUMNS = [
    ("run", "experiment"), ("DSC at 256x256", "dsc"), ("without the LCC", "without"),
    ("patients it changed by more than 0.01", "changed"),
]

PAIRED_COLUMNS = [
    ("recipe", "experiment"), ("against", "baseline"), ("patients", "patients"),
    ("mean DSC difference", "mean_difference", "+.4f"), ("bootstrap 95% interval", "interval"),
    ("Wilcoxon p", "wilcoxon_p", ".3g"), ("improve / worsen / tie", "counts"),
]

# The published points to compare with, and where they come from.
ANCHORS = [
    "- Buda, Saha, Mazurowski, *Association of genomic subtypes of lower-grade gliomas with shape features "
    "automatically extracted by a deep learning algorithm*, Computers in Biology and Medicine 109 (2019): "
    "the reference U-Net, 5-fold cross-validation over the 110 patients, mean per-patient DSC 82%, median 85%.",
    "- The same paper: two human readers' agreement on the FLAIR abnormality, DSC 84 ± 2%.",
    "- The reference repository's README (mateuszbuda/brain-segmentation-pytorch): mean DSC 91% (median 92%) "
    "on its own 10 validation patients, with the weights chosen on those same patients, at 256 px and 100 "
    "epochs.",
]


PATIENT_COLUMNS = [("patient", "patient"), ("DSC", "dsc", ".3f"), ("precision", "precision", ".3f"),
                   ("recall", "recall", ".3f"), ("HD95 (px)", "hd95", ".2f"), ("true voxels", "true_voxels"),
                   ("DSC without LCC", "dsc_without_lcc", ".3f"), ("components", "components")]


def best_patients(run):
    """The best run's metrics.csv rows, worst DSC first."""
    rows = [{key: float(value) if key != "patient" and value not in ("", "nan") else (value or None)
             for key, value in row.items()} for row in metrics_rows(run.folder)]
    for row in rows:
        for count in ("true_voxels", "components"):
            if row.get(count) is not None:
                row[count] = int(row[count])
    return sorted(rows, key=lambda row: row["dsc"])


def load_note(results):
    """The machine's mean 1-minute load over the run's epochs, where it was recorded: above the core count, the
    times were taken beside other work and are no speed figures."""
    loads = [entry["load_average"] for entry in results["history"] if entry.get("load_average") is not None]
    return f", mean load {np.mean(loads):.1f}" if loads else ""


def wall_note(results):
    """A wall time below the training time it contains counts only a resumed run's last segment (code before
    train.py added up the segments' wall times): say so rather than let it pass for the run's."""
    if results.get("resumed_after_epochs") and results.get("wall_seconds", 0) < results.get("train_seconds", 0):
        return " (its last segment only: less than its training time)"
    return ""


def precision_note(results):
    """", bf16" or ", float32": what the run trained in, where recorded (the fast recipes' amp="native" follows the
    machine, so two runs of one recipe may differ in it)."""
    used = precision_used(results)
    return f", {used}" if used else ""


def earlier_note(results):
    """A resumed run's earlier epochs may have been trained by other code: name those commits."""
    earlier = [commit for commit in results.get("earlier_commits", []) if commit != results["commit"]]
    return f" (earlier epochs at {', '.join(earlier)})" if earlier else ""


def provenance_lines(runs):
    import parameters  # the registries it checks names against load torch: only when provenance is written

    lines = []
    for run in runs:
        results = run.results
        where = run.name if run.fold is None else f"{run.name} fold {run.fold}"
        lines.append(
            f"- {where}: commit {results['commit']}{earlier_note(results)}, {results['device']}, "
            f"split: {results.get('split', '?')}, training seed {parameters.training_seed(run.params)}, "
            f"{len(results['history'])} epochs at {describe_size(run.params)} px, "
            f"batch {run.params['batch_size']}{precision_note(results)}, train {results['train_seconds']:.0f} s, "
            f"wall {results.get('wall_seconds', 0):.0f} s{wall_note(results)}, data {results['data_dir']}"
            + load_note(results)
        )
    return lines


def as_list(value):
    return [value] if isinstance(value, (str, Path)) else list(value)


def describe_protocol(runs):
    """The settings a folder's runs share or span: image sizes, epochs, batch sizes, devices."""
    def spread(values):
        return ", ".join(sorted({str(value) for value in values}))

    return (f"{spread(describe_size(run.params) for run in runs)} px, "
            f"{spread(run.params['epochs'] for run in runs)} epochs, "
            f"batch {spread(run.params['batch_size'] for run in runs)}, "
            f"{spread(run.results['device'] for run in runs)}")


def section_lines(runs, figures_dir, out, heading):
    """A runs folder's part of the report: its tables, curves and best run. Returns (lines, split rows best first)."""
    figures_dir.mkdir(parents=True, exist_ok=True)
    reference_runs = [run for run in runs if run.fold is None]
    best, best_pictures = best_run(runs), False
    if reference_runs:
        # the pictures tools/score_runs.py left in the best run's folder
        pictures = [best.folder / PREDICTIONS_DIR / name for name in ("dsc.png", "examples.png")]
        if all(picture.exists() for picture in pictures):
            best_pictures = True
            for picture, name in zip(pictures, ("best-dsc.png", "examples.png")):
                shutil.copyfile(picture, figures_dir / name)
        plot_curves(runs, figures_dir / "val_dsc_curves.png")
    rows = sorted((summary(run) for run in reference_runs), key=lambda row: row["best_dsc"], reverse=True)

    lines = []
    if not any(run.results.get("synthetic_data") for run in runs) and reduced_settings(reference_runs):
        lines += [
            "> **Reduced settings.** Runs below trained on smaller images, for fewer epochs or on smaller batches",
            "> than the reference (256 px, 100 epochs, batch 16; see the px and epochs columns and the provenance):",
            "> their DSC values can be compared with each other, not with the reference's 91%.",
            "",
        ]
    lines += [
        f"{heading} Every run on the reference split",
        "",
        markdown_table(rows, TABLE_COLUMNS) if rows else "_No run on the reference split yet._",
        "",
    ]
    cv = cross_validation(runs)
    if cv:
        reference_dsc = {row["name"]: row["best_dsc"] for row in rows}
        cv_rows = [
            dict(experiment=name, folds=f"{len(entry['fold_dsc'])} of {entry['folds']}"
                 + (f" ({', '.join(map(str, entry['unfinished']))} unfinished)" if entry["unfinished"] else ""),
                 per_fold=", ".join(f"{entry['fold_dsc'][fold]:.3f}" for fold in sorted(entry["fold_dsc"])),
                 mean=f"{entry['mean']:.4f} ± {entry['std']:.4f}", pooled=entry["pooled"],
                 native_n=len(entry["native"]), native_mean=entry["native_mean"],
                 native_median=entry["native_median"], pooled_last=entry["pooled_last"],
                 last_native_mean=entry["last_native_mean"], reference=reference_dsc.get(name))
            for name, entry in sorted(cv.items())
        ]
        lines += [
            f"{heading} Patient-level cross-validation",
            "",
            "Fold k of K validates on its own 1/K of the patients (`folds`, `fold` in train.ipynb), so "
            "together the folds cover every patient once. `pooled` is the mean per-patient DSC over every "
            "validated patient, each at its fold's best epoch (chosen on those same patients); `at the last epoch` "
            "is the same pool at each fold's last epoch, which no choice flatters; `last epoch at 256x256` is that "
            "pool scored at the original geometry during training (runs that recorded it).",
            "",
            markdown_table(cv_rows, CV_COLUMNS),
            "",
        ]
    paired = paired_rows(runs, cv)
    if paired:
        lines += [
            f"{heading} Paired comparisons on the same patients",
            "",
            "Each recipe against the reference recipe, and against the modern recipe too (each loss and "
            "network row changes one thing of it), on the split and pooled over folds, patient by patient, at the "
            "original 256x256 geometry where inference has run (else on the preprocessed grid at the best epoch): "
            "the mean of the per-patient differences, its 95% interval from 10,000 bootstrap resamples of the "
            "patients, and how many patients improve. On the reference split there are only 10 patients: an "
            "interval that spans 0 there says the split cannot tell the two apart.",
            "",
            markdown_table(paired, PAIRED_COLUMNS),
            "",
        ]
    lcc = lcc_rows(runs)
    if lcc:
        lines += [
            f"{heading} What the 3-D largest connected component does",
            "",
            "Every score here keeps only the largest 3-D connected component of the thresholded prediction, as the "
            "reference does. It raises DSC where it removes false-positive blobs, and lowers it where it removes "
            "tumour (a patient scores 0 when the tumour is not the largest component); the DSC of the same "
            "predictions without it shows which happens, patient by patient (worst first).",
            "",
            markdown_table(lcc, LCC_COLUMNS),
            "",
        ]
    if reference_runs:
        lines += [f"{heading} Validation DSC per epoch", "",
                  image_line(Path(figures_dir) / "val_dsc_curves.png", out, "val_dsc curves"), ""]
    if best_pictures:
        lines += [
            f"{heading} The best run: {best.name}",
            "",
            "Per-patient DSC (mean red, median green):\n\n"
            + image_line(Path(figures_dir) / "best-dsc.png", out, "dsc of the best run"),
            "",
            "Best, median and worst validation patient, on the slice with the most tumour (red: prediction, "
            "green: truth):\n\n" + image_line(Path(figures_dir) / "examples.png", out, "examples"),
            "",
        ]
    patient_rows = best_patients(best) if best else []
    if patient_rows:
        columns = [column for column in PATIENT_COLUMNS if any(row.get(column[1]) is not None for row in patient_rows)]
        lines += [f"{heading} Every validation patient of the best run ({best.name}), at 256x256", "",
                  markdown_table(patient_rows, columns), ""]
    return lines, rows


def write_report(runs_dir="runs", out="REPORT.md", figures_dir="report"):
    """Write the report; returns the summary rows of the (first) runs folder's reference-split runs, best first.

    runs_dir and figures_dir may be lists of the same length: a section per runs folder (a protocol: runs
    comparable with each other), its figures in its own folder, one analysis for all.
    """
    runs_dirs, figures_dirs = as_list(runs_dir), [Path(folder) for folder in as_list(figures_dir)]
    if len(figures_dirs) != len(runs_dirs):
        raise ValueError(f"{len(runs_dirs)} runs folders and {len(figures_dirs)} figures folders: give one figures "
                         "folder per runs folder")
    sections = []
    for folder in runs_dirs:
        runs = load_runs(folder)
        if not runs:
            raise FileNotFoundError(f"{folder}: no results.json under it; run experiments.py first")
        sections.append((folder, runs))
    out = Path(out)
    analysis = kept_analysis(out)
    everything = [run for _, runs in sections for run in runs]
    synthetic = any(run.results.get("synthetic_data") for run in everything)
    several = len(sections) > 1

    lines = ["# Report: networks, losses and training recipes against the reference U-Net", ""]
    if synthetic:
        lines += [
            "> **Synthetic data.** The runs below trained on the phantom data of `synthetic.py`, at small CPU",
            "> settings: they show what the experiment runner and this generator produce, and say nothing about",
            "> the LGG dataset. Real figures come from `python experiments.py --all --data-path <kaggle_3m>` on a",
            "> GPU, then `python report.py`.",
            "",
        ]
    lines += [
        f"Generated by `report.py` on {datetime.date.today().isoformat()} from {len(everything)} results files under "
        + ", ".join(f"`{folder}/`" for folder in runs_dirs) + ". DSC is the reference's: per validation patient, "
        "on the preprocessed grid, after the 3-D largest connected component; `best val mean DSC` is the best "
        "epoch's mean over the validation patients, as the reference reports it (so it is chosen on the validation "
        "set itself). HD95 is the mean over patients of the 95th-percentile Hausdorff distance at the original "
        "256x256 geometry, in pixels, from inference with the best weights."
        + (" Each runs folder is a section of its own: runs compare within a section, where they share a protocol."
           if several else ""),
        "",
    ]
    first_rows = None
    for (folder, runs), figures in zip(sections, figures_dirs):
        if several:
            lines += [f"## `{folder}/`: {describe_protocol(runs)}", ""]
        part, rows = section_lines(runs, figures, out, "###" if several else "##")
        lines += part
        first_rows = rows if first_rows is None else first_rows
    if not synthetic:
        lines += ["## Published points of comparison", ""] + ANCHORS + [""]
    lines += ["## Analysis", "", ANALYSIS_START, analysis, ANALYSIS_END, "", "## Provenance", ""]
    for folder, runs in sections:
        lines += ([f"`{folder}/`:", ""] if several else []) + provenance_lines(runs) + ([""] if several else [])
    # whole or not at all: the hand-written analysis lives in this file alone
    write_atomic(out, ("\n".join(lines).rstrip("\n") + "\n").encode())
    return first_rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs-dir", action="append",
                        help="runs folder (default runs); again for another section, e.g. another protocol")
    parser.add_argument("--out", default="REPORT.md")
    parser.add_argument("--figures-dir", action="append", help="one per --runs-dir (default report)")
    args = parser.parse_args(argv)
    rows = write_report(args.runs_dir or ["runs"], args.out, args.figures_dir or ["report"])
    if rows:
        print(f"{args.out}: {len(rows)} runs on the reference split; best {rows[0]['experiment']} "
              f"{rows[0]['best_dsc']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
