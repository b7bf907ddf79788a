"""TensorBoard logging through torch.utils.tensorboard, with the reference's API."""

import numpy as np
from torch.utils.tensorboard import SummaryWriter


class SilentLogger:
    """The Logger of a process that logs nothing (a data-parallel rank other than 0): every call does nothing."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


class Logger:
    def __init__(self, log_dir):
        self.writer = SummaryWriter(log_dir=str(log_dir))

    def scalar_summary(self, tag, value, step):
        self.writer.add_scalar(tag, float(value), step)
        self.writer.flush()

    def _add_image(self, tag, image, step):
        image = np.asarray(image)
        self.writer.add_image(tag, image, step, dataformats="HWC" if image.ndim == 3 else "HW")

    def image_summary(self, tag, image, step):
        """One RGB (H, W, 3) or grey (H, W) uint8 image."""
        self._add_image(tag, image, step)
        self.writer.flush()

    def image_list_summary(self, tag, images, step):
        """Each image under tag/i, as the reference."""
        for index, image in enumerate(images):
            self._add_image(f"{tag}/{index}", image, step)
        self.writer.flush()

    def describe(self, steps_per_epoch, vis_freq):
        """A text card saying how to read the others (TensorBoard's x axis is the optimiser step)."""
        self.writer.add_text("about this run", (
            f"x axis: optimiser steps, {steps_per_epoch} an epoch. `loss`: the training loss, averaged over 10 "
            "steps; `val_loss`, `val_dsc` (per patient on the preprocessed grid, the reference's) and `val_dsc_256` "
            "(at the original 256x256 geometry): once an epoch. Overlays every "
            f"{vis_freq} epochs: the FLAIR with the prediction outlined red and the truth green, named by patient "
            "and the dataset's slice number."), 0)
        self.writer.flush()

    def hparams(self, params, metrics):
        """The run's settings and final scores for the HParams tab (lists and dicts as text, None as 'None')."""
        from torch.utils.tensorboard.summary import hparams

        values = {name: value if isinstance(value, (bool, int, float, str)) else str(value)
                  for name, value in params.items()}
        scores = {f"hparam/{name}": float(value) for name, value in metrics.items()}
        # through this run's own writer: SummaryWriter.add_hparams would open a second event file (a subfolder)
        for summary in hparams(values, scores):
            self.writer.file_writer.add_summary(summary)
        for name, value in scores.items():
            self.writer.add_scalar(name, value)
        self.writer.flush()

    def close(self):
        self.writer.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
