"""Seconds per training epoch: the reference's CPU data path against the device path.

    python -m benchmarks.training_speed                      # quick CPU check on the synthetic default
    python -m benchmarks.training_speed --data PATH/TO/kaggle_3m --image-size 256 --batch-size 16

Same model, batch size, loss and optimiser, in one run on one machine:
(a) reference path: DataLoader workers, scikit-image scale/rotate/flip per slice,
    float32, contiguous memory (as the reference trains);
(b) fast path: slices held on the device, mask-weighted sampling and
    augmentation per batch there, autocast (bf16 on a GPU), channels_last,
    and torch.compile with --compile.
Prints seconds per epoch, images per second and the ratio.
"""

import argparse
import time
from contextlib import nullcontext

import torch

import batches
import dataset
import parameters
import runtime
import train
from device_data import DeviceAugment, DeviceSlices
from loss import build_loss
from unet import UNet


def time_epoch(model, batches, steps, device, autocast_dtype, memory_format, warmup=3):
    """Seconds for `steps` training steps, after `warmup` untimed ones."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn = build_loss("dice")  # the reference's Dice, on the sigmoid of the logits
    model.train()
    iterator = iter(batches)

    scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype == torch.float16)

    def autocast():
        return torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else nullcontext()

    def one_step():  # the training's own step
        x, y = next(iterator)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        train.optimizer_step(model, x, y, loss_fn, optimizer, scaler, autocast, memory_format)

    for _ in range(warmup):
        one_step()
    runtime.synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        one_step()
    runtime.synchronize(device)
    return time.perf_counter() - started


def endless(loader):
    while True:
        yield from loader


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="kaggle_3m folder (default: auto-detect, else synthetic)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", default="auto")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--steps", type=int, default=None, help="steps to time (default: one epoch)")
    args = parser.parse_args()

    device = runtime.resolve_device(args.device)
    data_dir, source = dataset.locate_data(args.data)
    params = parameters.settings(train.DEFAULTS, image_size=args.image_size, batch_size=args.batch_size,
                                 workers=args.workers, amp=args.amp)
    train_set, valid_set = batches.datasets(params, data_dir)
    steps = args.steps or len(train_set) // args.batch_size
    amp_dtype = runtime.SpeedOptions(params, device).amp_dtype
    print(f"data: {data_dir} ({source}); {len(train_set)} training slices at {args.image_size} px; "
          f"batch {args.batch_size}; {steps} steps; device: {runtime.device_description(device)}")

    torch.manual_seed(0)
    initial = UNet().state_dict()

    loader = torch.utils.data.DataLoader(
        train_set, batch_size=args.batch_size, shuffle=True, drop_last=True, num_workers=args.workers,
        worker_init_fn=runtime.seed_worker, pin_memory=device.type == "cuda", persistent_workers=args.workers > 0,
    )
    model = UNet().to(device)
    model.load_state_dict(initial)
    reference = time_epoch(model, endless(loader), steps, device, None, torch.contiguous_format)

    train_set.transform = None
    slices = DeviceSlices(train_set, device)
    augment = DeviceAugment(params["aug_scale"], params["aug_angle"], params["flip_prob"])
    generator = torch.Generator(device=device).manual_seed(0)
    model = UNet().to(device, memory_format=torch.channels_last)
    model.load_state_dict(initial)
    step_model = torch.compile(model) if args.compile else model
    fast_batches = slices.sample_batches(args.batch_size, steps + 3, generator, augment)
    fast = time_epoch(step_model, fast_batches, steps, device, amp_dtype, torch.channels_last)

    images = steps * args.batch_size
    for name, seconds in (("reference path", reference), ("fast path", fast)):
        print(f"{name:15s} {seconds:8.2f} s per {steps} steps   {images / seconds:8.1f} images/s")
    print(f"speed-up (reference / fast): {reference / fast:.2f}x  (amp: {amp_dtype}, compile: {args.compile})")


if __name__ == "__main__":
    main()
