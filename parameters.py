"""Every setting of the two notebooks, defined once: its default and what it does.

train.DEFAULTS and inference.DEFAULTS are read from here; the notebooks'
parameters cells and the README's parameter tables are written from here
(`python parameters.py` rewrites them; a test fails when they drift). A name
the modules do not know is an error, whether passed to train() / run() or
injected by papermill into a notebook, and so is a value that would fail
only after preprocessing or an epoch.
"""

import ast
import json
import os
import re
from pathlib import Path

from layouts import LAYOUTS
from loss import LOSSES
from optimizers import OPTIMIZERS, SCHEDULES
from preprocessing import TO_SQUARE
from unet import MODELS

REPO = Path(__file__).resolve().parent
CACHE_DIR = "data/cache"

# the parameters both notebooks take, said once
DATASET = (None, "the data's layout: kaggle_3m, images_masks, lung_ct or nuclei (layouts/); None: detected")
VALIDATION_CASES = (None, "validation cases: a number, or a fraction of the cases (0.2); None: the layout's "
                          "(kaggle_3m: the reference split's 10 patients; folder layouts: 20% of the images)")
CACHE = (CACHE_DIR, "preprocessed volumes, keyed by the files and the image size")
CASE_PATTERN = (None, "your own images: a regular expression on image names whose group case names the volume "
                      "they are slices of, and group number their order, e.g. '(?P<case>.+)_z(?P<number>\\d+)'; "
                      "None: each image a case")

TRAIN = dict(
    data_path=(None, "kaggle_3m folder, or a folder of your own images (README: Your own images); None: look in "
                     "the usual places, else the synthetic phantom default"),
    dataset=DATASET,
    case_pattern=CASE_PATTERN,
    image_size=(256, "side of the square slices the network sees (a multiple of 16)"),
    to_square=("pad", 'how an image that is not square fills it: "pad" zero-pads its shorter side first (the '
                      'reference), "stretch" resizes each side on its own (the UNet++ tutorial: the whole grid '
                      'for the image); inference does what the weights were trained with'),
    progressive_size=(None, "progressive resizing: train and validate the first progressive_epochs epochs on "
                            "the slices averaged down to this smaller size (a multiple of 16) ..."),
    progressive_epochs=(0, "... then at image_size; only epochs at image_size can give the best weights"),
    context_slices=(0, "2.5-D input: each slice with this many neighbours on either side as more channels "
                       "(1: 9 channels, slices s-1, s, s+1); 0: the slice alone, the reference"),
    model=("unet", ", ".join(MODELS)),
    model_args=(None, 'more constructor arguments: {"pretrained": True} (resnet34_unet), '
                      '{"deep_supervision": True} (unet++; unet: nnU-Net\'s heads)'),
    init_features=(32, "width of the first level (the ResNet-34 U-Net's decoder)"),
    loss=("dice", ", ".join(LOSSES)),
    loss_args=(None, 'e.g. {"alpha": 0.3, "beta": 0.7} for tversky'),
    deep_supervision_weights=(None, "weights of the deep supervision heads, coarsest first; None: equal (unet++'s "
                                     "choice; nnU-Net's for the unet: [0.25, 0.5, 1])"),
    optimizer=("adam", ", ".join(OPTIMIZERS) + " (sgd: Nesterov momentum)"),
    lr=(1e-4, "learning rate"),
    weight_decay=(0.0, "weight decay"),
    momentum=(0.9, "sgd only"),
    schedule=("constant", ", ".join(SCHEDULES) + " (poly: power 0.9); stepped every batch"),
    warmup_epochs=(0, "linear warm-up of the learning rate over this many epochs"),
    grad_clip=(None, "max gradient norm; None: no clipping"),
    ema_decay=(0.0, "keep an exponential moving average of the weights (buffers too), updated every step with "
                    "this decay (0.998: about the last 500 steps); it is validated, kept as the best weights and "
                    "shipped instead of the raw ones (0: off, the reference)"),
    tta=(False, "validate on the mean of the prediction and its horizontally flipped counterpart"),
    aug_scale=(0.05, "training augmentation: scale 1 +- aug_scale, ..."),
    aug_angle=(15, "... rotation +- aug_angle degrees, ..."),
    flip_prob=(0.5, "... horizontal flip with this probability"),
    sequence_dropout=(0.0, "... and with this probability a slice's pre-contrast, post-contrast or both become "
                           "copies of its FLAIR, as the dataset fills a missing sequence; with context_slices, in "
                           "every stacked slice alike (0: off, the reference)"),
    intensity_augmentation=(False, "... and nnU-Net's intensity augmentation, per slice and channel: brightness "
                                   "x0.75-1.25 (p 0.15), contrast 0.75-1.25 (p 0.15), gamma 0.7-1.5 keeping mean "
                                   "and std (p 0.3) (False: off, the reference)"),
    epochs=(100, "epochs to train"),
    early_stopping=(None, "end the run once this many epochs at image_size pass without a better validation DSC "
                          "than its best (the UNet++ tutorial's 2019 code: 20, of up to 10000 epochs); the "
                          "schedule still spans epochs. None: every epoch (the reference)"),
    batch_size=(16, "slices per batch"),
    device=("auto", '"auto": the GPU if there is one, else the CPU; or "cpu", "cuda", "cuda:0", "mps"'),
    workers=("auto", 'data loader processes; 0: load in the training process; "auto": one fewer than the CPU '
                     'cores, at most 4'),
    threads=("auto", 'torch\'s CPU threads; "auto": the CPU cores that other processes leave idle at the start, '
                     'at least 1'),
    data_pipeline=("auto", '"reference": CPU workers; "device": slices and augmentation on the GPU; '
                           '"auto": device on a GPU'),
    amp=("auto", '"bf16", "fp16", "off", "native"; "auto": bf16 on a GPU that has it natively, else off (also on '
                 'CPUs with native bf16, where amp="bf16" trains about 1.8x faster: the run says so); "native": bf16 '
                 'wherever the device computes it natively (AVX512-BF16 or AMX on a CPU), else float32'),
    channels_last=("auto", 'True, False; "auto": on a GPU'),
    compile=(False, "torch.compile the model"),
    sync_batchnorm=(False, "data-parallel on GPUs (torchrun): batch norm statistics over every process's share "
                           "(SyncBatchNorm) instead of each its own"),
    deterministic=(False, "deterministic algorithms (slower on a GPU)"),
    resume=(False, "continue a stopped run from logs_dir/checkpoint.pt (with the same settings)"),
    keep_checkpoint=(False, "keep logs_dir/checkpoint.pt once every epoch has run (only a stopped run needs it; "
                            "93 MB for the U-Net at 256 px: weights, optimiser state, RNG)"),
    vis_images=(200, "validation overlays written to TensorBoard ..."),
    vis_freq=(10, "... every vis_freq epochs"),
    runs_dir=("runs", "each run gets a folder here (logs, weights, predictions): tensorboard --logdir runs"),
    run_name=(None, "this run's folder in runs_dir; None: a new one, <date>-<time>-<model>-<loss> (with "
                    "resume=True: the latest run)"),
    weights_dir=(None, "where the best weights go (unet.pt); None: runs_dir/run_name/weights"),
    logs_dir=(None, "checkpoint.pt, results.json (and the TensorBoard events, unless it is the run folder's "
                    "logs/: they go in the run folder); None: runs_dir/run_name/logs"),
    cache_dir=CACHE,
    seed=(42, "seed of the split, and of the initialisation and the sampling unless training_seed is given"),
    training_seed=(None, "seed of the initialisation, sampling and augmentation; None: seed. Another training seed "
                         "on the same split or folds measures what a rerun changes"),
    validation_cases=VALIDATION_CASES,
    folds=(0, "> 1: patient-level k-fold cross-validation instead of the reference split ..."),
    fold=(0, "... validating on this fold (0 .. folds - 1)"),
)

# What may differ when a stopped run resumes: where its files are, and how (not what) it computes and draws; any
# other setting changed is refused with what changed (train.resume)
RESUMABLE = {"resume", "keep_checkpoint", "data_path", "cache_dir", "runs_dir", "run_name", "weights_dir", "logs_dir",
             "device", "workers", "threads", "compile", "vis_images", "vis_freq"}

# train.ipynb's own switch, handled by train.prepare()
TRAIN_NOTEBOOK = dict(
    synthetic_demo=(True, "on the synthetic default, use small CPU-friendly settings (train.SYNTHETIC_DEMO)"),
    **TRAIN,
)

INFERENCE = dict(
    weights=(None, "a weights file of train.ipynb, or the reference's published unet.pt; None: the latest "
                   "run's, runs_dir/<run>/weights/unet.pt, else the shipped pretrained/unet-lgg-256.pt"),
    runs_dir=("runs", "where train.ipynb's runs are"),
    data_path=(None, "kaggle_3m-layout folder, or a folder of your own images, with or without masks, or one "
                     "image file; None: auto-detect, else synthetic"),
    dataset=DATASET,
    case_pattern=CASE_PATTERN,
    subset=("auto", '"validation", "all"; "auto": the validation split when every patient has masks'),
    patients=(None, "a list of patient folder names: overrides subset"),
    threshold=(0.5, "probability above which a pixel is abnormal"),
    lcc=(None, "keep the 3-D largest connected component; None: the layout's rule (kaggle_3m yes, as the "
               "reference; the folder layouts no: nuclei are many)"),
    tta=(False, "average with the horizontally flipped prediction"),
    image_size=(None, "None: the size stored in the weights file (256 for the reference's unet.pt)"),
    batch_size=(32, "slices per batch"),
    fuse=(True, "fold batch norm into the convolutions, channels_last: the same probabilities within 1e-5, faster"),
    precision=("float32", '"float32"; "bf16": bfloat16 autocast, 1.8x faster on CPUs with AVX512-BF16 and on '
                          'GPUs (probabilities within 0.07 of float32, a few pixels in a million flip: '
                          'results/inference-speed-cpu.md)'),
    device=("auto", '"auto": the GPU if there is one, else the CPU'),
    workers=(2, "data loader processes for the preprocessing"),
    validation_cases=VALIDATION_CASES,
    cache_dir=CACHE,
    predictions_dir=(None, "overlays, GIFs, masks/, metrics.csv, metrics-summary.csv; None: the weights' run's "
                           "predictions folder (runs_dir/<run>/predictions; on data other than the run trained on, "
                           "runs_dir/<run>/predictions-<data>); for weights outside a run, "
                           "./predictions/<weights name>-<data>"),
    figure=(None, "per-patient DSC, mean red, median green; None: dsc.png in predictions_dir"),
    write_masks=(True, "predicted mask TIFFs at the original geometry, under predictions_dir/masks"),
    copy_images=(True, "copy each patient's images beside its masks: a kaggle_3m-layout folder"),
    gif_fps=(5, "frames per second of the per-patient GIFs"),
)


class ParameterError(ValueError):
    """A parameter that cannot work: the message names it and says what would."""


def defaults(spec):
    return {name: default for name, (default, _) in spec.items()}


def settings(defaults, **overrides):
    """defaults with overrides; unknown names are an error, not silently ignored."""
    unknown = set(overrides) - set(defaults)
    if unknown:
        raise TypeError(f"unknown parameter(s): {', '.join(sorted(unknown))}; the known ones are "
                        f"{', '.join(defaults)}")
    return {**defaults, **overrides}


# ---------------------------------------------------------------- notebooks

PAPERMILL_HEADER = "# Parameters\n"  # the first line of the cell papermill injects after the parameters cell


def injected_names(executed_sources):
    """The names papermill assigned in its injected cell (the last one run), from IPython's In list."""
    for source in reversed(list(executed_sources)):
        if source.startswith(PAPERMILL_HEADER):
            return [target.id for node in ast.parse(source).body if isinstance(node, ast.Assign)
                    for target in node.targets if isinstance(target, ast.Name)]
    return []


def from_notebook(namespace, spec):
    """spec's values in a notebook's globals(); a parameter papermill passed that spec lacks is an error."""
    unknown = [name for name in injected_names(namespace.get("In", [])) if name not in spec]
    if unknown:
        raise TypeError(f"unknown notebook parameter(s): {', '.join(unknown)}; the parameters cell lists "
                        f"the known ones")
    return {name: namespace[name] for name in spec}


def notebook_cell(spec):
    """The parameters cell's source: one `name = default  # what` line each."""
    lines = ["# Parameters (papermill can override any of them; written by parameters.py)"]
    for name, (default, help_text) in spec.items():
        lines.append(f"{name + ' = ' + repr(default):<26}  # {help_text}")
    return "\n".join(lines)


def readme_table(spec):
    rows = ["| parameter | default | what |", "| --- | --- | --- |"]
    rows += [f"| `{name}` | `{default!r}` | {help_text.replace('|', '/')} |"
             for name, (default, help_text) in spec.items()]
    return "\n".join(rows)


SOURCES = {"train.ipynb": TRAIN_NOTEBOOK, "inference.ipynb": INFERENCE}


def parameters_cell(notebook):
    return next(cell for cell in notebook["cells"] if "parameters" in cell.get("metadata", {}).get("tags", []))


def readme_block(name):
    return re.compile(rf"(<!-- parameters of {re.escape(name)} -->\n)(.*?)(<!-- end -->)", re.S)


def sync(repo=REPO):
    """Rewrite the notebooks' parameters cells and the README's tables from the specs; returns what changed."""
    changed = []
    readme_path = Path(repo) / "README.md"
    readme = readme_path.read_text()
    for name, spec in SOURCES.items():
        path = Path(repo) / name
        notebook = json.loads(path.read_text())
        cell = parameters_cell(notebook)
        source = notebook_cell(spec)
        if "".join(cell["source"]) != source:
            cell["source"] = source.splitlines(keepends=True)
            path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")
            changed.append(name)
        block = readme_block(name)
        if not block.search(readme):
            raise ValueError(f"README.md has no '<!-- parameters of {name} -->' ... '<!-- end -->' block")
        readme = block.sub(lambda match: match[1] + readme_table(spec) + "\n" + match[3], readme)
    if readme != readme_path.read_text():
        readme_path.write_text(readme)
        changed.append("README.md")
    return changed


# ---------------------------------------------------------------- checks before any work

DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
RUN_NAME = re.compile(r"^[A-Za-z0-9._-]+$")


def _require(condition, name, value, what):
    if not condition:
        raise ParameterError(f"{name}={value!r}: {what}")


def _device_missing(name):
    """Why the device named cannot be used on this machine, or None."""
    import torch

    if name.startswith("mps") and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        return 'no Apple GPU (mps) on this machine; use "auto" or "cpu"'
    if name.startswith("cuda:") and torch.cuda.is_available() and int(name[5:]) >= torch.cuda.device_count():
        return f'this machine has {torch.cuda.device_count()} CUDA GPU(s): use "cuda:0" .. "cuda:' \
               f'{torch.cuda.device_count() - 1}" or "auto"'
    return None


def _check_common(params):
    _require(isinstance(params["device"], str) and DEVICE.match(params["device"]), "device", params["device"],
             'use "auto", "cpu", "cuda", "cuda:<index>" or "mps"')
    missing = _device_missing(params["device"])
    _require(missing is None, "device", params["device"], missing)
    _require(isinstance(params["batch_size"], int) and params["batch_size"] >= 1, "batch_size",
             params["batch_size"], "use 1 or more")
    cases = params["validation_cases"]
    _require(cases is None or isinstance(cases, int) and not isinstance(cases, bool) and cases >= 1
             or isinstance(cases, float) and 0 < cases < 1, "validation_cases", cases,
             "use a number of cases (10: the reference split), a fraction between 0 and 1, or None")
    _require(params["dataset"] is None or params["dataset"] in LAYOUTS, "dataset", params["dataset"],
             f"use one of {', '.join(LAYOUTS)}, or None to detect it")
    _require(params["case_pattern"] is None or isinstance(params["case_pattern"], str), "case_pattern",
             params["case_pattern"], "use a regular expression (a string) or None")


def training_seed(params):
    """The seed of a run's initialisation, sampling and augmentation (the split's seed unless training_seed)."""
    return params["seed"] if params.get("training_seed") is None else params["training_seed"]


def _is_size(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 16 and value % 16 == 0


def check_train(params):
    """Refuse, before any data is read, what would fail later or train nothing."""
    _check_common(params)
    _require(params["workers"] == "auto" or isinstance(params["workers"], int) and params["workers"] >= 0, "workers",
             params["workers"], 'use 0 (load in this process) or more, or "auto"')
    _require(_is_size(params["image_size"]), "image_size", params["image_size"],
             "use a positive multiple of 16 (the U-Net halves it four times), e.g. 64 or 256")
    _require(isinstance(params["epochs"], int) and params["epochs"] >= 1, "epochs", params["epochs"],
             "use 1 or more")
    patience = params["early_stopping"]
    _require(patience is None or isinstance(patience, int) and not isinstance(patience, bool) and patience >= 1,
             "early_stopping", patience, "use None (every epoch) or 1 or more epochs, e.g. 20")
    small = params["progressive_size"]
    _require(small is None or _is_size(small) and small < params["image_size"], "progressive_size", small,
             f"use None or a multiple of 16 below image_size={params['image_size']}")
    _require(isinstance(params["progressive_epochs"], int) and 0 <= params["progressive_epochs"] < params["epochs"],
             "progressive_epochs", params["progressive_epochs"],
             f"use 0 .. {params['epochs'] - 1}: the last epochs train at image_size")
    _require(small is not None or params["progressive_epochs"] == 0, "progressive_epochs",
             params["progressive_epochs"], "set progressive_size too, or use 0")
    _require(isinstance(params["vis_freq"], int) and params["vis_freq"] >= 1, "vis_freq", params["vis_freq"],
             "use 1 or more (overlays every vis_freq epochs)")
    _require(isinstance(params["vis_images"], int) and params["vis_images"] >= 0, "vis_images",
             params["vis_images"], "use 0 or more")
    _require(isinstance(params["lr"], (int, float)) and params["lr"] > 0, "lr", params["lr"], "use a positive rate")
    _require(isinstance(params["sequence_dropout"], (int, float)) and 0 <= params["sequence_dropout"] <= 1,
             "sequence_dropout", params["sequence_dropout"], "use a probability between 0 and 1 (0: off)")
    _require(isinstance(params["intensity_augmentation"], bool), "intensity_augmentation",
             params["intensity_augmentation"], "use True or False")
    cores = os.cpu_count() or 1
    # more threads than cores only wait for each other (threads=1000 made 2,003 threads and no epoch in 87 s)
    _require(params["threads"] == "auto" or isinstance(params["threads"], int) and 1 <= params["threads"] <= cores,
             "threads", params["threads"], f'use 1 .. {cores} (the CPU cores of this machine), or "auto"')
    name = params["run_name"]
    # a run's folder is runs_dir/run_name: a path there would write logs and weights anywhere (the data folder)
    _require(name is None or isinstance(name, str) and RUN_NAME.match(name) and name not in (".", ".."), "run_name",
             name, "use a plain folder name (letters, digits, '.', '-', '_'), or None for a new dated one; "
                   "runs_dir says where the runs go")
    _require(isinstance(params["init_features"], int) and params["init_features"] >= 1, "init_features",
             params["init_features"], "use 1 or more (32: the reference)")
    _require(params["to_square"] in TO_SQUARE, "to_square", params["to_square"],
             f"use {' or '.join(repr(value) for value in TO_SQUARE)}")
    _require(isinstance(params["context_slices"], int) and not isinstance(params["context_slices"], bool)
             and 0 <= params["context_slices"] <= 3, "context_slices", params["context_slices"],
             "use 0 (the slice alone), 1, 2 or 3 neighbours on either side")
    _require(isinstance(params["ema_decay"], (int, float)) and 0 <= params["ema_decay"] < 1, "ema_decay",
             params["ema_decay"], "use 0 (off) or a decay below 1, e.g. 0.998")
    for name in ("seed", "training_seed"):
        value = params[name]
        _require(value is None and name == "training_seed" or isinstance(value, int) and not isinstance(value, bool)
                 and 0 <= value < 2**32, name, value, "use a whole number from 0 to 2**32 - 1"
                 + (" (None: seed)" if name == "training_seed" else ""))
    folds, fold = params["folds"], params["fold"]
    _require(isinstance(folds, int) and folds >= 0 and folds != 1, "folds", folds,
             "use 0 (the reference split) or 2 or more")
    _require(isinstance(fold, int) and (folds == 0 or 0 <= fold < folds), "fold", fold,
             f"use 0 .. {max(folds, 1) - 1}")
    # the names come from the registries that build them
    choices = dict(optimizer=OPTIMIZERS, schedule=SCHEDULES, model=tuple(MODELS), loss=tuple(LOSSES),
                   data_pipeline=("auto", "reference", "device"), amp=("auto", "bf16", "fp16", "off", "native"))
    for name, allowed in choices.items():
        _require(params[name] in allowed, name, params[name], f"use one of {', '.join(allowed)}")
    return params


def check_inference(params):
    _check_common(params)
    _require(isinstance(params["workers"], int) and params["workers"] >= 0, "workers", params["workers"],
             "use 0 (load in this process) or more")
    patients = params["patients"]
    _require(patients is None or (isinstance(patients, (list, tuple)) and all(isinstance(p, str) for p in patients)),
             "patients", patients, 'give a list of patient folder names, e.g. ["TCGA_CS_4941_19960909"]')
    _require(patients is None or len(patients) > 0, "patients", patients,
             "give at least one patient, or None for the subset")
    _require(params["image_size"] is None or _is_size(params["image_size"]), "image_size", params["image_size"],
             "use None (the weights' own size) or a positive multiple of 16")
    _require(params["precision"] in ("float32", "bf16"), "precision", params["precision"],
             'use "float32" or "bf16"')
    _require(params["subset"] in ("auto", "validation", "all"), "subset", params["subset"],
             'use "auto", "validation" or "all"')
    _require(isinstance(params["threshold"], (int, float)) and 0 <= params["threshold"] <= 1, "threshold",
             params["threshold"], "use a probability between 0 and 1")
    return params


if __name__ == "__main__":
    print("rewrote: " + (", ".join(sync()) or "nothing, all in sync"))
