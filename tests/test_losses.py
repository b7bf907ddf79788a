"""Every loss of build_loss against values computed by hand."""

import math

import pytest
import torch

from loss import LOSSES, DiceLoss, build_loss, lovasz_gradient

# Four pixels at logit 0 (probability 0.5), one of them tumour.
ZERO_LOGITS = torch.zeros(1, 1, 2, 2)
ONE_POSITIVE = torch.tensor([1.0, 0.0, 0.0, 0.0]).view(1, 1, 2, 2)


def loss_of(name, logits=ZERO_LOGITS, truth=ONE_POSITIVE, **kwargs):
    return build_loss(name, **kwargs)(logits, truth).item()


def test_dice_on_logits_is_the_reference_dice_on_probabilities():
    # |P.T| = 0.5, |P| = 2, |T| = 1: 1 - (1 + 1) / (3 + 1)
    assert loss_of("dice") == pytest.approx(0.5)
    # logits ln 3 and -ln 3 are probabilities 3/4 and 1/4: P = (3/4, 1/4, 3/4, 1/4), T = (1, 1, 0, 0):
    # |P.T| = 1, |P| = 2, |T| = 2, so 1 - (2 + 1) / (4 + 1) = 0.4
    logits = torch.tensor([1.0, -1.0, 1.0, -1.0]).reshape(1, 1, 2, 2) * math.log(3)
    truth = torch.tensor([1.0, 1.0, 0.0, 0.0]).reshape(1, 1, 2, 2)
    assert loss_of("dice", logits, truth) == pytest.approx(0.4)
    assert DiceLoss()(torch.sigmoid(logits), truth).item() == pytest.approx(0.4)  # the reference's, on probabilities


def test_bce_and_bce_dice():
    assert loss_of("bce") == pytest.approx(math.log(2))
    assert loss_of("bce_dice") == pytest.approx(math.log(2) + 0.5)
    assert loss_of("bce_dice", bce_weight=0.25, dice_weight=2.0) == pytest.approx(0.25 * math.log(2) + 1.0)


def test_soft_iou():
    # TP 0.5, FP 1.5, FN 0.5: 1 - (0.5 + 1) / (2.5 + 1)
    assert loss_of("soft_iou") == pytest.approx(1 - 1.5 / 3.5)


def test_tversky_and_focal_tversky():
    # TP 0.5, FP 1.5, FN 0.5, alpha 0.3, beta 0.7: TI = 1.5 / (0.5 + 0.45 + 0.35 + 1)
    index = 1.5 / 2.3
    assert loss_of("tversky") == pytest.approx(1 - index)
    assert loss_of("focal_tversky") == pytest.approx((1 - index) ** 0.75)
    # alpha = beta = 0.5 is the soft Dice (its smoothing halved with the counts)
    assert loss_of("tversky", alpha=0.5, beta=0.5, smooth=0.5) == pytest.approx(loss_of("dice"))


def test_focal():
    # every p_t = 0.5: (1 - 0.5)^2 ln 2, weighted 0.25 for the positive, 0.75 for the three negatives
    expected = 0.25 * math.log(2) * (0.25 + 3 * 0.75) / 4
    assert loss_of("focal") == pytest.approx(expected)
    # gamma 0 and alpha 0.5 is half the BCE
    logits = torch.tensor([2.0, -1.0, 0.3, -4.0]).view(1, 1, 2, 2)
    assert loss_of("focal", logits, alpha=0.5, gamma=0.0) == pytest.approx(0.5 * loss_of("bce", logits))


def test_focal_down_weights_easy_pixels():
    easy = torch.tensor([-6.0, -6.0, -6.0, 6.0]).view(1, 1, 2, 2)
    truth = torch.tensor([0.0, 0.0, 0.0, 1.0]).view(1, 1, 2, 2)
    assert loss_of("focal", easy, truth) < 1e-3 * loss_of("bce", easy, truth)


def test_lovasz_gradient_hand_computed():
    # truths [0, 0, 1] sorted by error: Jaccard losses 1/2, 2/3, 1 -> steps 1/2, 1/6, 1/3
    grad = lovasz_gradient(torch.tensor([0.0, 0.0, 1.0]))
    torch.testing.assert_close(grad, torch.tensor([0.5, 1 / 6, 1 / 3]))


def test_lovasz_hinge_hand_computed():
    # errors 1 - logit * sign = [-1, 0, 1.5]; sorted [1.5, 0, -1] with truths [0, 0, 1]
    # loss = relu([1.5, 0, -1]) . [1/2, 1/6, 1/3] = 0.75
    logits = torch.tensor([2.0, -1.0, 0.5]).view(1, 1, 1, 3)
    truth = torch.tensor([1.0, 0.0, 0.0]).view(1, 1, 1, 3)
    assert loss_of("lovasz", logits, truth) == pytest.approx(0.75)


def test_lovasz_hinge_is_zero_beyond_the_margin_and_averaged_per_image():
    truth = torch.tensor([1.0, 0.0, 0.0, 1.0]).view(1, 1, 2, 2)
    assert loss_of("lovasz", 3 * (2 * truth - 1), truth) == 0.0
    logits = torch.tensor([2.0, -1.0, 0.5]).view(1, 1, 1, 3)
    small = torch.tensor([1.0, 0.0, 0.0]).view(1, 1, 1, 3)
    perfect = 3 * (2 * small - 1)
    both = loss_of("lovasz", torch.cat([logits, perfect]), torch.cat([small, small]))
    assert both == pytest.approx((0.75 + 0.0) / 2)


def test_every_loss_is_zero_or_small_for_a_confident_right_answer_and_large_for_a_wrong_one():
    truth = torch.zeros(2, 1, 8, 8)
    truth[:, :, 2:6, 2:6] = 1
    right, wrong = 12 * (2 * truth - 1), -12 * (2 * truth - 1)
    for name in LOSSES:
        good, bad = loss_of(name, right, truth), loss_of(name, wrong, truth)
        assert good < 0.02, name
        assert bad > 0.2, name


def test_deep_supervision_weights_the_heads():
    truth = ONE_POSITIVE
    a, b = torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 2.0)
    bce = build_loss("bce")
    la, lb = bce(a, truth).item(), bce(b, truth).item()
    assert bce([a, b], truth).item() == pytest.approx((la + lb) / 2)
    weighted = build_loss("bce", deep_supervision_weights=[1, 3])
    assert weighted([a, b], truth).item() == pytest.approx((la + 3 * lb) / 4)
    with pytest.raises(ValueError, match="2 deep supervision weights for 3 outputs"):
        weighted([a, b, a], truth)


def test_losses_reject_unknown_names_and_mismatched_shapes():
    with pytest.raises(ValueError, match="unknown loss 'dise'; choose one of dice, bce"):
        build_loss("dise")
    with pytest.raises(ValueError, match="prediction shape"):
        build_loss("lovasz")(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))


def test_losses_have_gradients_in_float32_under_bfloat16_logits():
    truth = ONE_POSITIVE
    for name in LOSSES:
        logits = torch.zeros(1, 1, 2, 2, dtype=torch.bfloat16, requires_grad=True)
        value = build_loss(name)(logits, truth)
        assert value.dtype == torch.float32, name
        value.backward()
        assert torch.isfinite(logits.grad.float()).all() and logits.grad.abs().sum() > 0, name
