"""A trained run's predictions on its own validation cases with its best weights: on the training grid (what
tools/folder_results.py scores as the UNet++ tutorial does) and at the original geometry, case by case (what the
tools that compare post-processing rules and inference variants score)."""

from pathlib import Path

import dataset
import preprocessing
import runs
import inference
from checkpoint import load_weights


def validation_predictions(folder, cache_dir=None, device="cpu", tta=None):
    """(the validation Dataset, inference.predict's {case: (inputs, probabilities, truths)} on the training grid)
    of the run in folder (results.json, weights/unet.pt), with its best weights, its data's layout and the
    channels and neighbours the model takes; tta None: as the run was trained to infer."""
    folder = Path(folder)
    results = runs.read_results(folder)
    params = results["params"]
    model, metadata = load_weights(folder / runs.WEIGHTS_FILE, device)
    context = metadata.get("context_slices", 0)
    data = dataset.BrainSegmentationDataset(
        results["data_dir"], subset="all", patients=list(results["validation_patients"]),
        image_size=metadata["image_size"], random_sampling=False, require_masks=True,
        cache_dir=cache_dir or params.get("cache_dir"), context_slices=context, dataset=params.get("dataset"),
        case_pattern=params.get("case_pattern"), channels=inference.model_channels(metadata, context),
        to_square=metadata.get("to_square", "pad"))
    return data, inference.predict(model, data, device, tta=params.get("tta", False) if tta is None else tta)


def native_probabilities(folder, cache_dir=None, device="cpu", tta=None):
    """Yields (case, probabilities at the original geometry, truth) for each validation case of the run in folder
    (validation_predictions)."""
    data, predictions = validation_predictions(folder, cache_dir, device, tta)
    for index, (patient, (_, probs, _)) in enumerate(predictions.items()):
        yield patient, preprocessing.restore_geometry(probs, data.geometries[index]), data.truth(patient)
