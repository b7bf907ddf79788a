"""The measures of a segmentation against its truth, on binary volumes: DSC, IoU, precision, recall, HD95 and
volumes; a patient's metrics.csv row and their summary. Post-processing (the threshold, the 3-D largest
connected component) is utils.binarise's and comes first, explicitly: nothing here thresholds or drops
components.
"""

import numpy as np

from utils import count_components

METRIC_COLUMNS = (
    "patient", "dsc", "iou", "precision", "recall", "hd95", "predicted_voxels", "true_voxels", "dsc_preprocessed",
    "dsc_without_lcc", "components",
)


def dsc(pred, true):
    """Dice similarity coefficient of two binary volumes (nonzero: foreground). Both empty is perfect agreement:
    1.0, never NaN; an empty prediction of a non-empty truth scores 0, never a crash."""
    pred, true = np.asarray(pred) > 0.5, np.asarray(true) > 0.5
    total = pred.sum() + true.sum()
    if total == 0:
        return 1.0
    return float(2.0 * np.logical_and(pred, true).sum() / total)


def batch_pooled_iou(preds, trues, batch_size=16, smooth=1e-5):
    """The UNet++ tutorial's validation IoU (4uiiurz1/pytorch-nested-unet, metrics.iou_score and its validate()):
    the images taken in order in batches of batch_size, each batch's intersection over its union pooled over its
    pixels (plus smooth on both), then the mean over batches weighted by their sizes. Not per image: a batch's
    large nuclei outweigh its small ones, and an image's empty prediction costs only its share of the batch."""
    preds, trues = np.asarray(preds) > 0.5, np.asarray(trues) > 0.5
    scores, sizes = [], []
    for start in range(0, len(preds), batch_size):
        pred, true = preds[start:start + batch_size], trues[start:start + batch_size]
        scores.append((np.logical_and(pred, true).sum() + smooth) / (np.logical_or(pred, true).sum() + smooth))
        sizes.append(len(pred))
    return float(np.average(scores, weights=sizes))


def segmentation_metrics(pred, true):
    """DSC, IoU, precision, recall, HD95 (voxels, via medpy) and volumes of two binary volumes.

    Conventions where a ratio is 0/0: both empty scores 1 everywhere and HD95
    0; precision with nothing predicted, or recall with nothing true, is 1
    only when the other is empty too, else 0. HD95 is NaN when exactly one is
    empty.
    """
    pred, true = np.asarray(pred).astype(bool), np.asarray(true).astype(bool)
    tp = int(np.logical_and(pred, true).sum())
    n_pred, n_true = int(pred.sum()), int(true.sum())
    both_empty = n_pred == 0 and n_true == 0
    union = n_pred + n_true - tp
    if both_empty:
        hd95 = 0.0
    elif n_pred == 0 or n_true == 0:
        hd95 = float("nan")
    else:
        from medpy.metric.binary import hd95 as medpy_hd95

        hd95 = float(medpy_hd95(pred, true))
    return dict(
        dsc=1.0 if both_empty else 2 * tp / (n_pred + n_true),
        iou=1.0 if both_empty else tp / union,
        precision=tp / n_pred if n_pred else float(n_true == 0),
        recall=tp / n_true if n_true else float(n_pred == 0),
        hd95=hd95,
        predicted_voxels=n_pred,
        true_voxels=n_true,
    )


def patient_metrics(patient, thresholded, pred, truth, dsc_preprocessed):
    """The metrics.csv row of a patient from post_process's two volumes and the truth mask.

    The scores are of the post-processed prediction; dsc_without_lcc and components say what that
    post-processing did: a patient scoring 0 with a high dsc_without_lcc had its tumour in a smaller component
    than a false one.
    """
    return dict(patient=patient, **segmentation_metrics(pred, truth), dsc_preprocessed=dsc_preprocessed,
                dsc_without_lcc=dsc(thresholded, truth), components=count_components(thresholded))


def metrics_summary(rows):
    """{"mean": {metric: value}, "median": {...}} over the patients; a metric's empty (NaN) values are skipped."""
    summary = {}
    for statistic, function in (("mean", np.nanmean), ("median", np.nanmedian)):
        summary[statistic] = {}
        for column in METRIC_COLUMNS[1:]:
            values = np.array([row[column] for row in rows], dtype=float)
            summary[statistic][column] = float(function(values)) if np.isfinite(values).any() else float("nan")
    return summary
