"""The fast data path: preprocessed slices held on the training device, with the
reference's mask-weighted sampling and its augmentation done per batch there.

The reference feeds the GPU from CPU workers that rescale and rotate each
slice with scikit-image. Here one batch is sampled with torch.multinomial and
augmented with one affine_grid + grid_sample call, with the same distribution:
zoom 1 +- scale about the centre, rotation +- angle degrees, horizontal flip
with probability flip_prob; bilinear for images, nearest for masks, zeros
outside (the reference's constant padding of the normalised image).
"""

import math

import numpy as np
import torch
import torch.nn.functional as F

from layouts.kaggle_3m import FLAIR_CHANNEL, POST_CONTRAST, PRE_CONTRAST
from transform import random_intensity


class DeviceSlices:
    """All slices of a dataset stacked on one device: images (N, 3, S, S), masks (N, 1, S, S)."""

    def __init__(self, data, device, dtype=torch.float16):
        images = np.concatenate([volume for volume, _ in data.volumes]).transpose(0, 3, 1, 2)
        masks = np.concatenate([mask for _, mask in data.volumes]).transpose(0, 3, 1, 2)
        self.images = torch.from_numpy(np.ascontiguousarray(images)).to(device=device, dtype=dtype)
        self.masks = torch.from_numpy(np.ascontiguousarray(masks)).to(device=device, dtype=torch.uint8)
        self.patient_slice_index = data.patient_slice_index
        self.device = torch.device(device)
        self.probabilities = None
        if data.slice_weights is not None:
            # the reference draws a patient uniformly, then a slice by its weight
            weights = np.concatenate(data.slice_weights) / len(data.slice_weights)
            self.probabilities = torch.as_tensor(weights, dtype=torch.float64, device=device)

    def __len__(self):
        return self.images.shape[0]

    def ordered_batches(self, batch_size):
        """(images float32, masks float32) in slice order, for validation."""
        for start in range(0, len(self), batch_size):
            yield (
                self.images[start : start + batch_size].float(),
                self.masks[start : start + batch_size].float(),
            )

    def sample_batches(self, batch_size, steps, generator, augment=None):
        """steps batches of mask-weighted random slices, augmented on the device."""
        for _ in range(steps):
            index = torch.multinomial(self.probabilities, batch_size, replacement=True, generator=generator)
            images, masks = self.images[index].float(), self.masks[index].float()
            if augment is not None:
                images, masks = augment(images, masks, generator)
            yield images, masks


def affine_parameters(batch_size, scale, angle, flip_prob, generator, device):
    """Draw per-sample zoom factors, angles (radians) and flips, as the reference's transforms do."""

    def uniform(low, high):
        return low + (high - low) * torch.rand(batch_size, generator=generator, device=device)

    zoom = uniform(1.0 - scale, 1.0 + scale) if scale else torch.ones(batch_size, device=device)
    radians = uniform(-angle, angle) * math.pi / 180 if angle else torch.zeros(batch_size, device=device)
    flip = (
        torch.rand(batch_size, generator=generator, device=device) < flip_prob
        if flip_prob
        else torch.zeros(batch_size, dtype=torch.bool, device=device)
    )
    return zoom, radians, flip


def affine_matrices(zoom, radians, flip):
    """theta for affine_grid: output -> input coordinates of flip(rotate(zoom(image)))."""
    cos, sin = torch.cos(radians), torch.sin(radians)
    mirror = 1.0 - 2.0 * flip.to(cos.dtype)
    theta = torch.zeros(zoom.shape[0], 2, 3, device=zoom.device, dtype=cos.dtype)
    theta[:, 0, 0] = cos * mirror / zoom
    theta[:, 0, 1] = sin / zoom
    theta[:, 1, 0] = -sin * mirror / zoom
    theta[:, 1, 1] = cos / zoom
    return theta


class DeviceAugment:
    """Batch augmentation on the device with the reference's distribution; intensity and sequence_dropout as
    transform.Intensity and transform.SequenceDropout, in transforms' order (off, nothing more is drawn from the
    generator)."""

    def __init__(self, scale=0.05, angle=15, flip_prob=0.5, sequence_dropout=0.0, intensity=False, slices=1):
        self.scale, self.angle, self.flip_prob = scale or 0.0, angle or 0.0, flip_prob or 0.0
        self.sequence_dropout = sequence_dropout or 0.0
        self.intensity, self.slices = intensity, slices  # slices: stacked in the channels (2.5-D context)

    def __call__(self, images, masks, generator=None):
        zoom, radians, flip = affine_parameters(
            images.shape[0], self.scale, self.angle, self.flip_prob, generator, images.device
        )
        images, masks = warp(images, masks, affine_matrices(zoom, radians, flip))
        if self.intensity:
            images = random_intensity(images, self.slices, generator)
        if self.sequence_dropout:
            images = drop_sequences(images, self.sequence_dropout, generator, self.slices)
        return images, masks


def drop_sequences(images, prob, generator=None, slices=1):
    """A batch (N, 3 x slices, S, S) where, with probability prob per sample, its pre-contrast, post-contrast or
    both (one of the three, equally likely) are replaced by its FLAIR (channel 1), in every one of its stacked
    slices alike (2.5-D context, preprocessing.with_context's order: a scan missing is missing in each slice)."""
    count, device = images.shape[0], images.device
    dropped = torch.rand(count, generator=generator, device=device) < prob
    pattern = torch.randint(0, 3, (count,), generator=generator, device=device)  # 0: pre, 1: post, 2: both
    pre = (dropped & (pattern != 1))[:, None, None, None]
    post = (dropped & (pattern != 0))[:, None, None, None]
    stacked = images.unflatten(1, (slices, -1))  # (N, slices, 3, S, S)
    flair = stacked[:, :, FLAIR_CHANNEL]
    channels = list(stacked.unbind(2))
    channels[PRE_CONTRAST] = torch.where(pre, flair, stacked[:, :, PRE_CONTRAST])
    channels[POST_CONTRAST] = torch.where(post, flair, stacked[:, :, POST_CONTRAST])
    return torch.stack(channels, 2).flatten(1, 2)


def warp(images, masks, theta):
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    masks = F.grid_sample(masks, grid.to(masks.dtype), mode="nearest", padding_mode="zeros", align_corners=False)
    return images, masks
