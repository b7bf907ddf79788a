"""TensorBoard logging through torch.utils.tensorboard, with the reference's API."""

import numpy as np
from torch.utils.tensorboard import SummaryWriter


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

    def close(self):
        self.writer.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
