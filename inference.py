"""Inference that users can act on, called by inference.ipynb.

Predicts patients with a weights file (ours, or the reference's published
state_dict), with the per-volume preprocessing the model was trained with,
then per patient:
- overlays (red prediction, green truth) and a GIF on each original slice's FLAIR at its own size, named
  by the dataset's slice numbers (the reference drew the preprocessed slices, numbered from 0 after the
  dropped first one, which matched no file);
- predicted mask TIFFs named like the dataset's (<patient>_<n>_mask.tif) at
  the original geometry: the crop, padding and resize are undone, and the
  slices the preprocessing dropped get empty masks;
- where masks exist: metrics.csv (DSC, IoU, precision, recall, HD95, volumes,
  at the original geometry, and the reference's DSC on the preprocessed grid;
  then what the 3-D largest connected component did: the DSC without it and
  how many components the thresholded prediction had),
  metrics-summary.csv (their mean and median) and dsc.png (the reference's
  DSC, mean red, median green).
"""

import csv
import json
import shutil
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import tifffile
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

import dataset
import preprocessing
import parameters
import runs
from checkpoint import WeightsError, load_weights
from safe_files import FolderLock, OutputError, write_json_atomic
from runtime import emulated_bf16_line, on_terminal, resolve_device
from unet import fused_for_inference, probabilities
from metrics import METRIC_COLUMNS, dsc, metrics_summary, patient_metrics
from utils import binarise, largest_connected_component, overlay, plot_dsc, split_by_patient

DEFAULTS = parameters.defaults(parameters.INFERENCE)




def predict(model, data, device, batch_size=32, tta=False, workers=0, fuse=False, precision="float32"):
    """Probabilities for every slice of a non-sampling dataset, per patient; with fuse, batch norm folded into
    the convolutions (unet.fused_for_inference); with precision "bf16", under bfloat16 autocast.

    Returns {patient: (inputs (Z, 3, S, S), probabilities (Z, S, S), truths (Z, S, S))}.
    """
    loader = DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=workers)
    memory_format = torch.contiguous_format
    if fuse:
        model, memory_format = fused_for_inference(model), torch.channels_last
    autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16")
    inputs, probs, truths = [], [], []
    with torch.inference_mode(), autocast:
        for x, y_true in tqdm(loader, desc="predicting", unit="batch", disable=not on_terminal()):
            y_pred = probabilities(model, x.to(device).contiguous(memory_format=memory_format), tta)
            inputs.extend(x.numpy())
            probs.extend(y_pred[:, 0].cpu().numpy())
            truths.extend(y_true[:, 0].numpy())
    grouped = [split_by_patient(part, data.patient_slice_index) for part in (inputs, probs, truths)]
    return {patient: tuple(part[p] for part in grouped) for p, patient in enumerate(data.patients)}


def model_channels(metadata, context_slices):
    """How many channels of each slice the model takes (its input channels, less the neighbours'), or None for a
    plain state_dict that does not say."""
    channels = (metadata.get("model_args") or {}).get("in_channels")
    return None if channels is None else channels // preprocessing.stacked_slices(context_slices)


def post_process(restored, threshold, lcc):
    """(thresholded, prediction) of the probabilities at the original geometry: the prediction is, with lcc, the
    thresholded volume's 3-D largest connected component alone, as the reference; else the thresholded volume."""
    thresholded = binarise(restored, threshold, lcc=False)
    return thresholded, largest_connected_component(thresholded) if lcc else thresholded


def write_masks(mask, patient, slice_files, folder, layout, copy_images=True):
    """One mask file (uint8 0/255, at the slice's own size) per original slice, named as the layout names them
    (kaggle_3m: <patient>/<patient>_<n>_mask.tif; an image: <name>_mask.png, in a folder of its case when the case
    has several), optionally with the image beside it."""
    folder = Path(folder) / patient if len(slice_files) > 1 else Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for plane, (number, image_path, _) in zip(mask, slice_files):
        path = folder / layout.mask_name(patient, number, image_path)
        written = (plane > 0).astype(np.uint8) * 255
        tifffile.imwrite(path, written) if path.suffix == ".tif" else iio.imwrite(path, written)
        if copy_images:
            shutil.copyfile(image_path, folder / image_path.name)
    return folder


def patient_overlays(data, patient, pred, true):
    """One RGB overlay per original slice, at its own geometry: the slice file's overlay channel (kaggle_3m: the
    FLAIR) with the prediction (at the original geometry, as the masks written) outlined red and the truth green
    (none where true is None)."""
    blank = np.zeros_like(pred[0])
    channel = data.layout.overlay_channel(data.channels)
    return [overlay(data.layout.read_image(image, len(data.channels))[..., channel], pred[s],
                    blank if true is None else true[s])
            for s, (_, image, _) in enumerate(data.files[patient])]


def save_pictures(patient, frames, numbers, predictions_dir, gif_fps=5):
    """Per-slice PNGs <patient>_<n>.png, n the dataset's slice number (as its <patient>_<n>.tif), and
    <patient>.gif; returns the GIF path. numbers None: one image, <case>.png alone, its path returned."""
    predictions_dir = Path(predictions_dir)
    predictions_dir.mkdir(parents=True, exist_ok=True)
    if numbers is None:
        iio.imwrite(predictions_dir / f"{patient}.png", frames[0])
        return predictions_dir / f"{patient}.png"
    for number, frame in zip(numbers, frames):
        iio.imwrite(predictions_dir / f"{patient}_{number}.png", frame)
    gif = predictions_dir / f"{patient}.gif"
    iio.imwrite(gif, np.stack(frames), duration=1000 / gif_fps, loop=0)
    return gif


def write_metrics(rows, path):
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=METRIC_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({key: ("" if isinstance(value, float) and np.isnan(value) else value)
                             for key, value in row.items()})


def write_metrics_summary(summary, path):
    """metrics_summary's result as CSV: a row per statistic, empty where a metric had no value."""
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=("statistic", *METRIC_COLUMNS[1:]))
        writer.writeheader()
        for statistic, values in summary.items():
            writer.writerow(dict(statistic=statistic, **{key: "" if np.isnan(value) else round(value, 6)
                                                         for key, value in values.items()}))


def choose_subset(params, data_dir):
    if params["patients"] is not None or params["subset"] != "auto":
        return params["subset"] if params["subset"] != "auto" else "all"
    layout, files = dataset.list_cases(data_dir, params["dataset"], False, params["case_pattern"])
    all_masked = all(mask is not None for slices in files.values() for _, _, mask in slices)
    cases = params["validation_cases"] if params["validation_cases"] is not None else layout.validation_cases
    return "validation" if all_masked and len(files) > dataset.validation_count(cases, len(files)) else "all"


def choose_patients(params, data_dir, split):
    """(subset, patients or None) to predict. A model that records its split is scored on its own validation
    patients (a k-fold model: its fold's) when subset is "validation", or "auto" and the folder holds them all
    with their masks, whatever validation_cases says."""
    own = (split or {}).get("validation_patients")
    if params["patients"] is None and params["subset"] in ("auto", "validation") and own:
        files = dataset.list_cases(data_dir, params["dataset"], False, params["case_pattern"])[1]
        if all(patient in files and all(mask for _, _, mask in files[patient]) for patient in own):
            return "all", list(own)
    return choose_subset(params, data_dir), params["patients"]


def warn_trained_on(patients, split, weights):
    """Name the patients this model trained on: their scores are not validation scores."""
    trained = sorted(set(patients) & set((split or {}).get("train_patients", [])))
    if trained:
        print(f"warning: {weights} was trained on {len(trained)} of these patients ({', '.join(trained)}): "
              "their scores measure fitting, not generalisation")
    return trained


def refuse_overlap(out_dir, data_dir):
    """Predictions are never written over or among the input files (a predicted mask over its truth scores 1)."""
    out_dir, data_dir = Path(out_dir).resolve(), Path(data_dir).resolve()
    if out_dir == data_dir or data_dir in out_dir.parents or out_dir in data_dir.parents:
        raise dataset.DataError(
            f"predictions_dir {out_dir} overlaps the data folder {data_dir}: predicted masks would be written over "
            "or among the input files; choose a predictions_dir outside the data folder"
        )


def run(**overrides):
    """Predict, write every output, and return what was found.

    {'metrics': rows, 'dsc': {patient: reference DSC}, 'gifs': [...], 'patients': [...],
     'pictures': {patient: its GIF, or for a case of one image its overlay PNG},
     'telling_slice': {patient: the number of its slice with the most tumour (true, else predicted)},
     'telling_masks': {patient: the predicted mask at that slice (2-D, bool, at the original geometry)},
     'figure': the dsc.png written (None without masks), 'predictions_dir': where the outputs are}
    """
    params = parameters.check_inference(parameters.settings(DEFAULTS, **overrides))
    data_dir, source = dataset.locate_data(params["data_path"], dataset=params["dataset"])
    params = runs.inference_outputs(params, data_dir)
    refuse_weights_in_training(params["weights"])
    device = resolve_device(params["device"])
    model, metadata = load_weights(params["weights"], device)
    slow = emulated_bf16_line(device, 'precision="bf16"') if params["precision"] == "bf16" else None
    if slow:
        print(f'warning: {slow}; precision="float32" is faster here')
    image_size = params["image_size"] or metadata.get("image_size", 256)
    if metadata.get("image_size", image_size) != image_size:
        print(f"warning: {params['weights']} was trained at {metadata['image_size']} px, predicting at {image_size}")
    out_dir = Path(params["predictions_dir"])
    refuse_overlap(out_dir, data_dir)
    # before any work: a folder that cannot be written is said now, and one other inference writes is refused
    with FolderLock(out_dir, "predictions", advice="another inference writes there; wait for it to finish, or "
                                                   "give this one another predictions_dir"):
        claim_predictions(out_dir, params["weights"], data_dir)
        return _predict_and_write(params, model, metadata, image_size, data_dir, source, out_dir, device)


def refuse_weights_in_training(weights):
    """Weights that a live training still rewrites are mid-training weights: their scores would be taken as the
    run's."""
    lock = FolderLock(Path(weights).parent)
    if lock.held_by_another():
        raise WeightsError(f"{weights}: its run is still training (pid {lock.owner()}), so these are mid-training "
                           "weights; wait for the training to finish, or copy the file and point weights at the copy")


PREDICTIONS_SOURCE = "source.json"


def claim_predictions(out_dir, weights, data_dir):
    """Record in out_dir which weights predicted which data; refuse a folder that holds another pair's outputs
    (their metrics, masks and pictures would be replaced or mixed)."""
    source = dict(weights=str(Path(weights).resolve()), data=str(Path(data_dir).resolve()))
    path = Path(out_dir) / PREDICTIONS_SOURCE
    if path.exists():
        try:
            held = json.loads(path.read_text())
        except ValueError:
            held = None
        if held != source:
            described = (f"predictions of {held.get('weights')} on {held.get('data')}" if isinstance(held, dict)
                         else f"an unreadable {PREDICTIONS_SOURCE}")
            raise OutputError(f"{out_dir}: holds {described}; these would be of {source['weights']} on "
                              f"{source['data']}: give another predictions_dir, or remove that folder to replace them")
    write_json_atomic(source, path)


def _predict_and_write(params, model, metadata, image_size, data_dir, source, out_dir, device):
    split = metadata.get("split")
    subset, patients = choose_patients(params, data_dir, split)
    chosen = "the model's own validation" if patients is not None and params["patients"] is None else (
        subset if patients is None else "chosen")
    print(f"data: {data_dir} ({source}), {chosen} patients; weights: {params['weights']}; image size {image_size}")
    context = metadata.get("context_slices", 0)  # the neighbours each slice came with in training (2.5-D)
    data = dataset.BrainSegmentationDataset(
        data_dir, subset=subset, patients=patients, image_size=image_size, random_sampling=False,
        validation_cases=params["validation_cases"], cache_dir=params["cache_dir"], workers=params["workers"],
        require_masks=False, context_slices=context, dataset=params["dataset"], case_pattern=params["case_pattern"],
        channels=model_channels(metadata, context), to_square=metadata.get("to_square", "pad"),
    )
    lcc = data.layout.largest_component if params["lcc"] is None else params["lcc"]
    warn_trained_on(data.patients, split, params["weights"])
    predictions = predict(model, data, device, params["batch_size"], params["tta"], fuse=params["fuse"],
                          precision=params["precision"])
    rows, reference_dsc, gifs, telling_slice, telling_masks, pictures = [], {}, [], {}, {}, {}
    for index, (patient, (inputs, probs, truths)) in enumerate(
        tqdm(predictions.items(), desc="writing", unit="case", disable=not on_terminal())
    ):
        pred = binarise(probs, params["threshold"], lcc)
        has_mask = data.has_masks[patient]
        files = data.files[patient]
        thresholded, original = post_process(preprocessing.restore_geometry(probs, data.geometries[index]),
                                             params["threshold"], lcc)
        truth = data.truth(patient) if has_mask else None
        numbers = [number for number, _, _ in files]
        telling = int(np.argmax((truth if has_mask else original).sum(axis=(1, 2))))
        telling_slice[patient], telling_masks[patient] = numbers[telling], original[telling] > 0
        several = len(files) > 1  # slices of a volume: a picture each and a GIF; one image: its picture
        pictures[patient] = save_pictures(patient, patient_overlays(data, patient, original, truth),
                                          numbers if several else None, out_dir, params["gif_fps"])
        if several:
            gifs.append(pictures[patient])
        if params["write_masks"]:
            write_masks(original, patient, files, out_dir / "masks", data.layout, params["copy_images"])
        if has_mask:
            reference_dsc[patient] = dsc(pred, truths)  # pred is already post-processed
            rows.append(patient_metrics(patient, thresholded, original, truth, reference_dsc[patient]))
    if rows:
        write_metrics(rows, out_dir / "metrics.csv")
        summary = metrics_summary(rows)
        write_metrics_summary(summary, out_dir / "metrics-summary.csv")
        # the headline's DSC, at the original geometry (the reference plotted its grid DSC: metrics.csv has both)
        plot_dsc({row["patient"]: row["dsc"] for row in rows},
                 "DSC per patient at the original geometry").savefig(params["figure"])
        print(f"{len(rows)} patients with masks: DSC mean {summary['mean']['dsc']:.4f}, median "
              f"{summary['median']['dsc']:.4f} (original geometry); reference DSC mean "
              f"{summary['mean']['dsc_preprocessed']:.4f}")
    return dict(metrics=rows, dsc=reference_dsc, gifs=gifs, pictures=pictures, patients=data.patients,
                telling_slice=telling_slice, telling_masks=telling_masks,
                figure=params["figure"] if rows else None, predictions_dir=str(out_dir))
