"""tools/postprocessing.py: each rule keeps the components it says, and the reference's rule scores as inference."""

import numpy as np
import pytest

import inference
from tools import postprocessing


def test_each_rule_keeps_the_components_it_names():
    probs = np.zeros((3, 6, 6))
    probs[0, 0:2, 0:4] = 0.6  # A: 8 voxels, mass 4.8, peak 0.6
    probs[2, 0, 0:5] = 0.99  # B: 5 voxels, mass 4.95, peak 0.99
    probs[2, 5, 5] = 0.7  # C: 1 voxel
    a, b, c = (probs == 0.6), (probs == 0.99), (probs == 0.7)
    masks = postprocessing.apply_rules(probs)
    expected = {"none": a | b | c, "largest (reference)": a, "largest mass": b, "peak > 0.95": b,
                ">= 10% of largest": a | b | c, ">= 50% of largest": a | b}
    assert sorted(masks) == sorted(expected)
    for rule, mask in expected.items():
        assert np.array_equal(masks[rule], mask), rule
    assert all(not mask.any() for mask in postprocessing.apply_rules(np.full((2, 3, 3), 0.5)).values())


def test_the_reference_rule_scores_what_inference_scores(phantom_dir, blob_run, tmp_path):
    folder, patients = blob_run
    scores = postprocessing.score_run(folder)
    scored = inference.run(weights=folder / "weights" / "unet.pt", data_path=phantom_dir, patients=patients,
                           cache_dir=None, predictions_dir=tmp_path / "p", workers=0, write_masks=False, fuse=False)
    assert scores["largest (reference)"] == pytest.approx([row["dsc"] for row in scored["metrics"]], abs=1e-9)
    assert scores["none"] == pytest.approx([row["dsc_without_lcc"] for row in scored["metrics"]], abs=1e-9)
    assert all(row["components"] > 1 for row in scored["metrics"]) and scores["none"] != scores["largest (reference)"]
