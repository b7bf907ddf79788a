"""Post-processing and pictures: thresholding and the 3-D largest connected component (applied explicitly
before any measure of metrics.py), outline overlays (red prediction, green truth), the DSC and training plots."""

import numpy as np
from scipy import ndimage

RED = (255, 0, 0)
GREEN = (0, 255, 0)


def largest_connected_component(binary):
    """Keep the largest face-connected component (ties: the first in scan order).

    The same result as medpy.filter.binary.largest_connected_component, but an
    empty input gives an empty output instead of an error.
    """
    binary = np.asarray(binary).astype(bool)
    labels, count = ndimage.label(binary)
    if count == 0:
        return binary
    sizes = np.bincount(labels.ravel())[1:]
    return labels == (np.argmax(sizes) + 1)


def count_components(binary):
    """How many face-connected components a binary volume holds (the connectivity largest_connected_component
    uses)."""
    return int(ndimage.label(np.asarray(binary).astype(bool))[1])


def binarise(probabilities, threshold=0.5, lcc=True):
    """The post-processing of every prediction: above threshold is abnormal (at 0.5, the reference's np.round:
    exactly 0.5 is background), then with lcc the 3-D largest connected component alone."""
    pred = np.asarray(probabilities) > threshold
    return largest_connected_component(pred) if lcc else pred


def split_by_patient(slices, patient_slice_index):
    """Stack a flat list of per-slice arrays into one array per patient, in patient order."""
    counts = np.bincount([patient for patient, _ in patient_slice_index])
    bounds = np.concatenate([[0], np.cumsum(counts)])
    return [np.stack(slices[bounds[p] : bounds[p + 1]]) for p in range(len(counts))]


def gray2rgb(image):
    """Min-max scale a 2-D float image to uint8 grey, as 3 identical channels."""
    image = np.asarray(image, dtype=np.float64)
    low, high = image.min(), image.max()
    scaled = (image - low) / (high - low) if high > low else np.zeros_like(image)
    grey = np.round(scaled * 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


def outline_pixels(mask):
    """Mask pixels with at least one background pixel in their 3x3 neighbourhood (inside the image)."""
    binary = np.round(np.asarray(mask)).astype(bool)
    # 'nearest' repeats the border, so pixels outside the image never count as background
    eroded = ndimage.minimum_filter(binary.astype(np.uint8), size=3, mode="nearest").astype(bool)
    return binary & ~eroded


def outline(image, mask, color):
    """Paint the outline of mask onto an RGB uint8 image (in place, returned)."""
    image[outline_pixels(mask)] = color
    return image


def overlay(flair, y_pred, y_true):
    """FLAIR in grey with the prediction outlined red and the truth green (drawn last)."""
    image = gray2rgb(flair)
    outline(image, y_pred, RED)
    outline(image, y_true, GREEN)
    return image


def short_patient_name(patient):
    """TCGA_CS_4941_19960909 -> CS_4941, as on the reference's plot."""
    parts = patient.split("_")
    return "_".join(parts[1:-1]) if len(parts) > 2 else patient


def plot_dsc(dsc_by_patient, label="Dice coefficient"):
    """Sorted horizontal bars of per-patient DSC, mean in red, median in green, the x axis saying which DSC;
    returns the figure."""
    from matplotlib.figure import Figure

    items = sorted(dsc_by_patient.items(), key=lambda item: item[1])
    values = [value for _, value in items]
    labels = [short_patient_name(patient) for patient, _ in items]
    figure = Figure(figsize=(12, max(4, 0.6 * len(items) + 2)))
    axes = figure.subplots()
    positions = np.arange(len(items))
    axes.barh(positions, values, align="center", color="skyblue")
    axes.set_yticks(positions, labels)
    axes.set_xticks(np.arange(0.0, 1.01, 0.1))
    axes.set_xlim(0.0, 1.0)
    mean, median = float(np.mean(values)), float(np.median(values))
    axes.axvline(mean, color="tomato", linewidth=2, label=f"mean {mean:.3f}")
    axes.axvline(median, color="forestgreen", linewidth=2, label=f"median {median:.3f}")
    axes.set_xlabel(label, fontsize="x-large")
    axes.xaxis.grid(color="silver", alpha=0.5, linestyle="--", linewidth=1)
    axes.legend(loc="lower right")
    figure.tight_layout()
    return figure


def plot_training_curves(history, loss="dice"):
    """Loss and val_loss (left, named after the loss trained) and validation mean DSC (right: on the preprocessed
    grid, and at the original 256x256 geometry where the epochs recorded it) per epoch; returns the figure."""
    from matplotlib.figure import Figure

    epochs = [entry["epoch"] for entry in history]
    figure = Figure(figsize=(11, 4))
    loss_axes, dsc_axes = figure.subplots(1, 2)
    loss_axes.plot(epochs, [entry["loss"] for entry in history], label="loss")
    loss_axes.plot(epochs, [entry["val_loss"] for entry in history], label="val_loss")
    loss_axes.set_xlabel("epoch")
    loss_axes.set_ylabel(f"{loss} loss")
    loss_axes.legend()
    dsc_axes.plot(epochs, [entry["val_dsc"] for entry in history], color="tomato", label="on the preprocessed grid")
    if all("val_dsc_native" in entry for entry in history):
        dsc_axes.plot(epochs, [entry["val_dsc_native"] for entry in history], color="steelblue",
                      label="at the original geometry")
    dsc_axes.legend(loc="lower right")
    dsc_axes.set_xlabel("epoch")
    dsc_axes.set_ylabel("validation mean DSC")
    dsc_axes.set_ylim(0, 1)
    for axes in (loss_axes, dsc_axes):
        axes.grid(alpha=0.3)
    figure.tight_layout()
    return figure
