import numpy as np
import pytest
import torch

import transform
from logger import Logger
from loss import DiceLoss
from unet import UNet, probabilities

BLOCKS = {
    "encoder1": ("enc1", 3, 32), "encoder2": ("enc2", 32, 64), "encoder3": ("enc3", 64, 128),
    "encoder4": ("enc4", 128, 256), "bottleneck": ("bottleneck", 256, 512), "decoder4": ("dec4", 512, 256),
    "decoder3": ("dec3", 256, 128), "decoder2": ("dec2", 128, 64), "decoder1": ("dec1", 64, 32),
}


def reference_state_dict_shapes():
    """The key names and shapes of the reference's unet.pt (init_features=32), written out by hand."""
    shapes = {}
    for module, (name, c_in, c_out) in BLOCKS.items():
        for index, conv_in in ((1, c_in), (2, c_out)):
            shapes[f"{module}.{name}conv{index}.weight"] = (c_out, conv_in, 3, 3)
            for stat in ("weight", "bias", "running_mean", "running_var"):
                shapes[f"{module}.{name}norm{index}.{stat}"] = (c_out,)
            shapes[f"{module}.{name}norm{index}.num_batches_tracked"] = ()
    for level, c_out in ((4, 256), (3, 128), (2, 64), (1, 32)):
        shapes[f"upconv{level}.weight"] = (c_out * 2, c_out, 2, 2)
        shapes[f"upconv{level}.bias"] = (c_out,)
    shapes["conv.weight"], shapes["conv.bias"] = (1, 32, 1, 1), (1,)
    return shapes


def test_unet_state_dict_matches_the_reference_keys_and_shapes():
    state = UNet().state_dict()
    expected = reference_state_dict_shapes()
    assert set(state) == set(expected)
    assert {key: tuple(value.shape) for key, value in state.items()} == expected
    UNet().load_state_dict({key: torch.zeros(shape) for key, shape in expected.items()}, strict=True)


def test_unet_outputs_logits_and_probabilities_gives_the_sigmoid_of_the_input_size():
    torch.manual_seed(0)
    model = UNet(init_features=4).eval()
    x = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        logits, probs = model(x), probabilities(model, x)
    assert logits.shape == probs.shape == (2, 1, 32, 48)
    assert logits.min() < 0 < logits.max()
    assert probs.min() > 0 and probs.max() < 1
    with torch.no_grad():  # the last layer's bias moves the logits, and so the probabilities, by its value
        model.conv.bias += 100.0
        assert probabilities(model, x).min() == 1.0


def test_dice_loss_hand_computed():
    pred = torch.tensor([1.0, 0.0, 1.0, 0.0]).view(1, 1, 2, 2)
    true = torch.tensor([1.0, 1.0, 0.0, 0.0]).view(1, 1, 2, 2)
    assert DiceLoss()(pred, true).item() == pytest.approx(1 - (2 * 1 + 1) / (2 + 2 + 1))
    half = torch.full((2, 1, 2, 2), 0.5)
    assert DiceLoss()(half, torch.zeros_like(half)).item() == pytest.approx(1 - 1 / (4 + 1))
    assert DiceLoss()(true, true).item() == pytest.approx(0.0)


def test_dice_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="prediction shape"):
        DiceLoss()(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))


def sample(size=32):
    image = np.random.default_rng(0).normal(size=(size, size, 3))
    mask = np.zeros((size, size, 1))
    mask[8:20, 4:12] = 1
    return image, mask


def test_transforms_keep_shapes_and_binary_masks():
    np.random.seed(0)
    pipeline = transform.transforms(scale=0.05, angle=15, flip_prob=0.5)
    for _ in range(10):
        image, mask = pipeline(sample())
        assert image.shape == (32, 32, 3) and mask.shape == (32, 32, 1)
        assert set(np.unique(mask)) <= {0.0, 1.0}


def test_identity_settings_leave_the_sample_unchanged():
    image, mask = sample()
    out_image, out_mask = transform.transforms(scale=0.0, angle=0.0, flip_prob=0.0)((image, mask))
    np.testing.assert_allclose(out_image, image, atol=1e-12)
    np.testing.assert_array_equal(out_mask, mask)


def test_flip_mirrors_left_right():
    image, mask = sample()
    out_image, out_mask = transform.HorizontalFlip(1.0)((image, mask))
    np.testing.assert_array_equal(out_image, image[:, ::-1])
    assert out_mask[8:20, 20:28].all() and not out_mask[8:20, 4:12].any()


def distinct_channels(size=8):
    """An image whose three channels differ everywhere: pre-contrast 1, FLAIR 2, post-contrast 3 (+ a ramp)."""
    ramp = np.arange(size * size, dtype=np.float64).reshape(size, size, 1)
    return ramp + np.array([1.0, 2.0, 3.0]), np.zeros((size, size, 1))


def test_sequence_dropout_copies_the_flair_into_one_or_both_contrasts():
    np.random.seed(0)
    image, mask = distinct_channels()
    drop = transform.SequenceDropout(1.0)
    patterns = []
    for _ in range(300):
        out, out_mask = drop((image, mask))
        np.testing.assert_array_equal(out[..., 1], image[..., 1])  # the FLAIR itself never changes
        assert out_mask is mask
        copied = tuple(np.array_equal(out[..., channel], image[..., 1]) for channel in (0, 2))
        for channel, was_copied in zip((0, 2), copied):  # a contrast is the FLAIR whole, or itself whole
            assert was_copied or np.array_equal(out[..., channel], image[..., channel])
        patterns.append(copied)
    counts = {pattern: patterns.count(pattern) for pattern in set(patterns)}
    assert set(counts) == {(True, False), (False, True), (True, True)}  # pre, post, both; never neither
    assert all(70 <= count <= 130 for count in counts.values())  # about a third each
    np.testing.assert_array_equal(image[..., 0], distinct_channels()[0][..., 0])  # the input is not modified
    kept = sum(transform.SequenceDropout(0.25)((image, mask))[0] is image for _ in range(2000))
    assert 1400 <= kept <= 1600  # 75% of slices pass untouched
    # off (the default): the reference's three steps, the same slice and nothing more drawn from the generator
    np.random.seed(7)
    off = transform.transforms(0.05, 15, 0.5)((image, mask))[0]
    after_off = np.random.random()
    np.random.seed(7)
    reference = transform.HorizontalFlip(0.5)(transform.Rotate(15)(transform.Scale(0.05)((image, mask))))[0]
    np.testing.assert_array_equal(off, reference)
    assert np.random.random() == after_off
    # on, in the pipeline: about a fifth of the slices get a contrast copied from the FLAIR
    pipeline = transform.transforms(sequence_dropout=0.2)
    copied = sum(np.array_equal(out[..., 0], out[..., 1]) or np.array_equal(out[..., 2], out[..., 1])
                 for out in (pipeline((image, mask))[0] for _ in range(1000)))
    assert 160 <= copied <= 240


def test_scale_draws_within_range_and_zooms_about_the_centre(monkeypatch):
    drawn = {}
    monkeypatch.setattr(np.random, "uniform", lambda low, high: drawn.setdefault("range", (low, high)) and 2.0)
    image, mask = transform.Scale(0.05)(sample())
    assert drawn["range"] == (0.95, 1.05)
    assert mask.shape == (32, 32, 1)
    # 2x zoom about the centre moves rows 8..19 to rows 0..23
    assert mask[0:24, 0:8].all() and not mask[24:, :].any()


def test_logger_writes_scalars_and_image_lists(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = Logger(tmp_path)
    logger.scalar_summary("val_dsc", 0.75, 3)
    logger.image_list_summary("image/0", [np.zeros((8, 8, 3), np.uint8), np.full((8, 8, 3), 255, np.uint8)], 3)
    logger.close()
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert [(s.step, s.value) for s in events.Scalars("val_dsc")] == [(3, 0.75)]
    assert sorted(events.Tags()["images"]) == ["image/0/0", "image/0/1"]


def test_intensity_steps_give_the_hand_computed_channels():
    ramp = torch.tensor([0.0, 2.0, 4.0, 6.0]).view(1, 1, 2, 2)
    images = torch.cat([ramp, ramp], 1)  # two channels alike, a factor each
    ones = torch.ones(1, 2)
    # brightness x2 on channel 0; a factor of 1 passes channel 1 bit for bit
    out = transform.adjust_intensity(images, torch.tensor([[2.0, 1.0]]), ones, ones)
    assert out[0, 0].flatten().tolist() == [0.0, 4.0, 8.0, 12.0] and torch.equal(out[0, 1], images[0, 1])
    # contrast about the mean 3: x0.5 pulls in, x2 pushes out and is clipped to the old range [0, 6]
    out = transform.adjust_intensity(images, ones, torch.tensor([[0.5, 2.0]]), ones)
    assert out[0, 0].flatten().tolist() == [1.5, 2.5, 3.5, 4.5] and out[0, 1].flatten().tolist() == [0, 1, 5, 6]
    # gamma 2 on [0, 4]: (x / 4)^2 * 4 = 0, 1, 4, 9 (mean 3.5, std sqrt(12.25)), then moved back to the old
    # mean 3 and std sqrt(5)
    out = transform.adjust_intensity(images, ones, ones, torch.tensor([[2.0, 1.0]]))
    expected = [(value - 3.5) / 12.25**0.5 * 5**0.5 + 3 for value in (0.0, 1.0, 4.0, 9.0)]
    torch.testing.assert_close(out[0, 0].flatten(), torch.tensor(expected))
    assert torch.equal(out[0, 1], images[0, 1])
    # a flat channel (all background) stays flat under every step, without a division by zero
    flat = torch.zeros(1, 1, 2, 2)
    factors = torch.tensor([[1.2]]), torch.tensor([[0.8]]), torch.tensor([[1.4]])
    assert torch.equal(transform.adjust_intensity(flat, *factors), flat)


def test_intensity_steps_treat_a_sequence_in_every_stacked_slice_as_one_scan():
    # 2.5-D input: two sequences x three stacked slices (slice order, a slice's sequences together), flat slices
    # of 0, 2 and 4 for sequence 0 and of 1 for sequence 1
    values = [0.0, 1.0, 2.0, 1.0, 4.0, 1.0]
    images = torch.tensor(values).view(1, 6, 1, 1).expand(1, 6, 2, 2).clone()
    ones = torch.ones(1, 2)
    # one brightness factor a sequence, in every slice: channels 0, 2 and 4 doubled, 1, 3 and 5 bit for bit
    out = transform.adjust_intensity(images, torch.tensor([[2.0, 1.0]]), ones, ones)
    assert out[0, :, 0, 0].tolist() == [0.0, 1.0, 4.0, 1.0, 8.0, 1.0] and torch.equal(out[0, 1::2], images[0, 1::2])
    # contrast about the sequence's mean over its three slices, 2: x0.5 gives 1, 2, 3 (each slice alone is flat,
    # and would not move)
    out = transform.adjust_intensity(images, ones, torch.tensor([[0.5, 1.0]]), ones)
    assert out[0, 0::2, 0, 0].tolist() == [1.0, 2.0, 3.0] and torch.equal(out[0, 1::2], images[0, 1::2])
    # gamma 2 over the sequence's range [0, 4]: 0, 1, 4 (mean 5 / 3, std sqrt(26 / 9)), moved back to the old
    # mean 2 and std sqrt(8 / 3)
    out = transform.adjust_intensity(images, ones, ones, torch.tensor([[2.0, 1.0]]))
    expected = [(value - 5 / 3) / (26 / 9) ** 0.5 * (8 / 3) ** 0.5 + 2 for value in (0.0, 1.0, 4.0)]
    torch.testing.assert_close(out[0, 0::2, 0, 0], torch.tensor(expected))
    with pytest.raises(ValueError, match="5 channels are no stack of slices of 2 sequences each"):
        transform.adjust_intensity(images[:, :5], ones, ones, ones)


def test_intensity_factors_follow_nnunets_probabilities_and_ranges():
    brightness, contrast, gamma = transform.intensity_factors(20000, 3, torch.Generator().manual_seed(0))
    for factors, (probability, (low, high)) in zip((brightness, contrast, gamma),
                                                   (transform.BRIGHTNESS, transform.CONTRAST, transform.GAMMA)):
        applied = factors != 1
        assert (applied.all(1) == applied.any(1)).all()  # a step takes a slice whole, each channel a factor
        assert abs(applied[:, 0].float().mean().item() - probability) < 0.01
        drawn = factors[applied]
        assert low <= drawn.min() and drawn.max() <= high
        assert abs((drawn < 1).float().mean().item() - 0.5) < 0.02  # half below 1, half above
        assert (factors[applied.all(1)][:, 0] != factors[applied.all(1)][:, 1]).all()  # channels drawn apart
    # the three steps draw independently: about 1 - 0.85 * 0.85 * 0.7 of the slices change
    changed = ((brightness != 1) | (contrast != 1) | (gamma != 1)).any(1).float().mean().item()
    assert abs(changed - (1 - 0.85 * 0.85 * 0.7)) < 0.015
