"""The device data path: same sampling and augmentation distribution as the reference path."""

import math

import numpy as np
import pytest
import torch

import batches
import dataset
import parameters
import runtime
import train
import transform
from device_data import DeviceAugment, DeviceSlices, affine_matrices, affine_parameters, drop_sequences, warp


def batch(size=32):
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, size, size, generator=generator)
    masks = torch.zeros(2, 1, size, size)
    masks[:, :, 8:20, 4:12] = 1
    return images, masks


def transformed(zoom, degrees, flip):
    images, masks = batch()
    n = images.shape[0]
    theta = affine_matrices(
        torch.full((n,), float(zoom)), torch.full((n,), math.radians(degrees)), torch.full((n,), flip)
    )
    return (images, masks), warp(images, masks, theta)


def test_identity_parameters_leave_the_batch_unchanged():
    (images, masks), (out_images, out_masks) = transformed(1.0, 0.0, False)
    torch.testing.assert_close(out_images, images, atol=1e-5, rtol=0)
    torch.testing.assert_close(out_masks, masks)


def test_flip_mirrors_left_right():
    (images, masks), (out_images, out_masks) = transformed(1.0, 0.0, True)
    torch.testing.assert_close(out_images, images.flip(-1), atol=1e-5, rtol=0)
    torch.testing.assert_close(out_masks, masks.flip(-1))


def test_quarter_turn_is_a_rot90():
    (images, masks), (out_images, out_masks) = transformed(1.0, 90.0, False)
    candidates = [images.rot90(k, dims=(-2, -1)) for k in (1, 3)]
    assert any(torch.allclose(out_images, c, atol=1e-4) for c in candidates)


def test_zoom_matches_the_reference_scale_transform():
    images, masks = batch()
    (_, _), (_, out_masks) = transformed(1.05, 0.0, False)
    scale = transform.Scale(0.05)
    np.random.seed(0)
    original = np.random.uniform
    np.random.uniform = lambda low, high: 1.05
    try:
        _, cpu_mask = scale((images[0].permute(1, 2, 0).numpy(), masks[0].permute(1, 2, 0).numpy()))
    finally:
        np.random.uniform = original
    ours = out_masks[0, 0].numpy() > 0.5
    theirs = cpu_mask[..., 0] > 0.5
    iou = (ours & theirs).sum() / (ours | theirs).sum()
    assert iou > 0.85
    assert abs(int(ours.sum()) - int(theirs.sum())) <= 16


def test_parameters_follow_the_reference_distribution():
    generator = torch.Generator().manual_seed(1)
    zoom, radians, flip = affine_parameters(20000, 0.05, 15, 0.5, generator, torch.device("cpu"))
    assert 0.95 <= zoom.min() and zoom.max() <= 1.05 and abs(zoom.mean().item() - 1) < 0.002
    degrees = radians * 180 / math.pi
    assert -15 <= degrees.min() and degrees.max() <= 15 and abs(degrees.mean().item()) < 0.3
    assert abs(flip.float().mean().item() - 0.5) < 0.02


def test_augmented_masks_stay_binary():
    images, masks = batch()
    out_images, out_masks = DeviceAugment()(images, masks, torch.Generator().manual_seed(2))
    assert set(out_masks.unique().tolist()) <= {0.0, 1.0}
    assert out_images.shape == images.shape


def test_sequence_dropout_on_the_device_matches_the_cpu_transform():
    generator = torch.Generator().manual_seed(3)
    images = torch.arange(3.0).view(1, 3, 1, 1) + torch.rand(3000, 3, 4, 4, generator=generator)
    out = drop_sequences(images, 1.0, generator)
    torch.testing.assert_close(out[:, 1], images[:, 1])
    pre = (out[:, 0] == images[:, 1]).flatten(1).all(1)
    post = (out[:, 2] == images[:, 1]).flatten(1).all(1)
    assert ((out[:, 0] == images[:, 0]).flatten(1).all(1) == ~pre).all()  # a channel is copied whole or kept
    assert ((out[:, 2] == images[:, 2]).flatten(1).all(1) == ~post).all()
    for share in ((pre & ~post).float().mean(), (post & ~pre).float().mean(), (pre & post).float().mean()):
        assert abs(share.item() - 1 / 3) < 0.04  # pre, post or both, equally likely; never neither
    assert not (~pre & ~post).any()
    dropped = drop_sequences(images, 0.25, generator).ne(images).flatten(1).any(1).float().mean().item()
    assert abs(dropped - 0.25) < 0.03


def test_device_augmentation_without_sequence_dropout_draws_as_before():
    images, masks = batch()
    generator = torch.Generator().manual_seed(4)
    plain = DeviceAugment()(images, masks, generator)
    # off, it draws the warp's numbers and nothing more: the generator is where the warp alone leaves it
    alone = torch.Generator().manual_seed(4)
    zoom, radians, flip = affine_parameters(len(images), 0.05, 15, 0.5, alone, images.device)
    torch.testing.assert_close(plain, warp(images, masks, affine_matrices(zoom, radians, flip)), rtol=0, atol=0)
    assert torch.equal(torch.rand(3, generator=generator), torch.rand(3, generator=alone))
    on_images, on_masks = DeviceAugment(sequence_dropout=1.0)(images, masks, torch.Generator().manual_seed(4))
    torch.testing.assert_close((on_images[:, 1], on_masks), (plain[0][:, 1], plain[1]), rtol=0, atol=0)
    for out in on_images:  # the same warp, then each slice's pre-contrast or post-contrast (or both) is its FLAIR
        assert torch.equal(out[0], out[1]) or torch.equal(out[2], out[1])


@pytest.mark.parametrize("context", [0, 1])
@pytest.mark.parametrize("intensity", [False, True])
@pytest.mark.parametrize("pipeline", ["reference", "device"])
def test_both_data_paths_train_on_slices_with_dropped_sequences(phantom_dir, tmp_path, pipeline, intensity, context):
    # with the intensity step too, the copies stay exact: it comes before them in both paths; with 2.5-D context
    # each stacked slice loses the same sequences (one scan missing), each copied from its own FLAIR
    params = parameters.settings(train.DEFAULTS, image_size=16, batch_size=4, validation_cases=3, workers=0,
                                 cache_dir=str(tmp_path), sequence_dropout=1.0, aug_scale=0.0, aug_angle=0.0,
                                 flip_prob=0.0, intensity_augmentation=intensity, context_slices=context)
    train_set, valid_set = batches.datasets(params, phantom_dir, augment_on_cpu=pipeline == "reference")
    images, _ = next(iter(batches.Batches(pipeline, train_set, valid_set, params, torch.device("cpu")).train()))
    assert images.shape[1] == 3 * (2 * context + 1)
    for image in images:  # every slice: its pre-contrast or post-contrast (or both) is its FLAIR
        copied = {tuple(torch.allclose(stack[channel], stack[1], atol=1e-6) for channel in (0, 2))
                  for stack in image.unflatten(0, (-1, 3))}
        assert len(copied) == 1 and copied != {(False, False)}, copied
    validation, _ = next(iter(batches.Batches(pipeline, train_set, valid_set, params, torch.device("cpu"))
                              .validation()))
    assert not any(torch.allclose(image[0], image[1]) for image in validation)  # validation is never augmented


def test_both_paths_copy_each_stacked_slices_own_flair():
    # nine distinct channels: slices s-1, s, s+1, each (pre-contrast, FLAIR, post-contrast)
    image = np.arange(9.0) + np.arange(16.0).reshape(4, 4, 1) * 10
    np.random.seed(0)
    on_cpu = [transform.SequenceDropout(1.0, slices=3)((image, None))[0] for _ in range(60)]
    original = torch.from_numpy(image.transpose(2, 0, 1))
    on_device = drop_sequences(original.expand(60, -1, -1, -1), 1.0, torch.Generator().manual_seed(0), slices=3)
    patterns = set()
    for out in [torch.from_numpy(out.transpose(2, 0, 1)) for out in on_cpu] + list(on_device):
        torch.testing.assert_close(out[1::3], original[1::3], rtol=0, atol=0)  # the FLAIRs never change
        pre, post = torch.equal(out[0::3], original[1::3]), torch.equal(out[2::3], original[1::3])
        assert pre or torch.equal(out[0::3], original[0::3])  # all three slices' copies, or none
        assert post or torch.equal(out[2::3], original[2::3])
        patterns.add((pre, post))
    assert patterns == {(True, False), (False, True), (True, True)}


@pytest.mark.parametrize("pipeline", ["reference", "device"])
def test_both_data_paths_draw_the_intensity_factors_a_sequence_for_the_stacked_slices(phantom_dir, tmp_path,
                                                                                       pipeline):
    # 2.5-D input: a slice and its neighbours are one scan, so each sequence draws one factor for all three; a
    # slice whose neighbours are copies of it (the volume's ends repeat, preprocessing.with_context) keeps them
    # copies under every intensity step, in both paths
    params = parameters.settings(train.DEFAULTS, image_size=16, batch_size=4, validation_cases=3, workers=0,
                                 cache_dir=str(tmp_path), context_slices=1, intensity_augmentation=True,
                                 aug_scale=0.0, aug_angle=0.0, flip_prob=0.0)
    train_set, valid_set = batches.datasets(params, phantom_dir, augment_on_cpu=pipeline == "reference")
    stacked = train_set.volumes[0][0][0]  # the first slice: its lower neighbour is itself
    assert np.array_equal(stacked[..., 0:3], stacked[..., 3:6])
    original = torch.from_numpy(np.ascontiguousarray(stacked.transpose(2, 0, 1)))
    copies = 2000
    if pipeline == "reference":
        np.random.seed(5)
        mask = np.zeros((16, 16, 1), dtype=np.float32)
        out = np.stack([train_set.transform((stacked, mask))[0] for _ in range(copies)]).transpose(0, 3, 1, 2)
        out = torch.from_numpy(np.ascontiguousarray(out))
    else:
        augment = batches.Batches(pipeline, train_set, valid_set, params, torch.device("cpu")).augment
        out, _ = augment(original.float().expand(copies, -1, -1, -1).clone(), torch.zeros(copies, 1, 16, 16),
                         torch.Generator().manual_seed(5))
    assert (out != original).flatten(1).any(1).float().mean() > 0.3  # the steps ran
    torch.testing.assert_close(out[:, 0:3], out[:, 3:6])


def test_sampling_matches_the_reference_patient_then_slice_weights(phantom_dir):
    data = dataset.BrainSegmentationDataset(
        phantom_dir, subset="train", image_size=16, validation_cases=3, cache_dir=None, workers=1, progress=False
    )
    slices = DeviceSlices(data, "cpu")
    assert slices.images.dtype == torch.float16 and slices.images.shape == (30, 3, 16, 16)
    counts = torch.zeros(len(slices))
    generator = torch.Generator().manual_seed(3)
    for _ in range(50):
        counts += torch.bincount(torch.multinomial(slices.probabilities, 2000, True, generator=generator),
                                 minlength=len(slices))
    frequency = (counts / counts.sum()).numpy()
    expected = np.concatenate(data.slice_weights) / len(data.patients)
    np.testing.assert_allclose(frequency, expected, atol=0.004)
    per_patient = frequency.reshape(5, 6).sum(axis=1)
    np.testing.assert_allclose(per_patient, 0.2, atol=0.005)


def test_device_pipeline_trains_on_cpu_too(phantom_dir, tmp_path):
    results = train.train(
        data_path=phantom_dir, epochs=4, data_pipeline="device", image_size=32, init_features=4, batch_size=4,
        workers=0, validation_cases=3, lr=3e-3, vis_images=4, vis_freq=1, aug_scale=None, aug_angle=None,
        logs_dir=tmp_path / "l", weights_dir=tmp_path / "w", cache_dir=tmp_path / "c",
    )
    assert results["speed_options"]["data_pipeline"] == "device"
    losses = [entry["loss"] for entry in results["history"]]
    assert losses[-1] < losses[0]


def test_unknown_speed_options_are_refused_before_any_work():
    with pytest.raises(parameters.ParameterError, match="data_pipeline='gpu'.*auto, reference, device"):
        train.train(data_pipeline="gpu")
    with pytest.raises(parameters.ParameterError, match="amp='fp8': use one of auto, bf16, fp16, off, native"):
        train.train(amp="fp8")
    speed = runtime.SpeedOptions(train.DEFAULTS, torch.device("cpu"))
    assert (speed.pipeline, speed.amp_dtype, speed.channels_last) == ("reference", None, False)


def test_intensity_augmentation_on_the_device_matches_the_cpu_transform():
    """The same slice many times through each path, the geometry off: the same share changed, and the same spread
    of its FLAIR's brightness (both paths call transform.adjust_intensity; their draws come from two generators)."""
    generator = torch.Generator().manual_seed(6)
    image = torch.rand(3, 8, 8, generator=generator) + torch.tensor([0.0, 1.0, 2.0]).view(3, 1, 1)
    copies = 4000
    device_out, _ = DeviceAugment(0.0, 0.0, 0.0, intensity=True)(image.expand(copies, -1, -1, -1).clone(),
                                                                 torch.zeros(copies, 1, 8, 8), generator)
    np.random.seed(6)
    cpu = transform.transforms(intensity=True)
    pixels = image.numpy().transpose(1, 2, 0)
    cpu_out = torch.stack([torch.from_numpy(cpu((pixels, None))[0].transpose(2, 0, 1).copy())
                           for _ in range(copies)])
    for out in (device_out, cpu_out):
        changed = (out != image).flatten(1).any(1).float().mean().item()
        assert abs(changed - (1 - 0.85 * 0.85 * 0.7)) < 0.03
    for statistic in (lambda out: out[:, 1].mean(), lambda out: out[:, 1].flatten(1).amax(1).std()):
        assert abs(statistic(device_out) - statistic(cpu_out)) < 0.02
