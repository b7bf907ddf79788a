"""Seconds to segment one patient on this machine: today's path against batch norm folding with channels_last,
and with bfloat16 autocast, side by side in one run.

    python -m benchmarks.inference_speed --data PATH/TO/kaggle_3m [--patient TCGA_DU_7309_19960831]
        [--weights weights.pt] [--batch-size 32] [--repeats 2] [--out results/inference-speed-cpu.md]

Each variant runs the whole of inference.run for the patient (read, preprocess, predict, largest connected
component, overlays, GIF, mask TIFFs at the original geometry, metrics), best of --repeats; the prediction
alone is timed too. Probabilities are compared with today's path. Without --weights, the shipped trained
weights (pretrained/unet-lgg-256.pt). --out writes the lines with the command, commit, machine and its load.
"""

import argparse
import shlex
import sys
import tempfile
from datetime import datetime, timezone
import time
from pathlib import Path

import numpy as np
import torch

import checkpoint
import dataset
from layouts import kaggle_3m
import inference
import runs
import runtime

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
    parser.add_argument("--out", help="also write the lines with their provenance to this markdown file")
    args = parser.parse_args()
    data_dir, _ = dataset.locate_data(args.data)
    patient = args.patient if args.data else sorted(kaggle_3m.list_patients(data_dir))[0]
    lines = []
    with tempfile.TemporaryDirectory() as folder:
        weights = args.weights or str(runs.SHIPPED_WEIGHTS)
        model, metadata = checkpoint.load_weights(weights)
        data = dataset.BrainSegmentationDataset(data_dir, subset="all", patients=[patient], random_sampling=False,
                                                image_size=metadata.get("image_size", 256), cache_dir=None,
                                                progress=False, require_masks=False)
        slices = len(data)
        lines.append(f"{patient}: {slices} slices at {metadata.get('image_size', 256)} px after the preprocessing; "
                     f"weights {weights}; {torch.get_num_threads()} threads; "
                     f"{runtime.device_description(torch.device('cpu'))}; torch {torch.__version__}")
        print(lines[-1])
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
        lines.append(f"{name:38s} {whole:6.2f} s a patient ({baseline / whole:4.2f}x)   prediction "
                     f"{predicting:6.2f} s, {slices / predicting:5.1f} slices/s   max |p - p_today| {difference:.1e}, "
                     f"pixels flipped {changed:.1e}")
        print(lines[-1])
    if args.out:
        Path(args.out).write_text(
            f"# Inference time for one patient\n\n- Written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by "
            f"`python -m benchmarks.inference_speed {shlex.join(sys.argv[1:])}` at commit {runtime.git_commit()}\n"
            f"- Load average when it ended: {runtime.load_average()} (2 threads alone show about 2)\n\n```\n"
            + "\n".join(lines) + "\n```\n")


if __name__ == "__main__":
    main()
