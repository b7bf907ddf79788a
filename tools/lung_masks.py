"""Which lung-CT masks mark the air outside the body as lung (the lung-CT tutorial's data): truth errors that no
model should learn, and what they cost a run's per-slice DSC.

    python -m tools.lung_masks DATA [--run RUN] [--picture PNG] --out results/lung-ct-masks.md

DATA: a folder in the lung_ct layout (2d_images/ beside 2d_masks/). The body of a slice: its pixels above
BODY_HU (soft tissue and bone; the lungs and the air around the body lie below), the largest connected
component of them with its holes filled (the lungs are holes in it). A mask's pixels outside the body mark the
air between the body and the scanner's field of view; a slice whose mask has more than FLAGGED of itself there is
flagged. RUN (a run on DATA scored by tools/score_runs.py): its per-slice DSC over all its validation slices and
over those not flagged, side by side (the first is the headline; the second says what the flagged truths cost).
"""

import argparse
import sys
from pathlib import Path

import numpy as np

import results_files
from layouts import by_name
from runs import metrics_rows
from safe_files import make_folder

BODY_HU = -500  # between lung parenchyma (about -850) and soft tissue (about +40)
FLAGGED = 0.01  # of a mask outside the body; 263 of the tutorial's 266 masks have none there at all


def body(slice_hu):
    """The body of a CT slice (CT numbers, height x width): the largest connected region above BODY_HU, its holes
    (the lungs, the airways) filled."""
    from scipy import ndimage

    labels, count = ndimage.label(slice_hu > BODY_HU)
    if count == 0:
        return np.zeros(slice_hu.shape, bool)
    largest = 1 + int(np.argmax(ndimage.sum_labels(np.ones(slice_hu.shape), labels, range(1, count + 1))))
    return ndimage.binary_fill_holes(labels == largest)


def outside_share(slice_hu, mask):
    """The share of mask's pixels outside the body of slice_hu (0 for an empty mask)."""
    mask = np.asarray(mask) > 0
    return float((mask & ~body(slice_hu)).sum() / mask.sum()) if mask.any() else 0.0


def audit(data_dir):
    """{slice id: the share of its mask outside the body} over every slice of data_dir (lung_ct layout)."""
    layout = by_name("lung_ct")
    shares = {}
    for case, slices in layout.cases(data_dir).items():
        (_, image, mask), = slices
        shares[case] = outside_share(layout.read_image(image)[..., 0].astype(np.int32), layout.read_mask(mask))
    return shares


def run_lines(run, flagged):
    """A run's per-slice DSC with and without the flagged slices among its validation slices."""
    rows = {row["patient"]: float(row["dsc"]) for row in metrics_rows(run)}
    if not rows:
        raise SystemExit(f"{run}: no predictions/metrics.csv; score it first (python -m tools.score_runs)")
    kept = {case: dsc for case, dsc in rows.items() if case not in flagged}
    among = sorted(set(rows) & set(flagged))
    return ["| slices | count | DSC mean | DSC median |", "| --- | ---: | ---: | ---: |",
            f"| all validation slices of {Path(run).name} | {len(rows)} | {np.mean(list(rows.values())):.4f} | "
            f"{np.median(list(rows.values())):.4f} |",
            f"| without the flagged ones ({', '.join(among) or 'none'}) | {len(kept)} | "
            f"{np.mean(list(kept.values())):.4f} | {np.median(list(kept.values())):.4f} |"]


def picture(data_dir, flagged, path):
    """Each flagged slice (a CT window of -1000 to 400) with its mask outlined green and the body's outline red."""
    from matplotlib.figure import Figure
    from skimage.segmentation import find_boundaries

    layout = by_name("lung_ct")
    cases = layout.cases(data_dir)
    figure = Figure(figsize=(3.2 * len(flagged), 3.9))
    for axis, case in zip(np.atleast_1d(figure.subplots(1, len(flagged), squeeze=False)[0]), flagged):
        (_, image, mask), = cases[case]
        slice_hu = layout.read_image(image)[..., 0].astype(np.int32)
        grey = (np.clip(slice_hu, -1000, 400) + 1000) / 1400
        shown = np.repeat(grey[..., None], 3, axis=-1)
        shown[find_boundaries(layout.read_mask(mask) > 0)] = (0, 1, 0)
        shown[find_boundaries(body(slice_hu))] = (1, 0, 0)
        axis.imshow(shown)
        axis.set_title(f"{case}\n{flagged[case]:.0%} of the mask outside the body", fontsize="small")
        axis.axis("off")
    figure.tight_layout()
    make_folder(Path(path).parent)
    figure.savefig(path, dpi=80)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", help="a folder with 2d_images/ and 2d_masks/")
    parser.add_argument("--run", help="a run on this data scored by tools/score_runs.py")
    parser.add_argument("--picture", help="write the flagged slices here (PNG)")
    parser.add_argument("--out", required=True, help="the results file (markdown)")
    args = parser.parse_args(argv)
    shares = audit(args.data)
    flagged = {case: share for case, share in sorted(shares.items(), key=lambda item: -item[1]) if share > FLAGGED}
    lines = [f"{len(flagged)} of {len(shares)} masks mark more than {FLAGGED:.0%} of themselves outside the body; "
             f"{sum(share == 0 for share in shares.values())} mark nothing there.", ""]
    if flagged:
        lines += ["| slice | share of the mask outside the body |", "| --- | ---: |"]
        lines += [f"| {case} | {share:.3f} |" for case, share in flagged.items()] + [""]
    if args.run:
        lines += run_lines(args.run, flagged) + [""]
    if args.picture and flagged:
        picture(args.data, flagged, args.picture)
        lines += ["Each flagged slice (CT window -1000 to 400): the mask outlined green, the body red.", "",
                  results_files.image_line(args.picture, args.out, "The flagged slices")]
    intro = (f"The body: CT numbers above {BODY_HU}, the largest connected region, its holes (the lungs) filled; a "
             "mask's pixels outside it mark the air between the body and the field of view as lung.")
    results_files.write(args.out, "Lung-CT masks that mark the air outside the body", "tools.lung_masks", argv,
                        intro, lines)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
