"""Images per second of training on one device: one process alone against N processes at once.

    python -m benchmarks.concurrent_training --image-size 256 --processes 1 2 4

The reference U-Net at batch 16 may leave a large GPU partly idle; experiments.py --jobs N runs N trainings
at once to fill it. This measures whether that pays: each process runs the fast path's training step (device
tensors, autocast, channels_last) on random slices, and the rows give the combined images per second of all
processes, measured one row after another in one run, with the ratio to one process.
"""

import argparse
import json
import subprocess
import sys
import time

import torch

import parameters
import runtime
import train
from benchmarks.training_speed import time_epoch
from unet import UNet


def random_batches(batch_size, image_size, device, generator):
    """Endless batches of normal images and random binary masks, 10% foreground (never zeros: they flatter timings)."""
    while True:
        images = torch.randn(batch_size, 3, image_size, image_size, device=device, generator=generator)
        masks = (torch.rand(batch_size, 1, image_size, image_size, device=device, generator=generator) < 0.1)
        yield images, masks.float()


def worker(args):
    """One process: time args.steps steps; print one JSON line with its start, end and images."""
    device = runtime.resolve_device(args.device)
    runtime.seed_everything(0)  # as train.py: cuDNN picks its fastest kernels
    model = UNet().to(device, memory_format=torch.channels_last)
    generator = torch.Generator(device=device).manual_seed(0)
    amp = runtime.SpeedOptions(parameters.settings(train.DEFAULTS, amp=args.amp), device).amp_dtype
    batches = random_batches(args.batch_size, args.image_size, device, generator)
    time_epoch(model, batches, 5, device, amp, torch.channels_last)  # start-up and warm-up
    time.sleep(max(0.0, args.start_at - time.time()))  # every worker starts timing together
    seconds = time_epoch(model, batches, args.steps, device, amp, torch.channels_last, warmup=0)
    finished = time.time()
    print(json.dumps(dict(start=finished - seconds, end=finished, images=args.steps * args.batch_size)))


def combined_rate(processes, args):
    """Summed images per second of `processes` workers that start timing together, and how much of their
    timed spans overlapped (a rate measured partly alone would flatter the row)."""
    command = [sys.executable, "-m", "benchmarks.concurrent_training", "--worker", "--steps", str(args.steps),
               "--image-size", str(args.image_size), "--batch-size", str(args.batch_size), "--device", args.device,
               "--amp", args.amp, "--start-at", str(time.time() + args.start_delay)]
    children = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(processes)]
    reports = []
    for child in children:
        output, _ = child.communicate()
        if child.returncode:
            raise RuntimeError(f"a worker failed with exit status {child.returncode}")
        reports.append(json.loads(output.strip().splitlines()[-1]))
    overlap = min(r["end"] for r in reports) - max(r["start"] for r in reports)
    rates = [r["images"] / (r["end"] - r["start"]) for r in reports]
    return sum(rates), overlap / max(r["end"] - r["start"] for r in reports)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", default="auto", help='as train.py: "auto" (bf16 on a GPU that has it), "bf16", '
                        '"fp16", "off"')
    parser.add_argument("--start-delay", type=float, default=30.0, help="seconds for the workers' start-up")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    device = runtime.resolve_device(args.device)
    print(f"device: {runtime.device_description(device)}; U-Net, batch {args.batch_size}, {args.image_size} px, "
          f"{args.steps} steps per process")
    rows = [(n, *combined_rate(n, args)) for n in args.processes]
    single = rows[0][1]
    print(f"{'processes':>9s} {'images/s':>10s} {'x first row':>11s} {'overlap':>8s}")
    for n, rate, overlap in rows:
        print(f"{n:9d} {rate:10.1f} {rate / single:11.2f} {overlap:8.0%}")


if __name__ == "__main__":
    main()
