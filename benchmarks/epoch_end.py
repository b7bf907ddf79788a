"""Seconds per epoch of a training loop whose epoch's end runs inline against in the background.

    python -m benchmarks.epoch_end                               # the synthetic default, 256 px
    python -m benchmarks.epoch_end --data PATH/TO/kaggle_3m      # the reference's 10 validation patients

The epoch's end (per-patient DSC with the 3-D largest connected component,
TensorBoard scalars and, every vis_freq epochs, 200 overlays, the best
weights, the checkpoint, results.json) is evaluation.EpochEnd, for the reference
U-Net with Adam state, on predictions made from the validation masks (one
pixel grown, plus a small false positive in every other slice).

Between two epoch ends the loop does a fixed amount of training-like work:
small torch operations dispatched from Python, as a GPU training loop
launching kernels does, calibrated to take --epoch-seconds alone (3 s: 100
epochs in 5 minutes). It needs the interpreter as the real loop does, so
the background thread's competition for it is in the figures. In one run:
(a) inline, as the reference does; (b) a CPU snapshot of the training
state, then the rest handed to the background thread (train.py's way), the
final wait for it included. Prints seconds per epoch and the ratio.
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

import checkpoint
import dataset
import parameters
import train
from evaluation import EpochEnd, TrainedEpoch
from background import BackgroundWork
from logger import Logger
from unet import UNet


def plausible_predictions(trues):
    """The truths grown by one pixel, with a 3x3 false positive in every other slice (uint8 0/1)."""
    preds = ndimage.binary_dilation(trues, structure=np.ones((1, 3, 3), bool)).astype(np.uint8)
    preds[::2, 5:8, 5:8] = 1
    return preds


def epoch_inputs(valid_set, vis_images):
    trues = np.concatenate([mask[..., 0] for _, mask in valid_set.volumes]).astype(np.uint8)
    preds = plausible_predictions(trues)
    flair = np.concatenate([volume[..., valid_set.overlay_channel] for volume, _ in valid_set.volumes])
    examples = list(zip(flair[:vis_images], trues, preds))
    return preds, trues, examples


def training_like_work(operations):
    x = torch.zeros(16)
    for _ in range(operations // 2):
        x = x * 1.0001 + 0.0001


def calibrate(seconds):
    """How many small operations take `seconds` on this machine, alone."""
    operations = 2000
    while True:
        started = time.perf_counter()
        training_like_work(operations)
        elapsed = time.perf_counter() - started
        if elapsed > 0.5:
            return int(operations * seconds / elapsed)
        operations *= 2


def time_epochs(end, model, optimizer, inputs, epochs, vis_freq, operations, work):
    """Seconds per epoch of training-like work then the epoch's end (inline when work is disabled)."""
    preds, trues, examples = inputs
    started = time.perf_counter()
    for epoch in range(epochs):
        training_like_work(operations)
        trained = TrainedEpoch(epoch=epoch + 1, step=epoch + 1, loss=0.5, lr=1e-4, image_size=end.params["image_size"],
                               images=0, pixels=0, validation_seconds=0.0, load_average=None)
        snapshot = checkpoint.to_cpu(dict(epoch=epoch, step=epoch + 1, model=model.state_dict(),
                                          optimizer=optimizer.state_dict(), rng=checkpoint.rng_state()))
        shown = examples if epoch % vis_freq == 0 else []
        work.submit(end, trained, dict(train_seconds=0.0, wall_seconds=0.0), 0.5, preds, trues, shown, snapshot)
    work.close()
    return (time.perf_counter() - started) / epochs


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="kaggle_3m folder (default: auto-detect, else synthetic)")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--vis-images", type=int, default=200)
    parser.add_argument("--vis-freq", type=int, default=10)
    parser.add_argument("--epoch-seconds", type=float, default=3.0, help="training-like work between epoch ends")
    args = parser.parse_args()

    data_dir, source = dataset.locate_data(args.data)
    valid_set = dataset.BrainSegmentationDataset(data_dir, subset="validation", random_sampling=False,
                                                 image_size=args.image_size, progress=False)
    inputs = epoch_inputs(valid_set, args.vis_images)
    model = UNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    model(torch.randn(2, 3, 64, 64)).mean().backward()
    optimizer.step()  # Adam's moments exist, as in a checkpoint after the first epoch
    print(f"data: {data_dir} ({source}); {len(valid_set)} validation slices of {valid_set.patients[:3]}...; "
          f"{torch.get_num_threads()} torch threads")

    operations = calibrate(args.epoch_seconds)
    seconds = {}
    with tempfile.TemporaryDirectory() as folder:
        for label in ("inline", "background"):
            out = Path(folder) / label
            params = parameters.settings(train.DEFAULTS, batch_size=16, weights_dir=str(out),
                                         image_size=args.image_size)
            results = dict(history=[], best_val_dsc=0.0, best_epoch=None, train_patients=[])
            logger = Logger(out)
            end = EpochEnd(results, logger, valid_set, params, dict(init_features=32), out / "checkpoint.pt")
            work = BackgroundWork(enabled=label == "background")
            seconds[label] = time_epochs(end, model, optimizer, inputs, args.vis_freq, args.vis_freq, operations,
                                         work)
            logger.close()
            assert len(results["history"]) == args.vis_freq, label
    print(f"{'epoch end':12s} {'s/epoch':>8s} {'beyond the training work':>24s}")
    for label, value in seconds.items():
        print(f"{label:12s} {value:8.3f} {value - args.epoch_seconds:24.3f}")
    extra = {label: value - args.epoch_seconds for label, value in seconds.items()}
    print(f"ratio {seconds['inline'] / seconds['background']:.2f}x per epoch; over 100 epochs the epoch ends add "
          f"{100 * extra['inline']:.0f} s inline, {100 * extra['background']:.0f} s in the background")


if __name__ == "__main__":
    main()
