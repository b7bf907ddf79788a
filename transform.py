"""Training augmentation as in the reference (scale 1+-0.05, rotation +-15 degrees,
horizontal flip p=0.5), on (image (H, W, C), mask (H, W, 1)) numpy pairs,
with no torchvision needed. Randomness comes from numpy's global generator,
which the training loader seeds per worker and per epoch."""

import numpy as np
from skimage.transform import rescale, rotate

from layouts.kaggle_3m import FLAIR_CHANNEL, POST_CONTRAST, PRE_CONTRAST


class Compose:
    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, sample):
        for transform in self.transforms:
            sample = transform(sample)
        return sample


def transforms(scale=None, angle=None, flip_prob=None, sequence_dropout=0.0):
    """The reference's augmentation pipeline; a None argument leaves that step out. sequence_dropout > 0 adds
    SequenceDropout first (not in the reference)."""
    steps = [SequenceDropout(sequence_dropout)] if sequence_dropout else []
    if scale is not None:
        steps.append(Scale(scale))
    if angle is not None:
        steps.append(Rotate(angle))
    if flip_prob is not None:
        steps.append(HorizontalFlip(flip_prob))
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
    have (results/missing-sequences-cpu.md). Channels: pre-contrast, FLAIR, post-contrast."""

    def __init__(self, prob):
        self.prob = prob

    def __call__(self, sample):
        image, mask = sample
        if np.random.rand() >= self.prob:
            return image, mask
        pattern = np.random.randint(3)  # 0: pre-contrast, 1: post-contrast, 2: both
        image = image.copy()
        if pattern != 1:
            image[..., PRE_CONTRAST] = image[..., FLAIR_CHANNEL]
        if pattern != 0:
            image[..., POST_CONTRAST] = image[..., FLAIR_CHANNEL]
        return image, mask
