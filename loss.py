"""Segmentation losses."""

import torch.nn as nn


class DiceLoss(nn.Module):
    """The reference's soft Dice loss on probabilities, over the whole batch: 1 - (2|P.T| + 1) / (|P| + |T| + 1)."""

    def __init__(self, smooth=1.0):
        super().__init__()
        self.smooth = smooth

    def forward(self, y_pred, y_true):
        if y_pred.shape != y_true.shape:
            raise ValueError(f"prediction shape {tuple(y_pred.shape)} != target shape {tuple(y_true.shape)}")
        y_pred = y_pred[:, 0].reshape(-1)
        y_true = y_true[:, 0].reshape(-1)
        intersection = (y_pred * y_true).sum()
        dsc = (2.0 * intersection + self.smooth) / (y_pred.sum() + y_true.sum() + self.smooth)
        return 1.0 - dsc
