"""Does a one-process torchrun run train exactly as the plain run? Issue "Beyond one GPU" asks it on a GPU; on a
CPU it runs with gloo.

    python -m tools.torchrun_check [--data DIR] [--epochs 2] [--device auto] [--out FILE.md]     (repo root)

Trains the same settings twice, `python train.py` and `torchrun --nproc_per_node=1 train.py` (deterministic, the
device data pipeline that torchrun takes), on DIR (default: phantom patients written to a temporary folder, so a
lent GPU needs no data shipped), and compares every epoch's training loss, validation loss and validation DSC and
the best weights. Prints the table (and with --out writes it); exit status 1 where they differ by more than
--tolerance.

What it checks: torchrun's launch (its environment, the device a rank takes, rank 0's files) on the machine it
runs on. A group of one process trains as a plain process does (distributed.Group: no process group, no
DistributedDataParallel wrapper), so gradient averaging over ranks is what tests/test_distributed.py checks
with two gloo processes, not this.
"""

import argparse
import json
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

import results_files
import runs
import synthetic

REPO = Path(__file__).resolve().parent.parent
COMPARED = ("loss", "val_loss", "val_dsc")


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def train_command(launcher, settings):
    """launcher: the interpreter's arguments before train.py; settings as train.py's -p NAME VALUE pairs."""
    command = [sys.executable, *launcher, "train.py"]
    for name, value in settings.items():
        command += ["-p", name, json.dumps(value)]
    return command


def run(launcher, settings, log):
    """Train with settings in their own runs_dir; returns the run's folder. RuntimeError, with the log's end, on a
    failure."""
    finished = subprocess.run(train_command(launcher, settings), cwd=REPO, capture_output=True, text=True)
    log.write_text(finished.stdout + finished.stderr)
    if finished.returncode != 0:
        raise RuntimeError(f"{' '.join(launcher) or 'python'} train.py failed (exit {finished.returncode}): "
                           + (finished.stdout + finished.stderr)[-1500:])
    [folder] = Path(settings["runs_dir"]).iterdir()
    return folder


def comparison(plain, launched):
    """(table lines, the largest difference of any compared figure or weight) of two run folders."""
    first, second = runs.read_results(plain), runs.read_results(launched)
    lines = ["| epoch | " + " | ".join(f"{name}: python / torchrun" for name in COMPARED) + " |",
             "| --- |" + " --- |" * len(COMPARED)]
    largest = 0.0
    for one, other in zip(first["history"], second["history"], strict=True):
        cells = []
        for name in COMPARED:
            largest = max(largest, abs(one[name] - other[name]))
            cells.append(f"{one[name]:.6f} / {other[name]:.6f}")
        lines.append(f"| {one['epoch']} | " + " | ".join(cells) + " |")
    weights = [torch.load(folder / runs.WEIGHTS_FILE, map_location="cpu", weights_only=False)["state_dict"]
               for folder in (plain, launched)]
    weight_difference = max((weights[0][key].float() - weights[1][key].float()).abs().max().item()
                            for key in weights[0])
    lines += ["", f"Best weights: epoch {first['best_epoch']} and {second['best_epoch']}; the largest difference of "
                  f"any weight or buffer {weight_difference:.3g} (processes recorded: "
                  f"{second.get('processes', 1)})."]
    return lines, max(largest, weight_difference)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="a data folder (default: phantom patients in a temporary folder)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--init-features", type=int, default=8)
    parser.add_argument("--device", default="auto", help='train.py\'s device ("auto": the GPU if there is one)')
    parser.add_argument("--tolerance", type=float, default=1e-6)
    parser.add_argument("--out", help="write the comparison here (markdown, with the command and commit)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        data = args.data or str(synthetic.make_phantom_dataset(scratch / "phantom", patients=8, slices=8, seed=3))
        settings = dict(data_path=data, image_size=args.image_size, init_features=args.init_features, batch_size=4,
                        validation_cases=3, data_pipeline="device", vis_images=0, epochs=args.epochs, threads=1,
                        deterministic=True, lr=1e-3, device=args.device, cache_dir=str(scratch / "cache"))
        plain = run([], dict(settings, runs_dir=str(scratch / "python")), scratch / "python.log")
        launched = run(["-m", "torch.distributed.run", "--nproc_per_node=1", "--master_port", str(free_port())],
                       dict(settings, runs_dir=str(scratch / "torchrun")), scratch / "torchrun.log")
        lines, largest = comparison(plain, launched)
        device = runs.read_results(launched)["device"]
    verdict = "equal" if largest <= args.tolerance else "DIFFERENT"
    lines += ["", f"{verdict}: the largest difference {largest:.3g} against a tolerance of {args.tolerance:g}."]
    if args.out:
        results_files.write(args.out, "One process under torchrun against the plain run", "tools.torchrun_check",
                            argv, f"Device: {device}; torch {torch.__version__}; {args.epochs} epochs at "
                            f"{args.image_size} px of {'the data at ' + args.data if args.data else 'phantom patients'}"
                            f", deterministic, the device data pipeline. One process is a group of one "
                            "(distributed.Group): this checks torchrun's launch on this device, not gradient "
                            "averaging over ranks.", lines)
    print("\n".join(lines))
    return 0 if largest <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
