"""metrics.py measures binary volumes; utils.binarise post-processes before, explicitly (threshold as the
reference's np.round, then the 3-D largest connected component); evaluation.grid_dsc is the two in order."""

import numpy as np
import pytest

from evaluation import grid_dsc
import metrics
from metrics import dsc
from utils import binarise


def volume(*boxes, shape=(3, 6, 6)):
    out = np.zeros(shape)
    for box in boxes:
        out[box] = 1
    return out


def test_dsc_of_hand_made_volumes():
    true = volume((0, slice(0, 2), slice(0, 2)))  # 4 voxels
    pred = volume((0, slice(0, 2), slice(1, 3)))  # 4 voxels, 2 shared
    assert dsc(pred, true) == pytest.approx(2 * 2 / 8)
    assert dsc(true, true) == 1.0


def test_empty_volumes_score_as_the_reference_never_does():
    true = volume((1, slice(2, 4), slice(2, 4)))
    assert dsc(np.zeros((3, 6, 6)), true) == 0.0  # nothing predicted: 0, not a crash
    assert dsc(np.zeros((3, 6, 6)), np.zeros((3, 6, 6))) == 1.0  # nothing in either: agreement, not NaN
    assert dsc(volume((0, 0, 0)), np.zeros((3, 6, 6))) == 0.0  # a false positive where there is no tumour


def test_binarise_thresholds_like_round_then_keeps_the_largest_component():
    true = volume((0, 0, slice(0, 2)))
    pred = np.zeros((3, 6, 6))
    pred[0, 0, 0], pred[0, 0, 1] = 0.9, 0.5  # 0.5 rounds to background
    assert dsc(binarise(pred, lcc=False), true) == pytest.approx(2 * 1 / 3)
    true = volume((1, slice(0, 3), slice(0, 3)))  # 9 voxels
    pred = true.copy()
    pred[2, 5, 5] = 1  # a one-voxel false positive, apart from the tumour
    assert dsc(binarise(pred, lcc=False), true) == pytest.approx(18 / 19)
    assert dsc(binarise(pred), true) == 1.0  # the component drops it


def test_grid_dsc_groups_slices_by_patient_then_post_processes_each_volume():
    index = [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2)]
    true = [np.ones((2, 2)), np.zeros((2, 2)), np.ones((2, 2)), np.ones((2, 2)), np.zeros((2, 2))]
    pred = [np.ones((2, 2)), np.zeros((2, 2)), np.ones((2, 2)), np.zeros((2, 2)), np.zeros((2, 2))]
    assert grid_dsc(pred, true, index) == pytest.approx([1.0, 2 * 4 / 12])
    # a second, smaller blob on the other slice, touching nothing, is dropped by the component before the measure
    tumour = np.zeros((3, 3))
    tumour[0:2, 0:2] = 1
    blob = np.zeros((3, 3))
    blob[2, 2] = 0.9
    assert grid_dsc([tumour, blob], [tumour, np.zeros((3, 3))], [(0, 0), (0, 1)]) == [1.0]


def test_the_tutorials_iou_pools_each_batch_then_weights_batches_by_size():
    pred, true = np.zeros((3, 2, 2), bool), np.zeros((3, 2, 2), bool)
    pred[0, 0] = true[0, 0] = True  # image 0: 2 of 2 pixels right
    true[1, 0, 0] = True  # image 1: its 1 pixel missed
    pred[2] = true[2] = True  # image 2: 4 of 4 right, alone in the second batch of 2
    # batch 1 pools images 0 and 1: intersection 2, union 3; batch 2: 4 / 4; weighted 2 : 1
    assert metrics.batch_pooled_iou(pred, true, batch_size=2, smooth=0) == pytest.approx((2 * 2 / 3 + 1 * 1) / 3)
    # per image it would be (1 + 0 + 1) / 3: the pooled figure forgives the missed image
    per_image = [metrics.segmentation_metrics(p, t)["iou"] for p, t in zip(pred, true)]
    assert np.mean(per_image) == pytest.approx(2 / 3)
    # nothing to find and nothing found: smooth makes it 1, as the tutorial's
    assert metrics.batch_pooled_iou(np.zeros((2, 2, 2)), np.zeros((2, 2, 2))) == 1.0
