"""The results file of runs on one's own images (the folder layouts, layouts/folders.py): per run its
provenance, the per-image DSC and IoU at each image's own size (what tools/score_runs.py wrote in
predictions/metrics.csv), the UNet++ tutorial's IoU on the training grid (metrics.batch_pooled_iou: the
validation images in batches of 16, as 4uiiurz1/pytorch-nested-unet scores them), the best and the last epoch,
and the figure of the best, median and worst image.

    python -m tools.score_runs RUNS                      # first: inference for the finished runs
    python -m tools.folder_results RUNS/<run> [...] --title "DSB2018 nuclei" --out results/dsb2018-cpu.md

Every run given must be scored (predictions/metrics.csv) and have its best weights.
"""

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

import results_files
import safe_files
import runs
from runs import describe_model, describe_optimiser, describe_schedule, describe_size, metrics_rows

TUTORIAL_BATCH = 16  # the tutorial's validation batch size: its IoU pools over batches of it


def grid_predictions(run, device="cpu"):
    """{case: (probabilities, truth)} of a run's best weights on its validation images at the training size,
    as training validated them."""
    from tools.run_predictions import validation_predictions

    _, predicted = validation_predictions(run.folder, device=device)
    return {case: (probs, truths) for case, (_, probs, truths) in predicted.items()}


def grid_iou(predicted):
    """The tutorial's IoU of grid_predictions, in the validation order, thresholded at 0.5 (no largest component:
    the folder layouts keep every one)."""
    from metrics import batch_pooled_iou

    probs = np.concatenate([probs for probs, _ in predicted.values()])
    truths = np.concatenate([truths for _, truths in predicted.values()])
    return batch_pooled_iou(probs > 0.5, truths, TUTORIAL_BATCH)


def run_row(run, tutorial_iou):
    rows = metrics_rows(run.folder)
    if not rows:
        raise FileNotFoundError(f"{run.folder}: not scored yet (no {runs.METRICS_FILE}); run python -m "
                                "tools.score_runs on its runs folder first")
    iou = [float(row["iou"]) for row in rows]
    dsc = [float(row["dsc"]) for row in rows]
    best, last = run.best_entry, run.results["history"][-1]
    params = run.params
    return dict(
        run=run.folder.name, model=describe_model(params, run.results), loss=params["loss"],
        optimiser=f"{describe_optimiser(params, run.results)}, {describe_schedule(params)}", size=describe_size(params),
        epochs=runs.describe_epochs(run.results), batch=params["batch_size"],
        images=last.get("images"), pixels=last.get("pixels"), tutorial_iou=tutorial_iou,
        iou_mean=float(np.mean(iou)), iou_median=float(np.median(iou)), dsc_mean=float(np.mean(dsc)),
        dsc_median=float(np.median(dsc)), cases=len(rows), best_epoch=run.results["best_epoch"],
        best_grid=best["val_dsc"], last_grid=last["val_dsc"], best_native=best["val_dsc_native"],
        last_native=last["val_dsc_native"], wall_minutes=run.results.get("wall_seconds", 0.0) / 60,
        device=run.results["device"], commit=run.results["commit"],
        earlier=", ".join(run.results.get("earlier_commits", [])), split=run.results["split"],
        training_seed=params.get("training_seed") or params["seed"], data=run.results["data_dir"],
        layout=run.results.get("layout", "?"), load=last.get("load_average"),
    )


def by_image_kind(run):
    """Markdown lines: the run's per-image IoU and DSC (metrics.csv) grouped by each image's own size and whether it
    is grey or colour (its channels differ), the largest groups first: where a grid that resizes every image to
    one size loses."""
    import layouts

    layout = layouts.LAYOUTS[run.results["layout"]]
    cases = layout.cases(run.results["data_dir"])
    groups = {}
    for row in metrics_rows(run.folder):
        image = np.asarray(layout.read_image(cases[row["patient"]][0][1]))
        colour = image.ndim == 3 and image.shape[-1] >= 3 and not (
            np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2]))
        key = (f"{image.shape[0]} x {image.shape[1]}", "colour" if colour else "grey")
        groups.setdefault(key, []).append((float(row["iou"]), float(row["dsc"])))
    lines = ["| height x width | | images | IoU mean / median | DSC mean |", "| --- | --- | ---: | --- | ---: |"]
    for (size, kind), values in sorted(groups.items(), key=lambda item: (-len(item[1]), item[0])):
        iou, dsc = np.array(values).T
        lines.append(f"| {size} | {kind} | {len(values)} | {iou.mean():.3f} / {np.median(iou):.3f} "
                     f"| {dsc.mean():.3f} |")
    return lines


def write(rows, figures, title, argv, out, kinds=()):
    out = Path(out)
    figures_dir = out.parent / f"{out.stem}-figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"# {title}", "", results_files.written_by("tools.folder_results", argv), "",
             "IoU and DSC per image at each image's own size (the prediction put back through the inverse of the "
             "preprocessing, thresholded at 0.5, no largest-component step), mean and median over the validation "
             "images; the tutorial's IoU on the training grid instead pools each batch of "
             f"{TUTORIAL_BATCH} validation images (4uiiurz1/pytorch-nested-unet, metrics.iou_score), so one image's "
             "miss costs only its share of a batch. Best epoch: the weights kept (chosen on the validation images, "
             "as the tutorial chooses); beside it the last epoch's figure (validation DSC, per image).", "",
             "| run | model | loss | optimiser, schedule | size | epochs | tutorial IoU (grid) | IoU mean / median "
             "| DSC mean / median | validation images | best epoch: DSC grid / own size "
             "| last epoch: DSC grid / own size | wall |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        lines.append(
            f"| {row['run']} | {row['model']} | {row['loss']} | {row['optimiser']} | {row['size']} | {row['epochs']} "
            f"| {row['tutorial_iou']:.4f} | {row['iou_mean']:.4f} / {row['iou_median']:.4f} "
            f"| {row['dsc_mean']:.4f} / {row['dsc_median']:.4f} | {row['cases']} "
            f"| {row['best_epoch']}: {row['best_grid']:.4f} / {row['best_native']:.4f} "
            f"| {row['last_grid']:.4f} / {row['last_native']:.4f} | {row['wall_minutes']:.1f} min |")
    for row, kind_lines in zip(rows, kinds):
        lines += ["", f"### {row['run']}: per image size and colour", "", *kind_lines]
    lines += results_files.analysis_section(out)
    lines += ["", "## Provenance", ""]
    for row in rows:
        lines.append(
            f"- {row['run']}: layout {row['layout']}, data {row['data']}; split {row['split']}; training seed "
            f"{row['training_seed']}; batch {row['batch']}; trained on {row['images']:,} images ({row['pixels']:,} "
            "pixels); "
            f"device {row['device']} (load average at the last epoch {row['load']}); commit {row['commit']}"
            + (f" (earlier segments: {row['earlier']})" if row["earlier"] else "") + ".")
    for row, figure in zip(rows, figures):
        if figure.exists():
            target = figures_dir / f"{row['run']}-examples.png"
            shutil.copyfile(figure, target)
            lines += ["", f"### {row['run']}: best, median and worst image (red prediction, green truth)", "",
                      results_files.image_line(target, out, row["run"])]
    safe_files.write_atomic(out, ("\n".join(lines) + "\n").encode())
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run folders, each scored by tools/score_runs.py")
    parser.add_argument("--title", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    found = [runs.run_at(folder) for folder in args.runs]
    rows = [run_row(run, grid_iou(grid_predictions(run, args.device))) for run in found]
    figures = [run.folder / runs.PREDICTIONS_DIR / "examples.png" for run in found]
    kinds = [by_image_kind(run) for run in found]
    print(f"wrote {write(rows, figures, args.title, argv, args.out, kinds)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
