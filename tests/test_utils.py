import numpy as np
import pytest

from utils import (
    gray2rgb, largest_connected_component, outline_pixels, overlay, plot_dsc, plot_training_curves,
    short_patient_name,
)


def volume(*boxes, shape=(3, 6, 6)):
    out = np.zeros(shape)
    for box in boxes:
        out[box] = 1
    return out


def test_largest_connected_component_is_3d_and_face_connected():
    pred = np.zeros((3, 5, 5), dtype=bool)
    pred[0, 0, 0:2] = True  # 2 voxels
    pred[1, 0, 0] = True  # touches the first through a face across slices: 3 voxels
    pred[2, 4, 4] = True
    pred[1, 3, 3] = pred[2, 4, 3] = True  # diagonal neighbours only: separate components of 1
    kept = largest_connected_component(pred)
    assert kept.sum() == 3 and kept[0, 0, 0] and kept[1, 0, 0] and not kept[2, 4, 4]
    assert not largest_connected_component(np.zeros((2, 3, 3))).any()


def test_outline_is_the_inner_border_of_the_mask():
    mask = np.zeros((6, 6))
    mask[1:5, 1:5] = 1
    expected = mask.copy()
    expected[2:4, 2:4] = 0
    np.testing.assert_array_equal(outline_pixels(mask), expected.astype(bool))


def test_outline_does_not_treat_the_image_edge_as_background():
    mask = np.zeros((4, 4))
    mask[:, :2] = 1  # touches the top, bottom and left edges
    expected = np.zeros((4, 4), dtype=bool)
    expected[:, 1] = True
    np.testing.assert_array_equal(outline_pixels(mask), expected)


def test_overlay_draws_prediction_red_and_truth_green_on_top():
    flair = np.linspace(-1, 1, 36).reshape(6, 6)
    pred = np.zeros((6, 6))
    pred[0:3, 0:3] = 1
    true = np.zeros((6, 6))
    true[2:6, 2:6] = 1
    image = overlay(flair, pred, true)
    assert image.dtype == np.uint8 and image.shape == (6, 6, 3)
    assert tuple(image[0, 2]) == (255, 0, 0)
    assert tuple(image[2, 5]) == (0, 255, 0)
    assert tuple(image[2, 2]) == (0, 255, 0)  # both outlines: truth drawn last
    for inside in ((3, 3), (5, 5)):  # (5, 5): the image edge is not background
        assert image[inside][0] == image[inside][1] == image[inside][2]


def test_gray2rgb_scales_min_to_0_and_max_to_255():
    image = gray2rgb(np.array([[-2.0, 0.0], [1.0, 2.0]]))
    assert image[..., 0].tolist() == [[0, 128], [191, 255]]
    assert gray2rgb(np.full((2, 2), 3.0)).max() == 0


def test_dsc_plot_has_sorted_bars_and_red_mean_green_median_lines():
    figure = plot_dsc({"TCGA_CS_4941_19960909": 0.9, "TCGA_DU_5851_19950428": 0.5, "TCGA_HT_7616_19940813": 0.6},
                      "DSC per patient at the original geometry")
    axes = figure.axes[0]
    assert axes.get_xlabel() == "DSC per patient at the original geometry"
    assert [bar.get_width() for bar in axes.patches] == [0.5, 0.6, 0.9]
    assert [label.get_text() for label in axes.get_yticklabels()] == ["DU_5851", "HT_7616", "CS_4941"]
    mean_line, median_line = axes.lines  # mean 2.0 / 3 and median 0.6: told apart
    assert mean_line.get_color() == "tomato" and mean_line.get_xdata()[0] == pytest.approx(2.0 / 3)
    assert median_line.get_color() == "forestgreen" and median_line.get_xdata()[0] == pytest.approx(0.6)


def test_short_patient_name_and_training_curves():
    assert short_patient_name("TCGA_CS_4941_19960909") == "CS_4941"
    history = [dict(epoch=1, loss=0.5, val_loss=0.6, val_dsc=0.4), dict(epoch=2, loss=0.3, val_loss=0.4, val_dsc=0.7)]
    figure = plot_training_curves(history)
    assert list(figure.axes[1].lines[0].get_ydata()) == [0.4, 0.7] and len(figure.axes[1].lines) == 1
    assert figure.axes[0].get_ylabel() == "dice loss"
    native = [dict(entry, val_dsc_native=value) for entry, value in zip(history, (0.45, 0.72))]
    figure = plot_training_curves(native, "bce_dice")
    assert figure.axes[0].get_ylabel() == "bce_dice loss"  # not "Dice loss" for every loss
    assert list(figure.axes[1].lines[1].get_ydata()) == [0.45, 0.72]
