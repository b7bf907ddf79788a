"""Inference of the reference: predict the validation patients, keep the 3-D
largest connected component, score each patient, and write dsc.png, per-slice
overlays and one GIF per patient. Called by inference.ipynb."""

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

import dataset
from checkpoint import load_weights
from train import resolve_device, settings
from utils import dsc, largest_connected_component, overlay, plot_dsc, split_by_patient

DEFAULTS = dict(
    weights="weights/unet.pt",
    data_path=None,
    image_size=None,  # None: the size stored in the weights file, else 256 (the reference's)
    batch_size=32,
    device="auto",
    workers=2,
    validation_cases=10,
    cache_dir=str(dataset.DEFAULT_CACHE_DIR),
    predictions_dir="predictions",
    figure="dsc.png",
    gif_fps=5,
)


def predict(model, data, device, batch_size=32, workers=0):
    """Probabilities for every slice of a non-sampling dataset, per patient.

    Returns {patient: (inputs (Z, 3, S, S), probabilities (Z, S, S), truths (Z, S, S))}.
    """
    loader = DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=workers)
    inputs, probabilities, truths = [], [], []
    with torch.no_grad():
        for x, y_true in tqdm(loader, desc="predicting", unit="batch"):
            y_pred = model(x.to(device))
            inputs.extend(x.numpy())
            probabilities.extend(y_pred[:, 0].float().cpu().numpy())
            truths.extend(y_true[:, 0].numpy())
    grouped = [split_by_patient(part, data.patient_slice_index) for part in (inputs, probabilities, truths)]
    return {patient: tuple(part[p] for part in grouped) for p, patient in enumerate(data.patients)}


def postprocess(predictions):
    """Threshold at 0.5 and keep the 3-D largest connected component, per patient."""
    return {
        patient: (inputs, largest_connected_component(probabilities > 0.5), truths)
        for patient, (inputs, probabilities, truths) in predictions.items()
    }


def dsc_distribution(volumes):
    return {patient: dsc(pred, true, lcc=False) for patient, (_, pred, true) in volumes.items()}


def patient_overlays(inputs, pred, true):
    """One RGB overlay per slice of the FLAIR channel (1)."""
    return [overlay(inputs[s, 1], pred[s], true[s]) for s in range(inputs.shape[0])]


def save_pictures(volumes, predictions_dir, gif_fps=5):
    """Per-slice PNGs <patient>-<slice>.png and a <patient>.gif per patient; returns the GIF paths."""
    predictions_dir = Path(predictions_dir)
    predictions_dir.mkdir(parents=True, exist_ok=True)
    gifs = []
    for patient, (inputs, pred, true) in tqdm(volumes.items(), desc="pictures", unit="patient"):
        frames = patient_overlays(inputs, pred, true)
        for index, frame in enumerate(frames):
            iio.imwrite(predictions_dir / f"{patient}-{index:02d}.png", frame)
        gif = predictions_dir / f"{patient}.gif"
        iio.imwrite(gif, np.stack(frames), duration=1000 / gif_fps, loop=0)
        gifs.append(gif)
    return gifs


def run(**overrides):
    """Predict the validation patients with saved weights and write all outputs; returns the DSCs."""
    params = settings(DEFAULTS, **overrides)
    device = resolve_device(params["device"])
    model, metadata = load_weights(params["weights"], device)
    image_size = params["image_size"] or metadata.get("image_size", 256)
    if metadata.get("image_size", image_size) != image_size:
        print(f"warning: {params['weights']} was trained at {metadata['image_size']} px, predicting at {image_size}")
    data_dir, source = dataset.locate_data(params["data_path"])
    print(f"data: {data_dir} ({source}); weights: {params['weights']}; image size {image_size}")
    data = dataset.BrainSegmentationDataset(
        data_dir,
        subset="validation",
        image_size=image_size,
        random_sampling=False,
        validation_cases=params["validation_cases"],
        cache_dir=params["cache_dir"],
        workers=params["workers"],
    )
    volumes = postprocess(predict(model, data, device, params["batch_size"]))
    dsc_by_patient = dsc_distribution(volumes)
    figure = plot_dsc(dsc_by_patient)
    figure.savefig(params["figure"])
    gifs = save_pictures(volumes, params["predictions_dir"], params["gif_fps"])
    values = list(dsc_by_patient.values())
    print(f"mean DSC {np.mean(values):.4f}, median DSC {np.median(values):.4f} over {len(values)} patients")
    return dict(dsc=dsc_by_patient, figure=figure, gifs=gifs, mean=float(np.mean(values)))
