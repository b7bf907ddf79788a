"""Seconds per training step with 1 and with all CPU threads, alone and beside one busy neighbour.

    python -m benchmarks.threads [--steps 6] [--image-size 64] [--batch-size 16]

The neighbour is another process training the same U-Net with all threads, as a second notebook or a
background sweep would. On a machine with few cores, torch's threads wait at every parallel region for a
thread that the neighbour holds, so the step time beside it can grow far beyond 2x; this measures by how
much, side by side in one run, and what train.py's threads="auto" (the idle cores only) gains.
"""

import argparse
import os
import subprocess
import sys
import time
from contextlib import nullcontext

import torch

import train
from loss import build_loss
from unet import UNet


def step_seconds(threads, steps, image_size, batch_size):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = UNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn = build_loss("dice")
    x = torch.randn(batch_size, 3, image_size, image_size)
    y = (torch.rand(batch_size, 1, image_size, image_size) > 0.9).float()

    scaler = torch.amp.GradScaler("cpu", enabled=False)

    def one_step():  # the training's own step, in float32
        train.optimizer_step(model, x, y, loss_fn, optimizer, scaler, nullcontext, torch.contiguous_format)

    for _ in range(2):
        one_step()
    started = time.perf_counter()
    for _ in range(steps):
        one_step()
    return (time.perf_counter() - started) / steps


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--neighbour", action="store_true", help=argparse.SUPPRESS)  # the busy process itself
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    if args.neighbour:
        while True:
            step_seconds(cores, 10, args.image_size, args.batch_size)
    settings = (args.steps, args.image_size, args.batch_size)
    print(f"U-Net training step, batch {args.batch_size} at {args.image_size} px, {cores} cores, "
          f"torch {torch.__version__}")
    rows = {}
    for threads in (1, cores):
        rows["alone", threads] = step_seconds(threads, *settings)
    neighbour = subprocess.Popen([sys.executable, "-m", "benchmarks.threads", "--neighbour",
                                  "--image-size", str(args.image_size), "--batch-size", str(args.batch_size)])
    try:
        time.sleep(5)  # the neighbour up to speed
        for threads in (1, cores):
            rows["beside a busy neighbour", threads] = step_seconds(threads, *settings)
    finally:
        neighbour.kill()
        neighbour.wait()
    for (where, threads), seconds in rows.items():
        print(f"{where:25s} {threads} thread(s): {seconds:6.3f} s/step")
    alone, beside = rows["alone", cores], rows["beside a busy neighbour", cores]
    print(f"all {cores} threads beside a neighbour: {beside / alone:.1f}x slower than alone; 1 thread beside it: "
          f"{rows['beside a busy neighbour', 1] / alone:.1f}x; so beside a neighbour 1 thread is "
          f"{beside / rows['beside a busy neighbour', 1]:.2f}x faster than {cores}")


if __name__ == "__main__":
    main()
