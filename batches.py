"""Where training and validation batches come from, on either data path: "reference" (CPU loader workers,
scikit-image augmentation per slice) or "device" (slices held on the GPU, augmentation per batch there:
device_data.py). Both draw slices with the reference's mask-weighted sampling, and both can train (and validate)
the first epochs on smaller slices (progressive resizing: training_size)."""

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

import dataset
import layouts
from layouts import kaggle_3m
from device_data import DeviceAugment, DeviceSlices
from preprocessing import stacked_slices
from parameters import training_seed
from runtime import seed_worker
from transform import transforms


def datasets(params, data_dir, augment_on_cpu=True):
    """The training set (mask-weighted sampling, augmented when augment_on_cpu) and the validation set."""
    common = dict(
        images_dir=data_dir,
        image_size=params["image_size"],
        validation_cases=params["validation_cases"],
        seed=params["seed"],
        folds=params["folds"],
        fold=params["fold"],
        cache_dir=params["cache_dir"],
        workers=max(1, params["workers"]),
        context_slices=params["context_slices"],
        dataset=params["dataset"],
        case_pattern=params["case_pattern"],
        to_square=params["to_square"],
    )
    if params["sequence_dropout"] and not isinstance(layouts.detect(data_dir, params["dataset"]), kaggle_3m.Kaggle3m):
        raise dataset.DataError(f"sequence_dropout={params['sequence_dropout']}: it fills kaggle_3m's pre- and "
                                f"post-contrast with the FLAIR, which {data_dir} has not; use 0")
    augment = None
    if augment_on_cpu:
        augment = transforms(scale=params["aug_scale"], angle=params["aug_angle"], flip_prob=params["flip_prob"],
                             sequence_dropout=params["sequence_dropout"], intensity=params["intensity_augmentation"],
                             slices=stacked_slices(params["context_slices"]))
    train_set = dataset.BrainSegmentationDataset(subset="train", transform=augment, **common)
    valid_set = dataset.BrainSegmentationDataset(subset="validation", random_sampling=False, **common)
    if len(train_set) < params["batch_size"]:
        raise dataset.DataError(
            f"the training set has {len(train_set)} slices, fewer than batch_size={params['batch_size']}; "
            "lower batch_size"
        )
    return train_set, valid_set


def data_loaders(train_set, valid_set, params, device, generator):
    common = dict(
        batch_size=params["batch_size"],
        num_workers=params["workers"],
        worker_init_fn=seed_worker,
        pin_memory=device.type == "cuda",
    )
    train_loader = DataLoader(train_set, shuffle=True, drop_last=True, generator=generator, **common)
    valid_loader = DataLoader(valid_set, shuffle=False, drop_last=False, **common)
    return train_loader, valid_loader


def training_size(params, epoch):
    """The side of the slices trained on in epoch (0-based): progressive_size for the first progressive_epochs."""
    if params["progressive_size"] and epoch < params["progressive_epochs"]:
        return params["progressive_size"]
    return params["image_size"]


def trained_pixels(params, epochs, images_per_epoch):
    """The image pixels the first `epochs` epochs of images_per_epoch slices each train on."""
    return images_per_epoch * sum(training_size(params, epoch) ** 2 for epoch in range(epochs))


def shrink(images, masks, size):
    """A batch at size x size: images averaged over each block (as an anti-aliased resize), masks where the
    block is mostly abnormal."""
    if images.shape[-1] == size:
        return images, masks
    images = F.interpolate(images, size=(size, size), mode="area")
    masks = (F.interpolate(masks, size=(size, size), mode="area") > 0.5).to(masks.dtype)
    return images, masks


class Batches:
    """Training batches (an epoch's worth: len(train_set) // batch_size) and validation batches, on device."""

    def __init__(self, pipeline, train_set, valid_set, params, device, group=None):
        self.pipeline, self.device, self.params, self.group = pipeline, device, params, group
        self.loader_generator = torch.Generator().manual_seed(training_seed(params))
        self.steps = len(train_set) // params["batch_size"]
        # data-parallel: each rank draws its share of every global batch (distributed.py)
        self.share = params["batch_size"] if group is None else group.share(params["batch_size"])
        if group is not None and group.parallel and pipeline != "device":
            from parameters import ParameterError

            raise ParameterError(f"data_pipeline={pipeline!r}: data-parallel training (torchrun) takes the device "
                                 'data path; use data_pipeline="device"')
        if pipeline == "reference":
            self.train_loader, self.valid_loader = data_loaders(
                train_set, valid_set, params, device, self.loader_generator
            )
        else:
            self.train_slices = DeviceSlices(train_set, device)
            self.valid_slices = DeviceSlices(valid_set, device)
            self.augment = DeviceAugment(params["aug_scale"], params["aug_angle"], params["flip_prob"],
                                         params["sequence_dropout"], params["intensity_augmentation"],
                                         stacked_slices(params["context_slices"]))
            self.device_generator = torch.Generator(device=device).manual_seed(training_seed(params))

    def train(self, epoch=0):
        """epoch's training batches, at training_size(params, epoch)."""
        size = training_size(self.params, epoch)
        if self.pipeline == "reference":
            for x, y in self.train_loader:
                yield shrink(x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True), size)
        else:
            if self.group is not None and self.group.parallel:
                # each rank its own draws, fixed by the epoch: a resumed rank draws as it would have (the
                # checkpoint holds rank 0's generator only)
                self.device_generator.manual_seed(self.group.seed(training_seed(self.params)) + 7919 * epoch)
            for x, y in self.train_slices.sample_batches(self.share, self.steps, self.device_generator, self.augment):
                yield shrink(x, y, size)

    def validation(self, epoch=0):
        """The validation slices in order, at the size epoch trained at."""
        size = training_size(self.params, epoch)
        if self.pipeline == "reference":
            for x, y in self.valid_loader:
                yield shrink(x.to(self.device), y.to(self.device), size)
        else:
            for x, y in self.valid_slices.ordered_batches(max(64, self.params["batch_size"])):
                yield shrink(x, y, size)

    def state(self):
        state = dict(loader=self.loader_generator.get_state())
        if self.pipeline == "device":
            state["device"] = self.device_generator.get_state()
        return state

    def set_state(self, state):
        self.loader_generator.set_state(state["loader"])
        if self.pipeline == "device" and "device" in state:
            self.device_generator.set_state(state["device"])
