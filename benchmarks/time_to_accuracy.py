"""Time to accuracy: the training time and the images x pixels each recipe needs to reach a validation DSC at
the original 256x256 geometry on the reference split, against the reference recipe, trained one after the
other in one run on this machine.

    python -m benchmarks.time_to_accuracy --data kaggle_3m --runs-dir runs-tta --out results/time-to-accuracy.md \\
        [--recipes unet-dice unet-bce_dice-fast] [--epochs 12] [--image-size 64] [--targets 0.85 0.88 0.90]

The first recipe is the baseline of the ratios; --epochs and --image-size apply to the recipes that do not set
their own (the fast recipe does). Each trains through experiments.py, so a stopped benchmark resumes; times are
only comparable when the runs had the machine to themselves, so each run's mean load is printed beside it.
Every epoch is scored at the original geometry (history's val_dsc_native), and the training time (validation
included) and images x pixels up to that epoch are in the history too.
"""

import argparse
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

import experiments
import runtime


def reach(history, target):
    """The first epoch whose DSC at the original geometry is >= target: (epoch, train seconds, pixels), or None."""
    for entry in history:
        if entry.get("val_dsc_native", -1.0) >= target:
            return entry["epoch"], entry["train_seconds"], entry["pixels"]
    return None


def table(runs, targets):
    """Lines of text: per recipe and target, when it got there and how much sooner than the first recipe."""
    baseline_name = next(iter(runs))
    lines = []
    for name, results in runs.items():
        history = results["history"]
        loads = [entry.get("load_average") for entry in history if entry.get("load_average") is not None]
        best = max((entry.get("val_dsc_native", float("nan")) for entry in history), default=float("nan"))
        lines.append(f"{name}: best DSC at 256x256 {best:.4f}; {len(history)} epochs in "
                     f"{history[-1]['train_seconds'] / 60:.1f} min; commit {results['commit']}, mean load "
                     f"{np.mean(loads) if loads else float('nan'):.1f}")
        for target in targets:
            got, base = reach(history, target), reach(runs[baseline_name]["history"], target)
            if got is None:
                lines.append(f"  {target:.2f}: not reached in {len(history)} epochs")
                continue
            epoch, seconds, pixels = got
            ratio = "" if base is None or name == baseline_name else \
                f"; {base[1] / seconds:.1f}x sooner, {base[2] / pixels:.1f}x fewer pixels than {baseline_name}"
            if base is None and name != baseline_name:
                ratio = f"; {baseline_name} did not reach it"
            lines.append(f"  {target:.2f}: epoch {epoch}, {seconds / 60:.1f} min, {pixels / 1e9:.2f} Gpx{ratio}")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None)
    parser.add_argument("--runs-dir", default="runs-time-to-accuracy")
    parser.add_argument("--recipes", nargs="+", default=["unet-dice", "unet-bce_dice-fast"])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--targets", type=float, nargs="+", default=[0.85, 0.88, 0.90])
    parser.add_argument("--cache-dir", default="data/cache")
    parser.add_argument("--out", help="also write the table with its provenance to this markdown file")
    args = parser.parse_args(argv)
    overrides = dict(epochs=args.epochs, image_size=args.image_size, batch_size=16, data_pipeline="device",
                     workers=0, cache_dir=args.cache_dir)
    runs = {name: experiments.run(name, args.runs_dir, args.data, overrides, executor="python")
            for name in args.recipes}
    lines = table(runs, args.targets)
    print("\n".join(lines))
    if args.out:
        text = provenance(runs, argv if argv is not None else sys.argv[1:]) + "\n".join(lines) + "\n```\n"
        Path(args.out).write_text(text)
    return 0


def provenance(runs, argv):
    first = next(iter(runs.values()))
    return (f"# Time to accuracy on the reference split\n\n"
            f"- Written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by `python -m benchmarks.time_to_accuracy "
            f"{shlex.join(argv)}`\n- Device: {first['device']}; commit(s): "
            f"{', '.join(sorted({results['commit'] for results in runs.values()}))}; split: {first['split']}\n"
            f"- Load average now: {runtime.load_average()} (each run's mean load is below: a run alone on 2 "
            f"threads shows about 2, more means it shared the cores)\n\n```\n")


if __name__ == "__main__":
    raise SystemExit(main())
