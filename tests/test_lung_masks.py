"""tools/lung_masks.py: the share of a lung-CT mask outside the body, on hand-made CT slices."""

import csv

import numpy as np
import pytest
import tifffile

from tools import lung_masks


def ct_slice(size=64):
    """A body disk (radius 24, 40 HU) holding two lungs (-850 HU, 8 x 12 each) in air (-1000 HU); and the lungs."""
    rows, columns = np.mgrid[:size, :size]
    slice_hu = np.full((size, size), -1000, np.int16)
    slice_hu[(rows - 32) ** 2 + (columns - 32) ** 2 <= 24 ** 2] = 40
    lungs = np.zeros((size, size), bool)
    lungs[26:38, 18:26] = lungs[26:38, 38:46] = True
    slice_hu[lungs] = -850
    return slice_hu, lungs


def test_the_body_holds_the_lungs_and_not_the_air_around_it():
    slice_hu, lungs = ct_slice()
    body = lung_masks.body(slice_hu)
    assert body[lungs].all() and not body[0, 0] and body.sum() == (slice_hu > -500).sum() + lungs.sum()
    assert lung_masks.outside_share(slice_hu, lungs) == 0.0
    air = np.zeros_like(lungs)
    air[:4, :] = True  # 4 rows of the air above the body: 256 pixels, none of them body
    assert lung_masks.outside_share(slice_hu, lungs | air) == pytest.approx(256 / (192 + 256))
    assert lung_masks.outside_share(slice_hu, np.zeros_like(lungs)) == 0.0


def test_the_flagged_slices_and_what_they_cost_a_run(tmp_path):
    slice_hu, lungs = ct_slice()
    air = np.zeros_like(lungs)
    air[:4, :] = True
    for case, mask in (("good", lungs), ("bad", lungs | air), ("also_good", lungs)):
        for folder, picture in (("2d_images", slice_hu), ("2d_masks", mask.astype(np.uint8) * 255)):
            (tmp_path / "data" / folder).mkdir(parents=True, exist_ok=True)
            tifffile.imwrite(tmp_path / "data" / folder / f"{case}.tif", picture)
    assert lung_masks.audit(tmp_path / "data") == pytest.approx(dict(good=0.0, bad=256 / 448, also_good=0.0))
    run = tmp_path / "run"
    (run / "predictions").mkdir(parents=True)
    with open(run / "predictions" / "metrics.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["patient", "dsc"])
        writer.writeheader()
        writer.writerows([dict(patient="good", dsc=0.98), dict(patient="bad", dsc=0.5)])
    out = tmp_path / "results" / "masks.md"
    assert lung_masks.main([str(tmp_path / "data"), "--run", str(run), "--picture",
                            str(tmp_path / "results" / "flagged.png"), "--out", str(out)]) == 0
    text = out.read_text()
    assert "1 of 3 masks mark more than 1% of themselves outside the body; 2 mark nothing there." in text
    assert "| bad | 0.571 |" in text and "| good |" not in text.split("| slice |")[1].split("\n\n")[0]
    # all validation slices: (0.98 + 0.5) / 2; without the flagged one: 0.98
    assert "| all validation slices of run | 2 | 0.7400 | 0.7400 |" in text
    assert "| without the flagged ones (bad) | 1 | 0.9800 | 0.9800 |" in text
    assert "](flagged.png)" in text and (tmp_path / "results" / "flagged.png").exists()
