"""One folder per run: runs/<run>/ holds its logs (TensorBoard, checkpoint.pt, results.json), weights and
predictions, so `tensorboard --logdir runs` shows runs side by side and nothing of one run is written over
by the next. Inference finds the latest run's weights by itself."""

import csv
import json
import time
from dataclasses import dataclass
from pathlib import Path

WEIGHTS_FILE = Path("weights") / "unet.pt"
CHECKPOINT_FILE = Path("logs") / "checkpoint.pt"
# a run's one results.json: training writes it beside the checkpoint, experiments.py adds its keys to it
RESULTS_FILE = Path("logs") / "results.json"
# where tools/collect_runs.py's copies keep it (results/<protocol>/runs/...), and where runs before the one file
# kept experiments.py's copy (a superset of logs/results.json's keys): read first where it exists
COLLECTED_RESULTS_FILE = Path("results.json")
PREDICTIONS_DIR = Path("predictions")  # inference's masks, GIFs, metrics.csv and figures of the run's own weights
METRICS_FILE = PREDICTIONS_DIR / "metrics.csv"
# each case's predicted mask at its telling slice (the one with the most tumour): a few KB that outlive the weights,
# so a picture of a run's predictions (tools/failure_analysis.py) can be drawn from the committed files alone
TELLING_SLICES_FILE = PREDICTIONS_DIR / "telling-slices.npz"
RUN_LOG = Path("run.log")  # experiments.py's (and tools/cpu_sweep.sh's) log of a run started from a shell
# the best model trained so far, shipped with the repository (pretrained/MODEL_CARD.md): inference uses it when
# there is no run of one's own yet
SHIPPED_WEIGHTS = Path(__file__).resolve().parent / "pretrained" / "unet-lgg-256.pt"


def new_run_name(params):
    """<date>-<time>-<model>-<loss>, e.g. 2026-11-23-0140-unet-dice."""
    return f"{time.strftime('%Y-%m-%d-%H%M%S')}-{params['model']}-{params['loss']}"


def latest(runs_dir, inside):
    """The run folder under runs_dir whose file `inside` was written last, or None."""
    candidates = [path for path in Path(runs_dir).glob(f"*/{inside}") if path.is_file()]
    if not candidates:
        return None
    return max(candidates, key=lambda path: path.stat().st_mtime).parents[len(Path(inside).parts) - 1]


def new_run_folder(runs_dir, params):
    """A run folder made for this run alone, runs_dir/<new_run_name>, with -2, -3, ... appended when another
    training took that name first (two started in the same second); returns its name."""
    base = new_run_name(params)
    for attempt in range(1, 1000):
        name = base if attempt == 1 else f"{base}-{attempt}"
        try:
            (Path(runs_dir) / name).mkdir(parents=True)  # atomic: of two processes, one makes it
            return name
        except FileExistsError:
            continue
    raise FileExistsError(f"{runs_dir}: 999 runs named {base}-*; choose a run_name")


def training_folders(params):
    """params with weights_dir and logs_dir made explicit: given ones are kept; otherwise runs_dir/run_name/...,
    where run_name None is a new run (its folder made now, for it alone), or with resume=True the run whose
    checkpoint was written last."""
    if params["weights_dir"] is not None and params["logs_dir"] is not None:
        return params
    name = params["run_name"]
    if name is None and params["resume"]:
        stopped = latest(params["runs_dir"], CHECKPOINT_FILE)
        if stopped is not None:
            name = stopped.name
            print(f"resume=True: continuing the latest run, {stopped}")
    if name is None:
        name = new_run_folder(params["runs_dir"], params)
    folder = Path(params["runs_dir"]) / name
    return dict(params, run_name=name, weights_dir=params["weights_dir"] or str(folder / WEIGHTS_FILE.parent),
                logs_dir=params["logs_dir"] or str(folder / CHECKPOINT_FILE.parent))


def events_dir(params):
    """Where a run's TensorBoard events go: its own folder when weights_dir and logs_dir are that folder's weights/
    and logs/ (as training_folders and experiments.py make them), so that `tensorboard --logdir runs` names the
    run by its folder (not "<run>/logs", cut before the model and loss); else logs_dir."""
    logs, weights = Path(params["logs_dir"]), Path(params["weights_dir"])
    return logs.parent if logs.name == CHECKPOINT_FILE.parent.name and weights.parent == logs.parent else logs


def remove_if_empty(params):
    """Remove a run's folders when they hold nothing worth keeping (no checkpoint, results or weights: only
    empty folders, this process's locks and the event file of an unfinished first epoch) and no other live
    training holds them; returns whether they were removed."""
    import shutil

    from safe_files import FolderLock

    folders = [Path(params["weights_dir"]), Path(params["logs_dir"])]
    run = folders[1].parent
    if params["run_name"] is not None and all(folder.parent == run for folder in folders):
        folders.append(run)
    files = [path for folder in folders if folder.is_dir() for path in folder.rglob("*") if path.is_file()]
    locks = [path for path in files if path.name == FolderLock.NAME]
    if any(FolderLock(path.parent).held_by_another() for path in locks):
        return False
    if any(path not in locks and not path.name.startswith("events.out.tfevents") for path in files):
        return False
    for folder in sorted(folders, key=lambda path: len(path.parts), reverse=True):
        shutil.rmtree(folder, ignore_errors=True)
    return True


def results_file(run):
    """The path of a run folder's results.json: the collected (or older) copy where there is one, else
    RESULTS_FILE (which need not exist yet)."""
    collected = Path(run) / COLLECTED_RESULTS_FILE
    return collected if collected.exists() else Path(run) / RESULTS_FILE


def read_results(run):
    """A run folder's results dict (results_file); OSError where there is none."""
    return json.loads(results_file(run).read_text())


def trained_on(run):
    """The resolved data folder a run trained on (its results.json says), or None when unknown."""
    try:
        return str(Path(read_results(run)["data_dir"]).resolve())
    except (OSError, ValueError, KeyError, TypeError):
        return None


def data_label(data_dir):
    """A folder-name label of a data folder: synthetic, or its name and a hash of its path (kaggle_3m-1a2b3c)."""
    import hashlib

    import dataset

    if dataset.is_synthetic(data_dir):
        return "synthetic"
    resolved = Path(data_dir).resolve()
    return f"{resolved.name}-{hashlib.sha1(str(resolved).encode()).hexdigest()[:6]}"


def inference_outputs(params, data_dir=None):
    """params with weights, predictions_dir and figure made explicit: weights None is the latest run's best
    weights; predictions_dir None is the predictions folder of the weights' run (or ./predictions), or, for
    data other than the run trained on, its predictions-<data_label> folder: predictions of one model on two
    datasets never share a folder."""
    weights = params["weights"]
    if weights is None:
        run = latest(params["runs_dir"], WEIGHTS_FILE)
        if run is not None:
            weights = str(run / WEIGHTS_FILE)
        elif SHIPPED_WEIGHTS.exists():
            weights = str(SHIPPED_WEIGHTS)
            print(f"{params['runs_dir']}: no run with weights yet; using the shipped weights {SHIPPED_WEIGHTS} "
                  "(pretrained/MODEL_CARD.md)")
        else:
            from checkpoint import WeightsError

            raise WeightsError(f"{params['runs_dir']}: no run with weights ({WEIGHTS_FILE}) under it; train first "
                               "(train.ipynb), or point weights at a .pt file")
    predictions_dir = params["predictions_dir"]
    if predictions_dir is None:
        path = Path(weights)
        in_a_run = path.parent.name == WEIGHTS_FILE.parent.name
        # weights outside a run (the shipped ones, the reference's unet.pt): a folder per weights file and data
        predictions_dir = str(path.parent.parent / PREDICTIONS_DIR if in_a_run else Path("predictions") / (
            path.stem if data_dir is None else f"{path.stem}-{data_label(data_dir)}"))
        trained = trained_on(path.parent.parent) if in_a_run else None
        if data_dir is not None and trained is not None and trained != str(Path(data_dir).resolve()):
            predictions_dir = str(path.parent.parent / f"predictions-{data_label(data_dir)}")
    figure = params["figure"] or str(Path(predictions_dir) / "dsc.png")
    return dict(params, weights=weights, predictions_dir=predictions_dir, figure=figure)


# ---------------------------------------------------------------- reading finished and stopped runs


def stopped_early(results):
    """Whether early stopping ends a run before its last epoch (results: its results.json): params' early_stopping
    epochs at image_size have passed since its best validation DSC (or since it reached image_size, with none
    yet), none better. The UNet++ tutorial's rule (its 2019 code stopped after 20 such epochs; it counted from its
    best validation IoU)."""
    patience, history = results["params"].get("early_stopping"), results["history"]
    if not patience or not history or len(history) >= results["params"]["epochs"]:
        return False
    since = results.get("best_epoch") or results["params"].get("progressive_epochs", 0)
    return history[-1]["epoch"] - since >= patience


def finished(results, epochs=None):
    """Whether a run has trained all it will: every one of its epochs (or of epochs, a count asked now), or
    as many as early stopping let it. Training, resuming, experiments.py and the reports all ask this."""
    return len(results["history"]) >= (epochs or results["params"]["epochs"]) or stopped_early(results)


@dataclass
class Run:
    name: str
    fold: int | None  # None: the reference split
    folder: Path
    results: dict

    @property
    def params(self):
        return self.results["params"]

    @property
    def finished(self):
        return finished(self.results)

    @property
    def stopped_early(self):
        return stopped_early(self.results)

    @property
    def best_entry(self):
        best = self.results.get("best_epoch")
        return next((entry for entry in self.results["history"] if entry["epoch"] == best), None)

    @property
    def per_patient_at_best(self):
        entry = self.best_entry
        return entry["val_dsc_per_patient"] if entry else {}


def load_runs(runs_dir):
    """Every run under runs_dir/<name>/ and runs_dir/<name>/fold-<k>/, sorted by name and fold.

    A folder without a results.json (results_file) is no run.
    """
    return [run_at(folder) for pattern in ("*", "*/fold-*")
            for folder in sorted(path for path in Path(runs_dir).glob(pattern) if path.is_dir())
            if results_file(folder).exists()]


def fold_runs(recipe_folder):
    """The k-fold runs of one recipe, RUNS/EXPERIMENT/fold-<k>/, in fold order."""
    recipe_folder = Path(recipe_folder)
    return [run for run in load_runs(recipe_folder.parent) if run.name == recipe_folder.name and run.fold is not None]


def run_at(folder):
    """The run in folder: named by it, or by its parent for a fold-<k> folder; OSError without a results.json."""
    folder = Path(folder)
    name, fold = folder.name, None
    if folder.name.startswith("fold-"):
        name, fold = folder.parent.name, int(folder.name.split("-")[1])
    return Run(name, fold, folder, read_results(folder))


def metrics_rows(folder):
    """The rows of folder/predictions/metrics.csv (inference with the run's best weights) as strings, or []."""
    path = Path(folder) / METRICS_FILE
    if not path.exists():
        return []
    with open(path) as handle:
        return list(csv.DictReader(handle))


def write_telling_slices(folder, numbers, masks):
    """Write folder/predictions/telling-slices.npz: numbers {case: its telling slice's number}, masks {case: the
    predicted mask there, 2-D, at the original geometry}."""
    import io

    import numpy as np

    from safe_files import write_atomic

    cases = sorted(masks)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, cases=np.array(cases), numbers=np.array([int(numbers[case]) for case in cases]),
                        **{f"mask_{index}": np.asarray(masks[case], bool) for index, case in enumerate(cases)})
    write_atomic(Path(folder) / TELLING_SLICES_FILE, buffer.getvalue())


def telling_slices(folder):
    """{case: (its telling slice's number, the predicted mask there)} from folder/predictions/telling-slices.npz,
    or {} for a run scored before the file existed."""
    import numpy as np

    path = Path(folder) / TELLING_SLICES_FILE
    if not path.exists():
        return {}
    with np.load(path) as saved:
        return {str(case): (int(number), saved[f"mask_{index}"])
                for index, (case, number) in enumerate(zip(saved["cases"], saved["numbers"]))}


def native_scores(folder):
    """{patient: DSC at the original 256x256 geometry} from folder/predictions/metrics.csv (inference with the
    run's best weights, after the 3-D largest connected component), or {} before inference."""
    return {row["patient"]: float(row["dsc"]) for row in metrics_rows(folder)}


# ---------------------------------------------------------------- a run's settings in words (the report's columns)


AUTOCAST_NAMES = {"torch.bfloat16": "bf16", "torch.float16": "fp16"}


def precision_used(results):
    """"bf16", "fp16" or "float32": the autocast a run trained under (its results' speed_options), None where it
    was not recorded. amp="native" makes it a machine's property: a bf16 run and a float32 run of one recipe."""
    used = ((results or {}).get("speed_options") or {}).get("amp")
    return None if used is None else AUTOCAST_NAMES.get(used, "float32")


def describe_optimiser(params, results=None):
    """The optimiser, its settings and the precision: the autocast a run used (precision_used), else what params
    ask for (amp="native": bf16 only where the device computes it natively)."""
    text = f"{params['optimizer']} {params['lr']:g}"
    if params.get("weight_decay"):
        text += f", wd {params['weight_decay']:g}"
    used = precision_used(results)
    if used is not None:
        if used != "float32":
            text += f", {used}"
    elif params.get("amp") in ("bf16", "fp16"):
        text += f", {params['amp']}"
    elif params.get("amp") == "native":
        text += ", bf16 where native"
    if params.get("ema_decay"):
        text += f", weights EMA {params['ema_decay']:g}"
    return text


def describe_schedule(params):
    text = params.get("schedule", "constant")
    if params.get("warmup_epochs"):
        text += f", warm-up {params['warmup_epochs']}"
    if params.get("grad_clip"):
        text += f", clip {params['grad_clip']:g}"
    if params.get("tta"):
        text += ", flip TTA"
    if params.get("sequence_dropout"):
        text += f", sequence dropout {params['sequence_dropout']:g}"
    if params.get("intensity_augmentation"):
        text += ", intensity augmentation"
    return text


def describe_epochs(results):
    """The epochs a run trained, of how many, and why fewer: "12 of 12", "41 of 10000, stopped early", "3 of 12,
    unfinished"."""
    state = ", stopped early" if stopped_early(results) else "" if finished(results) else ", unfinished"
    return f"{len(results['history'])} of {results['params']['epochs']}{state}"


def describe_size(params):
    """The training image size as text: "64", or "64 -> 128 (10 + 4 epochs)" for progressive resizing; ", stretched"
    where images that are not square were stretched to it rather than padded (to_square)."""
    small, epochs = params.get("progressive_size"), params.get("progressive_epochs", 0)
    stretched = ", stretched" if params.get("to_square") == "stretch" else ""
    if not small or not epochs:
        return f"{params['image_size']}{stretched}"
    return f"{small} -> {params['image_size']} ({epochs} + {params['epochs'] - epochs} epochs){stretched}"


def describe_model(params, results=None):
    """The network, with what is not its default; an encoder whose ImageNet weights were asked for says whether
    it had them (results' encoder_weights; older runs did not record it: "ImageNet asked")."""
    text = params.get("model", "unet")
    if params.get("init_features", 32) != 32:
        text += f" ({params['init_features']} features)"
    args = params.get("model_args") or {}
    if args.get("pretrained") or args.get("pretrained_path"):
        text += {"ImageNet": " (ImageNet encoder)", "random": " (random init: no ImageNet file)"}.get(
            (results or {}).get("encoder_weights"), " (ImageNet asked)")
    if args.get("deep_supervision"):
        text += " (deep sup.)"
    if params.get("context_slices"):
        text += f" (2.5-D, ±{params['context_slices']} slices)"
    return text
