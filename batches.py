"""Where training and validation batches come from, on either data path: "reference" (CPU loader workers,
scikit-image augmentation per slice) or "device" (slices held on the GPU, augmentation per batch there:
device_data.py). Both draw slices with the reference's mask-weighted sampling, and both can train (and validate)
the first epochs on smaller slices (progressive resizing: training_size), preprocessed at that size as
inference preprocesses them."""

import torch
from torch.utils.data import DataLoader

import dataset
from device_data import DeviceAugment, DeviceSlices
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
    )
    augment = None
    if augment_on_cpu:
        augment = transforms(scale=params["aug_scale"], angle=params["aug_angle"], flip_prob=params["flip_prob"])
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


class Batches:
    """Training batches (an epoch's worth: len(train_set) // batch_size) and validation batches, on device.

    small_sets: (train_set, valid_set) preprocessed at progressive_size, for the epochs trained at that size.
    """

    def __init__(self, pipeline, train_set, valid_set, params, device, small_sets=None):
        self.pipeline, self.device, self.params = pipeline, device, params
        self.loader_generator = torch.Generator().manual_seed(params["seed"])
        self.steps = len(train_set) // params["batch_size"]
        sets = {params["image_size"]: (train_set, valid_set)}
        if small_sets is not None:
            sets[params["progressive_size"]] = small_sets
        if pipeline == "reference":
            self.sources = {size: data_loaders(*pair, params, device, self.loader_generator)
                            for size, pair in sets.items()}
        else:
            self.sources = {size: (DeviceSlices(train, device), DeviceSlices(valid, device))
                            for size, (train, valid) in sets.items()}
            self.augment = DeviceAugment(params["aug_scale"], params["aug_angle"], params["flip_prob"])
            self.device_generator = torch.Generator(device=device).manual_seed(params["seed"])

    def train(self, epoch=0):
        """epoch's training batches, at training_size(params, epoch)."""
        train_source, _ = self.sources[training_size(self.params, epoch)]
        if self.pipeline == "reference":
            for x, y in train_source:
                yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        else:
            yield from train_source.sample_batches(
                self.params["batch_size"], self.steps, self.device_generator, self.augment
            )

    def validation(self, epoch=0):
        """The validation slices in order, at the size epoch trained at."""
        _, valid_source = self.sources[training_size(self.params, epoch)]
        if self.pipeline == "reference":
            for x, y in valid_source:
                yield x.to(self.device), y.to(self.device)
        else:
            yield from valid_source.ordered_batches(max(64, self.params["batch_size"]))

    def state(self):
        state = dict(loader=self.loader_generator.get_state())
        if self.pipeline == "device":
            state["device"] = self.device_generator.get_state()
        return state

    def set_state(self, state):
        self.loader_generator.set_state(state["loader"])
        if self.pipeline == "device" and "device" in state:
            self.device_generator.set_state(state["device"])
