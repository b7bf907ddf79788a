"""A trained run's probabilities at the original geometry, patient by patient: what the tools that compare
post-processing rules and inference variants score."""

from pathlib import Path

import dataset
from layouts import kaggle_3m
import preprocessing
import runs
import inference
from checkpoint import load_weights


def native_probabilities(folder, cache_dir=None, device="cpu", tta=None):
    """Yields (patient, probabilities at the original geometry, truth) for each validation patient of the run in
    folder (results.json, weights/unet.pt), with its best weights; tta None: as the run was trained to infer."""
    folder = Path(folder)
    results = runs.read_results(folder)
    model, metadata = load_weights(folder / runs.WEIGHTS_FILE, device)
    data = dataset.BrainSegmentationDataset(
        results["data_dir"], subset="all", patients=list(results["validation_patients"]),
        image_size=metadata["image_size"], random_sampling=False, require_masks=True,
        cache_dir=cache_dir or results["params"].get("cache_dir"), context_slices=metadata.get("context_slices", 0))
    if tta is None:
        tta = results["params"].get("tta", False)
    predictions = inference.predict(model, data, device, tta=tta)
    for index, (patient, (_, probs, _)) in enumerate(predictions.items()):
        yield (patient, preprocessing.restore_geometry(probs, data.geometries[index]),
               kaggle_3m.LAYOUT.truth(data.files[patient]))
