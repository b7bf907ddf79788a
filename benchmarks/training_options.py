"""Seconds per training step of the U-Net under each compute option, side by side in one run: float32, channels_last,
bfloat16 autocast (fast on CPUs with AVX512-BF16 or AMX, and on GPUs), both, and torch.compile of the best.

    python -m benchmarks.training_options [--sizes 64 128] [--batch-size 16] [--steps 20] [--compile] [--out FILE]

Random batches (the arithmetic, not the data, is what a CPU spends its time on: results/training-speed-cpu.md),
Adam, the BCE+Dice loss on float32 logits, as train.Run steps. The options run interleaved in rounds, so a change
of machine load hits them all alike; the median round is printed, and with --out written to a results file with
the machine (its CPU model, and whether it computes bfloat16 natively: without AVX512-BF16 or AMX, bfloat16
autocast is emulated) and the load average before and after. Run it on an idle machine.
"""

import argparse
import statistics
import time

import torch

import results_files
import runtime
import train
from loss import build_loss
from unet import UNet

OPTIONS = {  # name: (autocast dtype, memory format)
    "float32": (None, torch.contiguous_format),
    "channels_last": (None, torch.channels_last),
    "bf16": (torch.bfloat16, torch.contiguous_format),
    "bf16 + channels_last": (torch.bfloat16, torch.channels_last),
}


class Stepper:
    """One model under one option, stepping on the given batch."""

    def __init__(self, dtype, memory_format, compile_model, device, initial):
        self.dtype, self.memory_format, self.device = dtype, memory_format, device
        self.model = UNet().to(device, memory_format=memory_format)
        self.model.load_state_dict(initial)
        self.step_model = torch.compile(self.model) if compile_model else self.model
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-4)
        self.loss_fn = build_loss("bce_dice")
        self.scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    def step(self, x, y):  # the training's own step
        return train.optimizer_step(self.step_model, x, y, self.loss_fn, self.optimizer, self.scaler, self.autocast,
                                    self.memory_format).item()

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None)


def measure(steppers, batch, steps, rounds, device):
    """Median seconds per step of each stepper, over rounds in which each takes `steps` steps in turn."""
    times = {name: [] for name in steppers}
    for stepper in steppers.values():  # warm-up (and compilation) outside the timing
        for _ in range(3):
            stepper.step(*batch)
    for _ in range(rounds):
        for name, stepper in steppers.items():
            runtime.synchronize(device)
            started = time.perf_counter()
            for _ in range(steps):
                stepper.step(*batch)
            runtime.synchronize(device)
            times[name].append((time.perf_counter() - started) / steps)
    return {name: statistics.median(values) for name, values in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10, help="steps per option per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="also torch.compile the bf16 + channels_last model")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", help="also write the table to this results file (markdown)")
    args = parser.parse_args(argv)
    device = runtime.resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"device: {runtime.device_description(device)}, {torch.get_num_threads()} threads; torch "
          f"{torch.__version__}; batch {args.batch_size}; {args.steps} steps x {args.rounds} rounds per option; "
          f"load average {runtime.load_average()}")
    torch.manual_seed(0)
    initial = UNet().state_dict()
    options = dict(OPTIONS)
    if args.compile:
        options["bf16 + channels_last + compile"] = (torch.bfloat16, torch.channels_last)
    load_before, by_size = runtime.load_average(), {}
    for size in args.sizes:
        generator = torch.Generator().manual_seed(size)
        x = torch.randn(args.batch_size, 3, size, size, generator=generator).to(device)
        y = (torch.rand(args.batch_size, 1, size, size, generator=generator) > 0.9).float().to(device)
        steppers = {name: Stepper(dtype, memory_format, name.endswith("compile"), device, initial)
                    for name, (dtype, memory_format) in options.items()}
        seconds = by_size[size] = measure(steppers, (x, y), args.steps, args.rounds, device)
        base = seconds["float32"]
        print(f"\n{size}x{size}:")
        for name, value in seconds.items():
            print(f"  {name:32s} {value * 1000:8.1f} ms/step  {args.batch_size / value:7.1f} images/s  "
                  f"{base / value:5.2f}x float32")
    load_after = runtime.load_average()
    print(f"\nload average at the end {load_after}")
    if args.out:
        machine = (f"{runtime.device_description(device)}, native bfloat16: "
                   f"{'yes' if runtime.cpu_has_native_bf16() else 'no (no AVX512-BF16 or AMX: emulated)'}"
                   if device.type == "cpu" else runtime.device_description(device))
        results_files.write(args.out, "A training step under each compute option", "benchmarks.training_options",
                            argv, f"Machine: {machine}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
                            f"batch {args.batch_size}, {args.steps} steps x {args.rounds} rounds an option, the "
                            f"median round; load average {load_before} before, {load_after} after.",
                            table_lines(by_size))
    return 0


def table_lines(by_size):
    """A row an option: ms a step and the ratio to float32's, at each size."""
    sizes = list(by_size)
    lines = ["| option | " + " | ".join(f"{s}x{s} ms/step | vs float32" for s in sizes) + " |",
             "| --- |" + " ---: | ---: |" * len(sizes)]
    for name in next(iter(by_size.values())):
        cells = [f"{by_size[s][name] * 1000:.1f} | {by_size[s]['float32'] / by_size[s][name]:.2f}x" for s in sizes]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
