"""Named training recipes, run as parameterised executions of train.ipynb.

Each run leaves under <runs_dir>/<name>/ (or <name>/fold-<k>/ for k-fold
cross-validation) the executed notebook, its weights and logs, and a copy of
its results file. A run whose results already hold every epoch is skipped;
an interrupted one resumes from its checkpoint.

    python experiments.py --list
    python experiments.py unet-dice unet-bce_dice --data-path kaggle_3m
    python experiments.py --all --data-path kaggle_3m --epochs 50
    python experiments.py unet-bce_dice-adamw-cosine-tta --folds 5 --data-path kaggle_3m
    python experiments.py --all --data-path kaggle_3m --jobs 4 --executor python   # 4 runs at once on one GPU
    python experiments.py unet-dice --folds 5 --data-path kaggle_3m --gpus 0,1,2,3  # a run per GPU, the rest queued
    python experiments.py --all --synthetic      # the phantom data, small settings: minutes on a CPU
    python report.py                             # then REPORT.md from what the runs left
"""

import argparse
import json
import os
import queue
import subprocess
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import runs

REPO = Path(__file__).resolve().parent
NOTEBOOK = REPO / "train.ipynb"

# The reference recipe is train.DEFAULTS: U-Net, Dice, Adam 1e-4 constant, 100 epochs, batch 16, 256 px.
MODERN = dict(loss="bce_dice", optimizer="adamw", lr=1e-3, weight_decay=1e-4, schedule="cosine", warmup_epochs=3,
              grad_clip=1.0)
# The fast recipe (time to accuracy on a CPU, results/time-to-accuracy-cpu.md): the modern recipe in bfloat16 with
# channels_last (1.8x float32 per step at 64 px, 3.3x at 128 on AVX512-BF16 cores: benchmarks/training_options.py;
# torch.compile gave nothing more) where the device computes bfloat16 natively, float32 elsewhere (amp="native":
# emulated, a step took 12.6x float32's on an AVX2 CPU: results/training-options-cpu-avx2.md), most epochs at
# 64 px, then a low-learning-rate finish at 128 px (progressive resizing), one warm-up epoch. It fixes its own
# sizes and epochs: a run's --epochs and image_size are ignored.
FAST = dict(MODERN, amp="native", channels_last=True, warmup_epochs=1, image_size=128, progressive_size=64,
            progressive_epochs=10, epochs=14)
OWN_BUDGET = ("epochs", "image_size", "progressive_size", "progressive_epochs")

EXPERIMENTS = {
    "unet-dice": {},
    "attention_unet-dice": dict(model="attention_unet"),
    "resnet34_unet-dice": dict(model="resnet34_unet", model_args={"pretrained": True}),
    "unet++-dice": dict(model="unet++", model_args={"deep_supervision": True}),
    "unet-bce_dice": dict(loss="bce_dice"),
    "unet-soft_iou": dict(loss="soft_iou"),
    "unet-lovasz": dict(loss="lovasz"),
    "unet-focal": dict(loss="focal"),
    "unet-tversky": dict(loss="tversky"),
    "unet-focal_tversky": dict(loss="focal_tversky"),
    "unet-dice-tta": dict(tta=True),
    "unet-bce_dice-sgd-poly": dict(loss="bce_dice", optimizer="sgd", lr=1e-2, weight_decay=1e-4, schedule="poly",
                                   warmup_epochs=3, grad_clip=1.0),
    "unet-bce_dice-adamw-cosine": dict(MODERN),
    "unet-bce_dice-fast": dict(FAST),
    # levers on the fast recipe, one change a row (issue "fewer failed patients"): the kept weights an average
    # over the last ~500 steps (about 2.5 epochs at the CPU protocol), not one epoch's ...
    "unet-bce_dice-fast-ema": dict(FAST, ema_decay=0.998),
    # ... and the finish at 256 px, the size scored (10 epochs at 64 px, then 2 at 256: 1.6x the fast
    # recipe's images x pixels, within the 2x budget)
    "unet-bce_dice-fast256": dict(FAST, image_size=256, epochs=12),
    # ... and 2.5-D input: each slice with its neighbours above and below (9 channels; the same images x pixels)
    "unet-bce_dice-fast-context": dict(FAST, context_slices=1),
    # ... and nnU-Net's brightness, contrast and gamma augmentation: half the failing patients' abnormalities are
    # hardly brighter than the head on the FLAIR (results/failure-analysis-cpu.md); the same images x pixels
    "unet-bce_dice-fast-intensity": dict(FAST, intensity_augmentation=True),
    # ... and both: context rescued the small tumours lost to a wrong component, intensity augmentation the
    # faint large ones (one seed each, on their screening folds); a sequence draws one factor for the stacked slices
    "unet-bce_dice-fast-context-intensity": dict(FAST, context_slices=1, intensity_augmentation=True),
    # ... and most of the budget at 128 px: 3 epochs at 64, then 12 at 128 (1.96x the fast recipe's images x
    # pixels, within the 2x budget); the finish at 256 px had too few epochs there to stop speckling
    "unet-bce_dice-fast-128": dict(FAST, progressive_epochs=3, epochs=15),
    # ... and on it, 2.5-D context: the 128 px recipe's 5-fold still loses two small tumours to a wrong component
    # (TCGA_CS_5395, TCGA_FG_6690), which context rescued on the fast recipe; no extra images x pixels
    "unet-bce_dice-fast-128-context": dict(FAST, progressive_epochs=3, epochs=15, context_slices=1),
    # ... or intensity augmentation: it under-segments TCGA_HT_A61B (no contrast sequences) and TCGA_DU_A5TS (the
    # lowest FLAIR contrast), which intensity augmentation rescued on the fast recipe; no extra images x pixels
    "unet-bce_dice-fast-128-intensity": dict(FAST, progressive_epochs=3, epochs=15, intensity_augmentation=True),
    # ... and context on that (one change to it): two of its three failures over the 110 patients are fold 3's
    # small abnormalities, TCGA_FG_6690 lost to a wrong component and TCGA_CS_5395 to false positives, the kind
    # context rescued on the 128 px recipe's fold 3 (TCGA_FG_6690 0.00 -> 0.88, though TCGA_CS_5395 went 0.28 ->
    # 0.00 there: the runs' metrics.csv); a fold-3 screen first; no extra images x pixels
    "unet-bce_dice-fast-128-intensity-context": dict(FAST, progressive_epochs=3, epochs=15,
                                                     intensity_augmentation=True, context_slices=1),
    # ... or nnU-Net's deep supervision (unet.UNet): heads on the half- and quarter-resolution decoder outputs,
    # weights halving a level; the field's default and the candidate, not yet tried on the U-Net here (the
    # UNet++ with it equalled the U-Net on the split); the same images x pixels
    "unet-bce_dice-fast-128-ds": dict(FAST, progressive_epochs=3, epochs=15, model_args={"deep_supervision": True},
                                      deep_supervision_weights=[0.25, 0.5, 1.0]),
    # ... or sequence dropout: on the modern recipe (folds 0-3, seed 42) it rescued three large under-segmented
    # abnormalities (TCGA_DU_7018, TCGA_CS_5396, TCGA_HT_7855) and two lacking a sequence (TCGA_DU_7013,
    # TCGA_DU_8165), of which the 128 px recipe fails one (TCGA_DU_7018) and scores three 0.59-0.67
    # (results/failure-analysis-cpu.md); the same images x pixels
    "unet-bce_dice-fast-128-seqdrop": dict(FAST, progressive_epochs=3, epochs=15, sequence_dropout=0.2),
    # one question a row: the loss at the modern optimiser and schedule ...
    "unet-dice-adamw-cosine": dict(MODERN, loss="dice"),
    "unet-soft_iou-adamw-cosine": dict(MODERN, loss="soft_iou"),
    "unet-lovasz-adamw-cosine": dict(MODERN, loss="lovasz"),
    "unet-focal-adamw-cosine": dict(MODERN, loss="focal"),
    "unet-focal_tversky-adamw-cosine": dict(MODERN, loss="focal_tversky"),
    # ... and the network at the modern recipe
    "attention_unet-bce_dice-adamw-cosine": dict(MODERN, model="attention_unet"),
    "resnet34_unet-bce_dice-adamw-cosine": dict(MODERN, model="resnet34_unet", model_args={"pretrained": True}),
    "unet++-bce_dice-adamw-cosine": dict(MODERN, model="unet++", model_args={"deep_supervision": True}),
    # the contrasts replaced by the FLAIR at random, as the dataset fills a missing sequence
    # (results/missing-sequences-cpu.md): a 5-fold question, since no patient of the reference split lacks one
    "unet-bce_dice-adamw-cosine-seqdrop": dict(MODERN, sequence_dropout=0.2),
    # ... and nnU-Net's intensity augmentation on top (one change): three of sequence dropout's five failures over
    # the 110 patients are abnormalities of the lowest FLAIR contrast (results/failure-analysis-cpu.md); a 64 px
    # float32 screen for CPUs without native bfloat16, where the 128 px recipes take several times as long
    "unet-bce_dice-adamw-cosine-seqdrop-intensity": dict(MODERN, sequence_dropout=0.2, intensity_augmentation=True),
    # ... or 2.5-D context on it (one change): of sequence dropout's failures at both seeds, two are small
    # abnormalities beside false positives (TCGA_CS_5395, TCGA_DU_5852) and one a small under-segmented one
    # (TCGA_DU_A5TY), the kinds context rescued on the fast recipe (TCGA_CS_5395 0.00 -> 0.86, TCGA_DU_A5TY 0.46
    # -> 0.58: results/failure-analysis-cpu.md); the same images x pixels
    "unet-bce_dice-adamw-cosine-seqdrop-context": dict(MODERN, sequence_dropout=0.2, context_slices=1),
    "unet-bce_dice-adamw-cosine-tta": dict(MODERN, tta=True),
    "unet64-bce_dice-adamw-cosine-tta": dict(MODERN, tta=True, init_features=64),  # twice as wide
    "attention_unet-bce_dice-adamw-cosine-tta": dict(MODERN, tta=True, model="attention_unet"),
    "resnet34_unet-bce_dice-adamw-cosine-tta": dict(MODERN, tta=True, model="resnet34_unet",
                                                    model_args={"pretrained": True}),
    "unet++-bce_dice-adamw-cosine-tta": dict(MODERN, tta=True, model="unet++",
                                             model_args={"deep_supervision": True}),
    # one's own images (README: Your own images), the 2018 Data Science Bowl nuclei: the UNet++ tutorial's protocol
    # (4uiiurz1/pytorch-nested-unet, train.py's defaults: UNet++ with deep supervision, 0.5 BCE + Dice, SGD 1e-3
    # with momentum 0.9 (ours Nesterov), weight decay 1e-4, cosine, 100 epochs of batch 16 at 96x96, each image
    # resized straight to the square: cv2.resize). These are its 2020 defaults; its README's figures (0.839-0.843)
    # came from its 2019 code: the Lovasz hinge, Adam 3e-4, early stopping (results/dsb2018-cpu.md) ...
    "nuclei-unet++-tutorial": dict(model="unet++", model_args={"deep_supervision": True}, loss="bce_dice",
                                   loss_args={"bce_weight": 0.5}, optimizer="sgd", lr=1e-3, weight_decay=1e-4,
                                   schedule="cosine", image_size=96, epochs=100, to_square="stretch"),
    # ... and the code its README's figures came from (a615437, 2019-03-11; read in its history): the Lovasz hinge
    # per image (averaged over the deep supervision outputs), Adam at a constant 3e-4 without weight decay, no
    # augmentation (its --aug defaulted to False), batch 16, up to 10000 epochs ended by early stopping after 20
    # without a better validation IoU (ours: DSC per case), each image resized straight to 96x96
    "nuclei-unet++-tutorial-2019": dict(model="unet++", model_args={"deep_supervision": True}, loss="lovasz",
                                        optimizer="adam", lr=3e-4, weight_decay=0.0, schedule="constant",
                                        image_size=96, epochs=10000, early_stopping=20, to_square="stretch",
                                        aug_scale=0.0, aug_angle=0, flip_prob=0.0),
    # ... and the U-Net at the fast recipe's optimiser and precision on the same grid, sized for 30 minutes of
    # training on 2 CPU cores
    "nuclei-unet-fast": dict(MODERN, amp="native", channels_last=True, warmup_epochs=1, image_size=96, epochs=60),
    # ... with rotations of any angle (a microscope image has no up; the LGG recipes rotate +-15 degrees)
    "nuclei-unet-fast-rotate": dict(MODERN, amp="native", channels_last=True, warmup_epochs=1, image_size=96,
                                    epochs=60, aug_angle=180),
    # ... or the whole 30 minutes (60 epochs took 23.1 alone: 76 epochs, the cosine stretched over them)
    "nuclei-unet-fast-76": dict(MODERN, amp="native", channels_last=True, warmup_epochs=1, image_size=96, epochs=76),
    # ... or stretched to the square as the tutorial does (a 520x696 image gets all 96 rows, not 72)
    "nuclei-unet-fast-stretch": dict(MODERN, amp="native", channels_last=True, warmup_epochs=1, image_size=96,
                                     epochs=60, to_square="stretch"),
    # the lung-CT tutorial's slices (512x512): the fast recipe's progressive resizing, finishing at 256 px, where a
    # mask put back at 512 loses less of itself than from 128 px (the grid's own ceiling on a slice's score, as
    # tests/test_layouts.py shows for the nuclei; a terminal check on 30 lung slices, not committed, agreed)
    "lung-unet-fast": dict(FAST, image_size=256, progressive_size=128, progressive_epochs=20, epochs=26),
}



def synthetic_settings():
    """--synthetic: train.SYNTHETIC_DEMO's sizes (the phantom default at CPU-friendly settings), not its recipe:
    each experiment keeps its own loss, optimiser, learning rate and schedule."""
    from train import SYNTHETIC_DEMO

    recipe = ("lr", "loss", "optimizer", "schedule", "warmup_epochs")
    return {key: value for key, value in SYNTHETIC_DEMO.items() if key not in recipe}


def run_dir(runs_dir, name, folds=0, fold=0):
    folder = Path(runs_dir) / name
    return folder / f"fold-{fold}" if folds and folds > 1 else folder


def run_parameters(name, out_dir, data_path=None, overrides=None, folds=0, fold=0):
    """The train.ipynb parameters of a run: the recipe, then overrides, then where it writes."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; python experiments.py --list shows them")
    out_dir = Path(out_dir).resolve()
    recipe = EXPERIMENTS[name]
    overrides = dict(overrides or {})
    if "progressive_size" in recipe:  # a recipe that sets its own epochs and sizes keeps them
        ignored = {key: overrides.pop(key) for key in OWN_BUDGET if key in overrides}
        if ignored:
            print(f"{name} keeps its own {', '.join(f'{key}={recipe[key]}' for key in ignored)} "
                  f"(ignored: {ignored})")
    params = {**recipe, **overrides}
    if params.get("warmup_epochs") and "epochs" in params:  # short runs: at most an eighth of them warming up
        params["warmup_epochs"] = min(params["warmup_epochs"], max(1, params["epochs"] // 8))
    params.update(
        data_path=None if data_path is None else str(Path(data_path).resolve()),
        synthetic_demo=False,
        weights_dir=str(out_dir / runs.WEIGHTS_FILE.parent),
        logs_dir=str(out_dir / runs.CHECKPOINT_FILE.parent),
        folds=folds,
        fold=fold,
        resume=True,
    )
    return params


def finished(out_dir, epochs):
    """Whether the run in out_dir trained every epoch asked (or stopped early) and experiments.py recorded it (its
    keys in results.json)."""
    try:
        results = runs.read_results(out_dir)
    except OSError:
        return False
    return runs.finished(results, epochs) and "experiment" in results


def run(name, runs_dir="runs", data_path=None, overrides=None, folds=0, fold=0, executor="papermill",
        shared_by=1):
    """Run one experiment (one fold of it with folds > 1); returns its results dict.

    shared_by: how many runs shared the device with this one (itself included), kept in its results.
    """
    import safe_files
    import train

    out_dir = run_dir(runs_dir, name, folds, fold)
    params = run_parameters(name, out_dir, data_path, overrides, folds, fold)
    epochs = params.get("epochs", train.DEFAULTS["epochs"])
    if finished(out_dir, epochs):
        print(f"{out_dir}: done already, skipped")
        return runs.read_results(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if executor == "papermill":
        import papermill

        papermill.execute_notebook(
            str(NOTEBOOK), str(out_dir / "train.ipynb"), parameters=params, cwd=str(REPO), progress_bar=False,
            log_output=False,
        )
    elif executor == "python":
        params.pop("synthetic_demo")
        train.train(**params)
    else:
        raise ValueError(f"executor must be 'papermill' or 'python', not {executor!r}")
    results = runs.read_results(out_dir)
    results.update(experiment=name, recipe=EXPERIMENTS[name], executor=executor,
                   run_seconds=time.perf_counter() - started, shared_by=shared_by)
    safe_files.write_json_atomic(results, runs.results_file(out_dir))  # the run's one results.json
    print(f"{out_dir}: best validation mean DSC {results['best_val_dsc']:.4f} at epoch {results['best_epoch']}")
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="experiments to run (see --list)")
    parser.add_argument("--list", action="store_true", help="print the experiments and their recipes")
    parser.add_argument("--all", action="store_true", help="run every experiment")
    parser.add_argument("--data-path", help="kaggle_3m folder (default: auto-detect, else the synthetic phantom)")
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--folds", type=int, default=0, help="k > 1: patient-level k-fold cross-validation")
    parser.add_argument("--only-fold", type=int, help="with --folds: run this fold only")
    parser.add_argument("--synthetic", action="store_true", help="small CPU settings: train.SYNTHETIC_DEMO")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="any train parameter; VALUE read as JSON, else as text (--set amp=off --set compile=true)")
    parser.add_argument("--executor", choices=("papermill", "python"), default="papermill")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs at once, each in its own process, sharing the device")
    parser.add_argument("--gpus", help="comma-separated GPU indices (0,1,2,3): each run on one of them, --jobs runs "
                                       "per GPU at a time, the others queued in order")
    parser.add_argument("--shared-by", type=int, default=1, help=argparse.SUPPRESS)  # set by --jobs for its children
    args = parser.parse_args(argv)
    try:
        gpu_slots(args.gpus, args.jobs)
    except ValueError as error:
        parser.error(str(error))
    if args.list:
        for name, recipe in EXPERIMENTS.items():
            print(f"{name:45s} {recipe or '(the reference recipe)'}")
        return 0
    names = list(EXPERIMENTS) if args.all else args.names
    if not names:
        parser.error("name experiments to run, or --all, or --list")
    overrides = synthetic_settings() if args.synthetic else {}
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    if args.epochs:
        overrides["epochs"] = args.epochs
    folds = range(args.folds) if args.folds > 1 else [0]
    if args.only_fold is not None:
        folds = [args.only_fold]
    todo = [(name, fold) for name in names for fold in folds]
    try:
        failures = run_all(todo, args, overrides)
    except KeyboardInterrupt:
        print("stopped; every run keeps its last finished epoch: the same command resumes them", file=sys.stderr)
        return 130
    if failures:
        print(f"{len(failures)} run(s) failed; rerun them to resume from their last checkpoint:", file=sys.stderr)
        print("\n".join(failures), file=sys.stderr)
        return 1
    return 0


def gpu_slots(gpus, jobs):
    """The places a run can take: each GPU of "0,1" (CUDA_VISIBLE_DEVICES values) jobs times; [None]: the one
    device."""
    if not gpus:
        return [None] * jobs
    names = [gpu.strip() for gpu in str(gpus).split(",") if gpu.strip()]
    if not names or not all(name.isdigit() for name in names) or len(set(names)) != len(names):
        raise ValueError(f"--gpus {gpus!r}: give distinct GPU indices separated by commas, e.g. 0,1,2,3")
    return [name for _ in range(jobs) for name in names]


def run_all(todo, args, overrides):
    """Run each (name, fold) of todo, args.jobs at a time on the device (or on each of args.gpus); returns a line
    per failed run."""
    slots = gpu_slots(args.gpus, args.jobs)
    if len(slots) > 1 or args.gpus:
        warm_cache(args.data_path, overrides)
        free = queue.Queue()
        for slot in slots:
            free.put(slot)

        def on_a_free_slot(item):
            slot = free.get()  # the runs start in todo's order as places free up
            try:
                return run_as_process(args, *item, gpu=slot)
            finally:
                free.put(slot)

        with ThreadPoolExecutor(max_workers=len(slots)) as pool:
            failures = [failure for failure in pool.map(on_a_free_slot, todo) if failure]
    else:
        failures = []
        for name, fold in todo:
            try:
                run(name, args.runs_dir, args.data_path, overrides, args.folds, fold, args.executor, args.shared_by)
            except Exception as error:  # one broken recipe must not stop a night's sweep
                traceback.print_exc()  # where it broke, into the run's log: the line below says only what
                last_line = (str(error).strip().splitlines() or [""])[-1]
                failures.append(f"{describe(name, args.folds, fold)}: {type(error).__name__}: {last_line}")
                print(f"FAILED {failures[-1]}", file=sys.stderr)
    return failures


def describe(name, folds, fold):
    return name if folds <= 1 else f"{name} fold {fold}"


def warm_cache(data_path, overrides):
    """Preprocess every patient once, so that parallel runs all read the cache instead of each writing it."""
    import dataset
    import layouts
    import parameters
    import preprocessing
    import train

    params = parameters.settings(train.DEFAULTS, **{key: value for key, value in overrides.items()
                                                    if key in train.DEFAULTS})
    data_dir, _ = dataset.locate_data(data_path, dataset=params["dataset"])
    layout = layouts.detect(data_dir, params["dataset"])
    preprocessing.load_volumes(layout.cases(data_dir), params["image_size"], params["cache_dir"], layout=layout,
                               to_square=params["to_square"])


def run_as_process(args, name, fold, gpu=None):
    """One run in its own process, sharing the device with args.jobs - 1 others (gpu: the only GPU it sees); its
    output is appended to run.log (a resumed run's earlier segments stay there).

    Returns None, or a line saying how it failed.
    """
    command = [sys.executable, str(Path(__file__).resolve()), name, "--runs-dir", args.runs_dir,
               "--executor", args.executor, "--folds", str(args.folds), "--only-fold", str(fold),
               "--shared-by", str(args.jobs)]
    if args.data_path:
        command += ["--data-path", args.data_path]
    if args.epochs:
        command += ["--epochs", str(args.epochs)]
    if args.synthetic:
        command.append("--synthetic")
    for item in args.set:
        command += ["--set", item]
    out_dir = run_dir(args.runs_dir, name, args.folds, fold)
    out_dir.mkdir(parents=True, exist_ok=True)
    where = describe(name, args.folds, fold)
    environment = dict(os.environ, **({} if gpu is None else {"CUDA_VISIBLE_DEVICES": gpu}))
    print(f"started {where}" + ("" if gpu is None else f" on GPU {gpu}") + f": log in {out_dir / 'run.log'}")
    with open(out_dir / runs.RUN_LOG, "a") as log:
        finished_process = subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=environment)
    if finished_process.returncode != 0:
        last_line = ((out_dir / runs.RUN_LOG).read_text().strip().splitlines() or [""])[-1]
        failure = f"{where}: exit {finished_process.returncode}: {last_line.removeprefix(where + ': ')}"
        print(f"FAILED {failure}", file=sys.stderr)
        return failure
    results = runs.read_results(out_dir)
    print(f"finished {where}: best validation mean DSC {results['best_val_dsc']:.4f} at epoch "
          f"{results['best_epoch']}")
    return None


if __name__ == "__main__":
    sys.exit(main())
