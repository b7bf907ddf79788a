"""Seconds to segment one patient on this machine: today's path against batch norm folding with channels_last,
and with bfloat16 autocast, side by side in one run.

    python -m benchmarks.inference_speed --data PATH/TO/kaggle_3m [--patient TCGA_DU_7309_19960831]
        [--weights weights.pt] [--batch-size 32] [--repeats 2]

Each variant runs the whole of inference.run for the patient (read, preprocess, predict, largest connected
component, overlays, GIF, mask TIFFs at the original geometry, metrics), best of --repeats; the prediction
alone is timed too. Probabilities are compared with today's path. Without --weights, a randomly initialised
reference U-Net (the arithmetic is that of trained weights) is saved at 256 px.
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import checkpoint
import dataset
import inference
import runtime
from unet import UNet

VARIANTS = {"today's path (float32)": dict(fuse=False, precision="float32"),
            "folded batch norm, channels_last": dict(fuse=True, precision="float32"),
            "folded, channels_last, bf16 autocast": dict(fuse=True, precision="bf16")}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None)
    parser.add_argument("--patient", default="TCGA_DU_7309_19960831")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    data_dir, _ = dataset.locate_data(args.data)
    patient = args.patient if args.data else sorted(dataset.list_patients(data_dir))[0]
    with tempfile.TemporaryDirectory() as folder:
        weights = args.weights
        if weights is None:
            torch.manual_seed(0)
            weights = str(Path(folder) / "unet.pt")
            checkpoint.save_weights(UNet(), weights, 256, dict(init_features=32))
        model, metadata = checkpoint.load_weights(weights)
        data = dataset.BrainSegmentationDataset(data_dir, subset="all", patients=[patient], random_sampling=False,
                                                image_size=metadata.get("image_size", 256), cache_dir=None,
                                                progress=False, require_masks=False)
        slices = len(data)
        print(f"{patient}: {slices} slices at {metadata.get('image_size', 256)} px; {torch.get_num_threads()} "
              f"threads; {runtime.device_description(torch.device('cpu'))}; torch {torch.__version__}")
        inference.run(weights=weights, data_path=str(data_dir), patients=[patient], cache_dir=None, workers=1,
                      device="cpu", predictions_dir=str(Path(folder) / "warm-up"))  # imports, caches: not timed
        reference, rows = None, []
        for name, options in VARIANTS.items():
            whole, predicting = [], []
            for repeat in range(args.repeats):
                started = time.perf_counter()
                inference.run(weights=weights, data_path=str(data_dir), patients=[patient], cache_dir=None,
                              workers=1, device="cpu", batch_size=args.batch_size,
                              predictions_dir=str(Path(folder) / f"out-{repeat}"), **options)
                whole.append(time.perf_counter() - started)
                started = time.perf_counter()
                probs = inference.predict(model, data, "cpu", args.batch_size, **options)[patient][1]
                predicting.append(time.perf_counter() - started)
            reference = probs if reference is None else reference
            difference = float(np.abs(probs - reference).max())
            changed = float(((probs > 0.5) != (reference > 0.5)).mean())
            rows.append((name, min(whole), min(predicting), difference, changed))
    baseline = rows[0][1]
    for name, whole, predicting, difference, changed in rows:
        print(f"{name:38s} {whole:6.2f} s a patient ({baseline / whole:4.2f}x)   prediction {predicting:6.2f} s, "
              f"{slices / predicting:5.1f} slices/s   max |p - p_today| {difference:.1e}, pixels flipped "
              f"{changed:.1e}")


if __name__ == "__main__":
    main()
