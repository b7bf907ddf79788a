"""Inference for the finished runs of a runs folder: each with its best weights on its own validation patients
(a k-fold run's: its fold's; on one's own images, its validation images), at the original geometry (kaggle_3m's
256x256, each image's own size), writing predictions/ (metrics.csv, dsc.png), predictions/examples.png (its
best, median and worst case) and predictions/telling-slices.npz (each case's predicted mask at its slice with the
most tumour: what tools/failure_analysis.py draws once the weights are gone). report.py then reads them; it runs
no inference.

    python -m tools.score_runs RUNS [--data-path kaggle_3m] [--device auto] [--again]

--data-path: the kaggle_3m folder here, for runs trained on another machine (their data_dir is that
machine's). Runs already scored (predictions/metrics.csv) are skipped unless --again.
"""

import argparse
import sys
from pathlib import Path

import imageio.v3 as iio

import runs
from runs import load_runs


def predict_run(run, device="auto", data_path=None):
    """Inference with a run's best weights on its own validation patients (a k-fold run's: its fold's); writes
    run/predictions/. data_path: the kaggle_3m folder here, for a run trained on another machine (its data_dir
    is that machine's)."""
    import inference

    params = run.params
    return inference.run(
        weights=str(run.folder / runs.WEIGHTS_FILE), data_path=data_path or run.results["data_dir"],
        patients=list(run.results["validation_patients"]), cache_dir=params["cache_dir"], tta=params.get("tta", False),
        predictions_dir=str(run.folder / runs.PREDICTIONS_DIR),
        figure=str(run.folder / runs.PREDICTIONS_DIR / "dsc.png"),
        write_masks=False, device=device, workers=1,
    )


def example_figure(predicted, predictions_dir, path):
    """Overlays (red prediction, green truth) of the best, median and worst case at the original geometry (DSC
    and IoU there): a patient on its most telling slice, an image whole."""
    from matplotlib.figure import Figure

    rows = {row["patient"]: row for row in predicted["metrics"]}
    ranked = sorted(rows, key=lambda case: rows[case]["dsc"], reverse=True)
    chosen = {"best": ranked[0], "median": ranked[len(ranked) // 2], "worst": ranked[-1]}
    figure = Figure(figsize=(12, 4.6))
    for axes, (label, case) in zip(figure.subplots(1, 3), chosen.items()):
        number = predicted["telling_slice"][case]
        picture = Path(predicted["pictures"][case])
        whole = picture.suffix == ".png"  # one image a case: its overlay is the picture
        axes.imshow(iio.imread(picture if whole else Path(predictions_dir) / f"{case}_{number}.png"))
        shown = case if len(case) <= 28 else f"{case[:12]}...{case[-8:]}"  # DSB2018's ids are 64 hex digits
        axes.set_title(f"{label}: {shown}\nDSC {rows[case]['dsc']:.3f}, IoU {rows[case]['iou']:.3f}"
                       + ("" if whole else f", slice {number}"), fontsize="medium")
        axes.axis("off")
    figure.tight_layout()
    figure.savefig(path)


def score(runs_dir, data_path=None, device="auto", again=False):
    """Score every finished run with weights under runs_dir (those not scored yet, unless again); returns them."""
    scored = []
    for run in load_runs(runs_dir):
        if not run.finished or not (run.folder / runs.WEIGHTS_FILE).exists():
            continue
        if (run.folder / runs.METRICS_FILE).exists() and not again:
            continue
        predicted = predict_run(run, device, data_path)
        runs.write_telling_slices(run.folder, predicted["telling_slice"], predicted["telling_masks"])
        example_figure(predicted, run.folder / runs.PREDICTIONS_DIR, run.folder / runs.PREDICTIONS_DIR / "examples.png")
        scored.append(run)
    return scored


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs_dir")
    parser.add_argument("--data-path", help="the kaggle_3m folder here (default: each run's own data_dir)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--again", action="store_true", help="score runs that have predictions already too")
    args = parser.parse_args(argv)
    scored = score(args.runs_dir, args.data_path, args.device, args.again)
    print(f"{args.runs_dir}: {len(scored)} run(s) scored" + "".join(f"\n  {run.folder}" for run in scored))
    return 0


if __name__ == "__main__":
    sys.exit(main())
