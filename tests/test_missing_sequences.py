"""tools/missing_sequences.py: a sequence is missing when it copies the FLAIR in every slice."""

import json

import numpy as np

from layouts import kaggle_3m
from conftest import write_patient
from tools import missing_sequences


def slices_with(channels_of):
    """Hand-made RGB slices: channels_of(slice index) gives (pre-contrast, FLAIR, post-contrast) values."""
    images = [np.stack([np.full((4, 4), value, np.uint8) for value in channels_of(index)], axis=-1)
              for index in range(3)]
    return images, [np.zeros((4, 4), np.uint8)] * 3


def test_only_a_channel_equal_to_the_flair_in_every_slice_is_missing_and_each_recipe_scores_them(tmp_path):
    write_patient(tmp_path, "TCGA_AA_0001_20000101", *slices_with(lambda i: (10 + i, 10 + i, 50)))  # no pre
    write_patient(tmp_path, "TCGA_AA_0002_20000101", *slices_with(lambda i: (10 + i, 10 + i, 10 + i)))  # FLAIR only
    write_patient(tmp_path, "TCGA_AA_0003_20000101", *slices_with(lambda i: (5, 10, 10 + (i == 2))))  # all three
    patients = kaggle_3m.list_patients(tmp_path)
    missing = {patient: missing_sequences.missing_sequences(slices) for patient, slices in patients.items()}
    assert missing == {"TCGA_AA_0001_20000101": ["pre-contrast"],
                       "TCGA_AA_0002_20000101": ["pre-contrast", "post-contrast"], "TCGA_AA_0003_20000101": []}
    # two recipes' folds scored as tools/score_runs leaves them; the second scored only patient 0002 (fold 1 of 2)
    for label, folds in (("a", {0: {"TCGA_AA_0001_20000101": 0.5, "TCGA_AA_0003_20000101": 0.9},
                                1: {"TCGA_AA_0002_20000101": 0.7}}), ("b", {1: {"TCGA_AA_0002_20000101": 0.2}})):
        for fold, scores in folds.items():
            folder = tmp_path / "runs" / label / f"fold-{fold}"
            (folder / "predictions").mkdir(parents=True)
            (folder / "results.json").write_text(json.dumps(dict(params=dict(epochs=1, folds=2), history=[{}])))
            (folder / "predictions" / "metrics.csv").write_text(
                "patient,dsc,precision,recall,predicted_voxels,true_voxels\n"
                + "".join(f"{patient},{dsc},1,1,1,1\n" for patient, dsc in scores.items()))
    out = tmp_path / "missing.md"
    assert missing_sequences.main([str(tmp_path), f"A={tmp_path / 'runs' / 'a'}", f"B={tmp_path / 'runs' / 'b'}",
                                   "--out", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("# Patients with a missing sequence, and how they score\n\nWritten by `python -m "
                           "tools.missing_sequences ")
    assert "| patient | missing | A | B (fold 1) |" in text
    assert "| TCGA_AA_0001_20000101 | pre-contrast | 0.500 |  |" in text
    assert "| TCGA_AA_0002_20000101 | pre-contrast, post-contrast | 0.700 | 0.200 |" in text
    assert "TCGA_AA_0003" not in text.split("2 of 3 patients lack a sequence.")[0]  # all three: no row
    assert "| A | 2, 0.600, 0.600 | 1, 0.900, 0.900 |" in text
    assert "| B (fold 1) | 1, 0.200, 0.200 | 0 |" in text
