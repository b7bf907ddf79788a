"""Validation and the end of each epoch: per-patient DSC (on the preprocessed grid, as the reference, and at
the original 256x256 geometry, as inference scores), TensorBoard scalars and overlays, best weights,
checkpoint and results file. Model selection stays on the grid DSC, as the reference's; a progressive run
chooses among its epochs at image_size only."""

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

import checkpoint
import safe_files
import preprocessing
import runs
from unet import probabilities
from metrics import dsc
from utils import binarise, overlay, split_by_patient

WEIGHTS_NAME = runs.WEIGHTS_FILE.name


def validate(model, batches, loss_fn, speed, keep_images=0, tta=False, flair=0):
    """Mean batch loss; the probabilities (float32) and truths (uint8 0/1) of every slice, on the CPU; and the
    (FLAIR, truth, thresholded prediction) of the first keep_images slices, for overlays (flair: the input
    channel overlays draw on, the dataset's overlay_channel: for kaggle_3m the slice's own FLAIR).

    The loss is of the plain prediction; the probabilities are the flip-TTA ones when tta.
    """
    model.eval()
    losses, probs, trues, shown = [], [], [], []
    kept = 0
    with torch.no_grad():
        for x, y_true in batches:
            x = x.contiguous(memory_format=speed.memory_format)
            with speed.autocast():
                logits = model(x)
                y_pred = probabilities(model, x, tta, logits=logits)
            losses.append(loss_fn(logits.float(), y_true).item())
            probs.append(y_pred[:, 0].cpu().numpy())
            trues.append((y_true[:, 0] > 0.5).to(torch.uint8).cpu().numpy())
            if kept < keep_images:
                shown.append(x[: keep_images - kept, flair].float().cpu().numpy())
                kept += len(shown[-1])
    probs, trues = np.concatenate(probs), np.concatenate(trues)
    examples = [(image, trues[i], binarise(probs[i], lcc=False)) for i, image in enumerate(np.concatenate(shown))] \
        if shown else []
    return float(np.mean(losses)), probs, trues, examples


def grid_dsc(probs, trues, patient_slice_index, lcc=True):
    """The reference's validation DSC, per patient on the preprocessed grid: each patient's slices stacked into a
    volume, thresholded and (with lcc, the layout's largest_component) reduced to its 3-D largest connected
    component (utils.binarise), then measured."""
    volumes, truths = (split_by_patient(part, patient_slice_index) for part in (probs, trues))
    return [dsc(binarise(volume, lcc=lcc), truth) for volume, truth in zip(volumes, truths)]


def split_record(params, valid_set, train_patients):
    """What a trained model must know of its split: inference scores it on these patients only."""
    return dict(seed=params["seed"], validation_cases=params["validation_cases"], folds=params["folds"],
                fold=params["fold"], validation_patients=list(valid_set.patients),
                train_patients=list(train_patients))


@dataclass
class TrainedEpoch:
    """What the training loop knows of an epoch once its validation pass has run: the first fields of the epoch's
    history entry (history_entry adds the scores)."""
    epoch: int  # counted from 1
    step: int  # optimiser steps so far: TensorBoard's x axis
    loss: float
    lr: float
    image_size: int  # what this epoch trained at (a progressive run's early epochs are smaller)
    images: int  # trained so far, and their pixels: the run's compute budget
    pixels: int
    validation_seconds: float
    load_average: float | None  # beside the timings: whether something else ran meanwhile


def history_entry(trained, val_loss, patients, grid, native, without_lcc, train_seconds):
    """An epoch's entry in results.json's history, whole: what training knew, then validation's per-patient DSC
    on the training grid (grid), at the original geometry after the largest component (native) and without it."""
    return dict(asdict(trained), val_loss=val_loss, val_dsc=float(np.mean(grid)),
                val_dsc_per_patient=dict(zip(patients, grid)),
                val_dsc_native=float(np.mean(native)),
                val_dsc_native_per_patient=dict(zip(patients, native)),
                val_dsc_native_without_lcc=float(np.mean(without_lcc)),
                val_dsc_native_without_lcc_per_patient=dict(zip(patients, without_lcc)),
                train_seconds=train_seconds)


class EpochEnd:
    """What follows an epoch's validation pass, run in the background: per-patient DSC, TensorBoard scalars
    and overlays, the best weights, the checkpoint and results.json (in that order: the checkpoint is never
    behind the weights it names the best).

    It owns the results dict from the start of training: the loop reads it back only once every epoch's end
    has run (train() returns it then).
    """

    def __init__(self, results, logger, valid_set, params, model_args, checkpoint_path):
        self.results, self.logger, self.valid_set = results, logger, valid_set
        self.params, self.model_args, self.checkpoint_path = params, model_args, Path(checkpoint_path)
        # the truths at the original geometry, read once: each epoch is scored there too (native_dsc)
        self.native_truths = [valid_set.truth(patient) for patient in valid_set.patients]
        self.lcc = valid_set.layout.largest_component

    def native_dsc(self, probs):
        """Per-patient DSC at the original geometry: the probabilities put back through the inverse of the
        preprocessing, then thresholded and reduced to the 3-D largest connected component, as inference; and
        without that component (what it threw away: a patient whose tumour is not the largest component scores 0)."""
        volumes = split_by_patient(probs, self.valid_set.patient_slice_index)
        restored = [preprocessing.restore_geometry(volume, geometry)
                    for volume, geometry in zip(volumes, self.valid_set.geometries)]
        return ([dsc(binarise(volume, lcc=self.lcc), truth) for volume, truth in zip(restored, self.native_truths)],
                [dsc(binarise(volume, lcc=False), truth) for volume, truth in zip(restored, self.native_truths)])

    def __call__(self, trained, seconds, val_loss, probs, trues, examples, snapshot):
        """trained: the TrainedEpoch; seconds: train_seconds and wall_seconds at the epoch's end; probs, trues:
        per validation slice; examples: (FLAIR, truth, prediction) to draw; snapshot: the CPU copy of the training
        state for the checkpoint."""
        results, params, step = self.results, self.params, trained.step
        per_patient = grid_dsc(probs, trues, self.valid_set.patient_slice_index, self.lcc)
        mean_dsc = float(np.mean(per_patient))
        self.logger.scalar_summary("val_loss", val_loss, step)
        self.logger.scalar_summary("val_dsc", mean_dsc, step)
        for index, (flair, true, pred) in enumerate(examples):  # the first validation slices, in order
            patient, plane = self.valid_set.patient_slice_index[index]
            name = self.valid_set.patients[patient]
            # the file's own number: the grid's slices start at the geometry's first kept one (the preprocessing
            # dropped a volume's first slice and cropped black ones)
            number = self.valid_set.files[name][int(self.valid_set.geometries[patient][1]) + plane][0]
            self.logger.image_summary(f"validation overlays (red prediction, green truth)/{name} slice {number}",
                                      overlay(flair, pred, true), step)
        # A progressive run's smaller epochs train and validate on the image_size preprocessing averaged down,
        # which is not what inference gives a smaller model (the small size's own preprocessing: on the
        # reference split 0.884 at 256x256 instead of 0.893), and their grid is another grid: only epochs at
        # image_size are candidates for the best weights.
        candidate = trained.image_size == params["image_size"]
        if candidate and (results["best_epoch"] is None or mean_dsc > results["best_val_dsc"]):  # even at DSC 0
            results.update(best_val_dsc=mean_dsc, best_epoch=trained.epoch)
            # the evaluated weights: the moving average's when the run keeps one (snapshot["weights"])
            checkpoint.save_weights(snapshot.get("weights", snapshot["model"]),
                                    Path(params["weights_dir"]) / WEIGHTS_NAME, params["image_size"],
                                    self.model_args, params["model"],
                                    split=split_record(params, self.valid_set, results["train_patients"]),
                                    context_slices=params["context_slices"], to_square=params["to_square"])
        native, without_lcc = self.native_dsc(probs)
        self.logger.scalar_summary("val_dsc_256", float(np.mean(native)), step)
        entry = history_entry(trained, val_loss, self.valid_set.patients, per_patient, native, without_lcc,
                              seconds["train_seconds"])
        previous = results["history"][-1]["train_seconds"] if results["history"] else 0.0
        results.update(seconds)
        results["history"].append(entry)
        safe_files.save_atomic(dict(snapshot, results=results), self.checkpoint_path)
        safe_files.write_json_atomic(results, self.checkpoint_path.parent / runs.RESULTS_FILE.name)
        print(epoch_line(entry, params["epochs"], entry["train_seconds"] - previous,
                         best=results["best_epoch"] == entry["epoch"], native=self.valid_set.layout.original_size),
              flush=True)


def epoch_line(entry, epochs, seconds, best=False, native="256x256"):
    """The log's one line for an epoch, written once its results are saved (the progress bars show only on a
    terminal: under papermill --log-output they wrote ~1,000 lines an epoch and never these figures). native: the
    original geometry's name (kaggle_3m's slices are 256x256; a folder's images each have their own size)."""
    return (f"epoch {entry['epoch']}/{epochs}: loss {entry['loss']:.4f}, val loss {entry['val_loss']:.4f}, "
            f"val DSC {entry['val_dsc']:.4f} (at {native} {entry['val_dsc_native']:.4f}), {seconds:.1f} s"
            + (", best so far" if best else ""))
