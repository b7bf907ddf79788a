"""Training augmentation as in the reference (scale 1+-0.05, rotation +-15 degrees,
horizontal flip p=0.5), on (image (H, W, C), mask (H, W, 1)) numpy pairs,
with no torchvision needed. Randomness comes from numpy's global generator,
which the training loader seeds per worker and per epoch.

Two steps beyond the reference, off by default: nnU-Net's intensity augmentation
(random_intensity: intensity_factors, adjust_intensity on a batch tensor, the one owner of its
draws and arithmetic, which the device path (device_data.DeviceAugment) calls
too) and sequence dropout."""

import numpy as np
import torch
from skimage.transform import rescale, rotate

from layouts.kaggle_3m import FLAIR_CHANNEL, POST_CONTRAST, PRE_CONTRAST


class Compose:
    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, sample):
        for transform in self.transforms:
            sample = transform(sample)
        return sample


def transforms(scale=None, angle=None, flip_prob=None, sequence_dropout=0.0, intensity=False, slices=1):
    """The reference's augmentation pipeline; a None argument leaves that step out. intensity adds Intensity (on
    images that stack slices slices in their channels: 2k + 1 with context_slices=k) and
    sequence_dropout > 0 adds SequenceDropout after the reference's steps (neither in the reference), in the
    device path's order: the geometry, then the intensities, then the copies of the FLAIR (a copy after the
    intensity step stays an exact copy, as the dataset's are)."""
    steps = []
    if scale is not None:
        steps.append(Scale(scale))
    if angle is not None:
        steps.append(Rotate(angle))
    if flip_prob is not None:
        steps.append(HorizontalFlip(flip_prob))
    if intensity:
        steps.append(Intensity(slices))
    if sequence_dropout:
        steps.append(SequenceDropout(sequence_dropout, slices))
    return Compose(steps)


class Scale:
    """Zoom by a factor drawn from U(1 - scale, 1 + scale), then centre-crop or zero-pad back."""

    def __init__(self, scale):
        self.scale = scale

    def __call__(self, sample):
        image, mask = sample
        size = image.shape[0]
        factor = np.random.uniform(low=1.0 - self.scale, high=1.0 + self.scale)
        common = dict(channel_axis=-1, preserve_range=True, mode="constant", anti_aliasing=False)
        image = rescale(image, factor, **common)
        mask = rescale(mask, factor, order=0, **common)
        if factor < 1.0:
            diff = (size - image.shape[0]) / 2.0
            pad = ((int(np.floor(diff)), int(np.ceil(diff))),) * 2 + ((0, 0),)
            image, mask = np.pad(image, pad), np.pad(mask, pad)
        else:
            start = (image.shape[0] - size) // 2
            image = image[start : start + size, start : start + size]
            mask = mask[start : start + size, start : start + size]
        return image, mask


class Rotate:
    """Rotate about the centre by an angle drawn from U(-angle, angle) degrees."""

    def __init__(self, angle):
        self.angle = angle

    def __call__(self, sample):
        image, mask = sample
        angle = np.random.uniform(low=-self.angle, high=self.angle)
        image = rotate(image, angle, resize=False, preserve_range=True, mode="constant")
        mask = rotate(mask, angle, resize=False, order=0, preserve_range=True, mode="constant")
        return image, mask


class HorizontalFlip:
    """Mirror left-right with probability flip_prob."""

    def __init__(self, flip_prob):
        self.flip_prob = flip_prob

    def __call__(self, sample):
        image, mask = sample
        if np.random.rand() > self.flip_prob:
            return image, mask
        return np.fliplr(image).copy(), np.fliplr(mask).copy()


class SequenceDropout:
    """With probability prob, the slice's pre-contrast, post-contrast or both (one of the three, equally likely)
    become copies of its FLAIR: the dataset's own filling of a missing sequence, which 10 of its 110 patients
    have (results/missing-sequences-cpu.md). Channels: pre-contrast, FLAIR, post-contrast, for each of slices
    stacked slices (2.5-D context, preprocessing.with_context's order), all of which lose the same sequences."""

    def __init__(self, prob, slices=1):
        self.prob, self.slices = prob, slices

    def __call__(self, sample):
        image, mask = sample
        if np.random.rand() >= self.prob:
            return image, mask
        pattern = np.random.randint(3)  # 0: pre-contrast, 1: post-contrast, 2: both
        image = image.copy()
        firsts = np.arange(self.slices) * (image.shape[-1] // self.slices)  # each stacked slice's first channel
        if pattern != 1:
            image[..., firsts + PRE_CONTRAST] = image[..., firsts + FLAIR_CHANNEL]
        if pattern != 0:
            image[..., firsts + POST_CONTRAST] = image[..., firsts + FLAIR_CHANNEL]
        return image, mask


# nnU-Net's intensity augmentation (Isensee et al. 2021, its default training transforms), for abnormalities
# whose FLAIR is not bright (results/failure-analysis-cpu.md): each step (probability a slice, factor range)
# draws a factor of its own for every channel (every sequence, with 2.5-D context), half the time below 1 and half
# above (nnU-Net's BGContrast)
BRIGHTNESS = (0.15, (0.75, 1.25))  # the channel times the factor
CONTRAST = (0.15, (0.75, 1.25))  # the channel's spread about its mean times the factor, within its old range
GAMMA = (0.3, (0.7, 1.5))  # the channel, scaled to [0, 1], to the power of the factor; its mean and std kept


def intensity_factors(count, channels, generator=None, device=None):
    """(brightness, contrast, gamma) factors, each (count, channels): 1 for a slice its step passes over."""

    def draw(probability, low, high):
        applied = torch.rand(count, 1, generator=generator, device=device) < probability
        below = torch.rand(count, channels, generator=generator, device=device) < 0.5
        uniform = torch.rand(count, channels, generator=generator, device=device)
        factor = torch.where(below, low + (1.0 - low) * uniform, 1.0 + (high - 1.0) * uniform)
        return torch.where(applied, factor, torch.ones_like(factor))

    return tuple(draw(probability, *limits) for probability, limits in (BRIGHTNESS, CONTRAST, GAMMA))


def adjust_intensity(images, brightness, contrast, gamma):
    """images (N, C, H, W) after brightness, contrast and gamma, factors (N, S) as intensity_factors draws them, S
    the sequences of one slice: C is S times the slices stacked (2.5-D context, preprocessing.with_context's
    order), and a sequence's factor and statistics span it in every stacked slice, one scan drawn once, as
    nnU-Net's span a channel of a 3-D patch. A sequence whose factor is 1 passes exactly as it was."""
    count, channels, height, width = images.shape
    sequences = brightness.shape[1]
    if channels % sequences:
        raise ValueError(f"{channels} channels are no stack of slices of {sequences} sequences each")
    # (N, S, slices, H, W): a sequence's channels side by side
    images = images.reshape(count, channels // sequences, sequences, height, width).transpose(1, 2)

    def per_sequence(values):
        return values[:, :, None, None, None]

    def statistics(values):
        flat = values.flatten(2)
        return tuple(per_sequence(stat) for stat in (flat.mean(2), flat.std(2, correction=0), flat.amin(2),
                                                     flat.amax(2)))

    brightness, contrast, gamma = (per_sequence(factors.to(images.dtype)) for factors in (brightness, contrast, gamma))
    images = torch.where(brightness == 1, images, images * brightness)
    mean, _, low, high = statistics(images)
    images = torch.where(contrast == 1, images, torch.clamp((images - mean) * contrast + mean, low, high))
    mean, std, low, high = statistics(images)
    spread = high - low
    powered = ((images - low) / spread.clamp_min(1e-7)).pow(gamma) * spread + low
    powered_mean, powered_std, _, _ = statistics(powered)
    powered = (powered - powered_mean) / powered_std.clamp_min(1e-7) * std + mean
    images = torch.where(gamma == 1, images, powered)
    return images.transpose(1, 2).reshape(count, channels, height, width)


def random_intensity(images, slices=1, generator=None):
    """images (N, C, H, W), each slice (with slices - 1 neighbours stacked in its channels) through its own draw
    of intensity_factors and adjust_intensity: the step both data paths take."""
    factors = intensity_factors(images.shape[0], images.shape[1] // slices, generator, images.device)
    return adjust_intensity(images, *factors)


class Intensity:
    """intensity_factors and adjust_intensity on one slice (with its stacked neighbours: slices), drawn from
    numpy's global generator (through a torch generator it seeds) like the steps above."""

    def __init__(self, slices=1):
        self.slices = slices

    def __call__(self, sample):
        image, mask = sample
        generator = torch.Generator().manual_seed(int(np.random.randint(2**31)))
        batch = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None]
        return random_intensity(batch, self.slices, generator)[0].numpy().transpose(1, 2, 0), mask
