"""Segmentation losses.

DiceLoss is the reference's, on probabilities. The losses of build_loss take
logits (what every network's forward returns), which keeps BCE and focal numerically safe
under mixed precision; the overlap losses apply the sigmoid themselves.
Sums run over the whole batch, as the reference's Dice, except the Lovasz
hinge, which is averaged per image (Berman et al. 2018).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


def _check_shapes(y_pred, y_true):
    if y_pred.shape != y_true.shape:
        raise ValueError(f"prediction shape {tuple(y_pred.shape)} != target shape {tuple(y_true.shape)}")


class DiceLoss(nn.Module):
    """The reference's soft Dice loss on probabilities, over the whole batch: 1 - (2|P.T| + 1) / (|P| + |T| + 1)."""

    def __init__(self, smooth=1.0):
        super().__init__()
        self.smooth = smooth

    def forward(self, y_pred, y_true):
        _check_shapes(y_pred, y_true)
        y_pred = y_pred[:, 0].reshape(-1)
        y_true = y_true[:, 0].reshape(-1)
        intersection = (y_pred * y_true).sum()
        dsc = (2.0 * intersection + self.smooth) / (y_pred.sum() + y_true.sum() + self.smooth)
        return 1.0 - dsc


class LogitsLoss(nn.Module):
    """A loss of (logits, target in {0, 1}), both (N, 1, H, W)."""

    def forward(self, logits, y_true):
        _check_shapes(logits, y_true)
        return self.compute(logits.float(), y_true.float())

    def compute(self, logits, y_true):
        raise NotImplementedError


def _overlap_counts(logits, y_true):
    """Soft true positives, false positives and false negatives over the batch."""
    p = torch.sigmoid(logits)
    tp = (p * y_true).sum()
    return tp, (p * (1 - y_true)).sum(), ((1 - p) * y_true).sum()


class Dice(LogitsLoss):
    """The reference's Dice loss applied to sigmoid(logits)."""

    def __init__(self, smooth=1.0):
        super().__init__()
        self.dice = DiceLoss(smooth)

    def compute(self, logits, y_true):
        return self.dice(torch.sigmoid(logits), y_true)


class BCE(LogitsLoss):
    def compute(self, logits, y_true):
        return F.binary_cross_entropy_with_logits(logits, y_true)


class BCEDice(LogitsLoss):
    """bce_weight * BCE + dice_weight * Dice."""

    def __init__(self, bce_weight=1.0, dice_weight=1.0, smooth=1.0):
        super().__init__()
        self.bce_weight, self.dice_weight = bce_weight, dice_weight
        self.dice = Dice(smooth)

    def compute(self, logits, y_true):
        bce = F.binary_cross_entropy_with_logits(logits, y_true)
        return self.bce_weight * bce + self.dice_weight * self.dice.compute(logits, y_true)


class SoftIoU(LogitsLoss):
    """Soft Jaccard: 1 - (TP + s) / (TP + FP + FN + s)."""

    def __init__(self, smooth=1.0):
        super().__init__()
        self.smooth = smooth

    def compute(self, logits, y_true):
        tp, fp, fn = _overlap_counts(logits, y_true)
        return 1 - (tp + self.smooth) / (tp + fp + fn + self.smooth)


class Tversky(LogitsLoss):
    """1 - TI with TI = (TP + s) / (TP + alpha FP + beta FN + s); beta > alpha favours recall.

    gamma != 1 gives the focal Tversky loss (1 - TI) ** gamma (Abraham & Khan 2019).
    """

    def __init__(self, alpha=0.3, beta=0.7, gamma=1.0, smooth=1.0):
        super().__init__()
        self.alpha, self.beta, self.gamma, self.smooth = alpha, beta, gamma, smooth

    def compute(self, logits, y_true):
        tp, fp, fn = _overlap_counts(logits, y_true)
        index = (tp + self.smooth) / (tp + self.alpha * fp + self.beta * fn + self.smooth)
        return (1 - index) ** self.gamma


class FocalTversky(Tversky):
    def __init__(self, alpha=0.3, beta=0.7, gamma=0.75, smooth=1.0):
        super().__init__(alpha, beta, gamma, smooth)


class Focal(LogitsLoss):
    """Focal loss (Lin et al. 2017): mean of -alpha_t (1 - p_t) ** gamma log p_t."""

    def __init__(self, alpha=0.25, gamma=2.0):
        super().__init__()
        self.alpha, self.gamma = alpha, gamma

    def compute(self, logits, y_true):
        bce = F.binary_cross_entropy_with_logits(logits, y_true, reduction="none")  # -log p_t
        p_t = torch.exp(-bce)
        alpha_t = self.alpha * y_true + (1 - self.alpha) * (1 - y_true)
        return (alpha_t * (1 - p_t) ** self.gamma * bce).mean()


def lovasz_gradient(sorted_truth):
    """Gradient of the Lovasz extension of the Jaccard loss for truths sorted by decreasing error."""
    positives = sorted_truth.sum()
    intersection = positives - sorted_truth.cumsum(0)
    union = positives + (1 - sorted_truth).cumsum(0)
    jaccard = 1 - intersection / union
    jaccard[1:] = jaccard[1:] - jaccard[:-1]
    return jaccard


class LovaszHinge(LogitsLoss):
    """Lovasz hinge (Berman et al. 2018), a convex surrogate of the Jaccard loss, averaged per image."""

    def __init__(self, per_image=True):
        super().__init__()
        self.per_image = per_image

    @staticmethod
    def flat(logits, y_true):
        errors = 1 - logits * (2 * y_true - 1)
        errors, order = torch.sort(errors, descending=True)
        return torch.dot(F.relu(errors), lovasz_gradient(y_true[order]))

    def compute(self, logits, y_true):
        if not self.per_image:
            return self.flat(logits.reshape(-1), y_true.reshape(-1))
        losses = [self.flat(lo.reshape(-1), tr.reshape(-1)) for lo, tr in zip(logits, y_true)]
        return torch.stack(losses).mean()


class DeepSupervision(nn.Module):
    """Applies a loss to one logits tensor, or to a list of them (deep supervision heads) with weights.

    The weights are normalised to sum 1; None weighs every head equally (UNet++'s choice).
    """

    def __init__(self, loss, weights=None):
        super().__init__()
        self.loss, self.weights = loss, weights

    def forward(self, logits, y_true):
        if isinstance(logits, torch.Tensor):
            return self.loss(logits, y_true)
        weights = self.weights if self.weights is not None else [1.0] * len(logits)
        if len(weights) != len(logits):
            raise ValueError(f"{len(weights)} deep supervision weights for {len(logits)} outputs")
        total = sum(weights)
        return sum(w / total * self.loss(head, y_true) for w, head in zip(weights, logits))


LOSSES = {
    "dice": Dice,
    "bce": BCE,
    "bce_dice": BCEDice,
    "soft_iou": SoftIoU,
    "lovasz": LovaszHinge,
    "focal": Focal,
    "tversky": Tversky,
    "focal_tversky": FocalTversky,
}


def build_loss(name="dice", deep_supervision_weights=None, **kwargs):
    """A loss of (logits or a list of deep-supervision logits, target) by name; kwargs go to its constructor."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
    return DeepSupervision(LOSSES[name](**kwargs), deep_supervision_weights)
