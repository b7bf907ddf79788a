"""tools/missing_sequences.py: a sequence is missing when it copies the FLAIR in every slice."""

import numpy as np

from layouts import kaggle_3m
from conftest import write_patient
from tools import missing_sequences


def slices_with(channels_of):
    """Hand-made RGB slices: channels_of(slice index) gives (pre-contrast, FLAIR, post-contrast) values."""
    images = [np.stack([np.full((4, 4), value, np.uint8) for value in channels_of(index)], axis=-1)
              for index in range(3)]
    return images, [np.zeros((4, 4), np.uint8)] * 3


def test_only_a_channel_equal_to_the_flair_in_every_slice_is_missing(tmp_path, capsys):
    write_patient(tmp_path, "TCGA_AA_0001_20000101", *slices_with(lambda i: (10 + i, 10 + i, 50)))  # no pre
    write_patient(tmp_path, "TCGA_AA_0002_20000101", *slices_with(lambda i: (10 + i, 10 + i, 10 + i)))  # FLAIR only
    write_patient(tmp_path, "TCGA_AA_0003_20000101", *slices_with(lambda i: (5, 10, 10 + (i == 2))))  # all three
    patients = kaggle_3m.list_patients(tmp_path)
    missing = {patient: missing_sequences.missing_sequences(slices) for patient, slices in patients.items()}
    assert missing == {"TCGA_AA_0001_20000101": ["pre-contrast"],
                       "TCGA_AA_0002_20000101": ["pre-contrast", "post-contrast"], "TCGA_AA_0003_20000101": []}
    metrics = tmp_path / "metrics.csv"
    metrics.write_text("patient,dsc\nTCGA_AA_0001_20000101,0.5\nTCGA_AA_0002_20000101,0.7\n"
                       "TCGA_AA_0003_20000101,0.9\n")
    assert missing_sequences.main([str(tmp_path), str(metrics)]) == 0
    out = capsys.readouterr().out
    assert "| TCGA_AA_0002_20000101 | pre-contrast, post-contrast | 0.700 |" in out
    assert "2 of 3 patients lack a sequence." in out
    assert "with a missing sequence: 2, mean DSC 0.600, median 0.600." in out
    assert "with all three: 1, mean DSC 0.900, median 0.900." in out
