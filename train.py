"""Training loop, called by train.ipynb: the reference's recipe by default
(U-Net, Adam 1e-4, Dice loss, per-volume validation DSC), with the networks
of unet.py, the losses of loss.py, other optimisers, learning-rate schedules
with warm-up, gradient clipping and flip test-time augmentation as options.

Every epoch it logs to TensorBoard, rewrites a results file and an atomic
checkpoint (weights, optimiser, scaler, RNG states, best score), so a killed
run resumes with resume=True. The best weights are saved atomically with what
inference needs to rebuild the model.

Two data paths learn from the same distribution: "reference" (CPU loader
workers, scikit-image augmentation per slice) and "device" (slices held on
the GPU, augmentation per batch there: device_data.py).
"""

import json
import math
import os
import platform
import random
import subprocess
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader
from tqdm import tqdm

import checkpoint
import dataset
from background import BackgroundWork
from device_data import DeviceAugment, DeviceSlices
from logger import Logger
from loss import build_loss
from transform import transforms
from unet import build_model
from utils import dsc_per_volume, overlay

DEFAULTS = dict(
    data_path=None,  # None: auto-detect kaggle_3m, else the synthetic phantom default
    image_size=256,
    model="unet",  # unet, attention_unet, resnet34_unet, unet++ (unet.MODELS)
    model_args=None,  # more constructor arguments, e.g. {"pretrained": True}, {"deep_supervision": True}
    init_features=32,
    loss="dice",  # dice, bce, bce_dice, soft_iou, lovasz, focal, tversky, focal_tversky (loss.LOSSES)
    loss_args=None,  # e.g. {"alpha": 0.3, "beta": 0.7}
    deep_supervision_weights=None,  # weights of the deep supervision heads; None: equal
    optimizer="adam",  # adam, adamw, sgd (Nesterov momentum)
    weight_decay=0.0,
    momentum=0.9,  # sgd only
    schedule="constant",  # constant, cosine, poly (power 0.9), stepped every batch
    warmup_epochs=0,  # linear warm-up from lr / (warm-up steps)
    grad_clip=None,  # max gradient norm; None: no clipping
    tta=False,  # validate on the mean of the prediction and its horizontally flipped counterpart
    epochs=100,
    batch_size=16,
    lr=1e-4,
    device="auto",  # "auto": the GPU if there is one, else the CPU
    workers=4,
    vis_images=200,
    vis_freq=10,
    weights_dir="weights",
    logs_dir="logs",
    cache_dir=str(dataset.DEFAULT_CACHE_DIR),
    seed=42,
    validation_cases=10,
    folds=0,  # > 1: patient-level k-fold cross-validation instead of the reference split ...
    fold=0,  # ... validating on fold number `fold` (0 .. folds - 1)
    aug_scale=0.05,
    aug_angle=15,
    flip_prob=0.5,
    data_pipeline="auto",  # "reference" (CPU workers), "device" (on the GPU), "auto": device on a GPU
    amp="auto",  # "bf16", "fp16", "off"; "auto": bf16 on a GPU that has it, else off
    channels_last="auto",  # True, False; "auto": on a GPU
    compile=False,  # torch.compile the model
    deterministic=False,  # deterministic algorithms (slower on a GPU)
    resume=False,  # continue from logs_dir/checkpoint.pt if there is one
)

# Small enough for a 2-core CPU to train in about a minute on the phantom data.
SYNTHETIC_DEMO = dict(image_size=64, epochs=6, batch_size=8, lr=1e-3, workers=0, vis_freq=2, vis_images=16)

CHECKPOINT_NAME = "checkpoint.pt"
WEIGHTS_NAME = "unet.pt"


def prepare(synthetic_demo=True, **overrides):
    """Resolve the data folder; on the synthetic default, apply SYNTHETIC_DEMO if asked.

    Returns the full parameters (data_path made explicit) and a line saying what was chosen.
    """
    params = settings(DEFAULTS, **overrides)
    data_dir, source = dataset.locate_data(params["data_path"])
    params["data_path"] = str(data_dir)
    message = f"data: {data_dir} ({source})"
    if synthetic_demo and dataset.is_synthetic(data_dir):
        params.update(SYNTHETIC_DEMO)
        message += f"; synthetic demo settings: {SYNTHETIC_DEMO}"
    return params, message


def settings(defaults=DEFAULTS, **overrides):
    """defaults with overrides; unknown names are an error, not silently ignored."""
    unknown = set(overrides) - set(defaults)
    if unknown:
        raise TypeError(f"unknown parameter(s): {', '.join(sorted(unknown))}")
    return {**defaults, **overrides}


def resolve_device(name="auto"):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"device {name!r} asked for but no CUDA GPU is available: using the CPU")
        return torch.device("cpu")
    return device


def resolve_speed_options(params, device):
    """(data pipeline, autocast dtype or None, channels_last) for this device."""
    on_gpu = device.type == "cuda"
    pipeline = params["data_pipeline"]
    if pipeline == "auto":
        pipeline = "device" if on_gpu else "reference"
    if pipeline not in ("reference", "device"):
        raise ValueError(f"data_pipeline must be 'reference', 'device' or 'auto', not {pipeline!r}")
    amp = params["amp"]
    if amp == "auto":
        amp = "bf16" if on_gpu and torch.cuda.is_bf16_supported() else "off"
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}
    if amp not in dtypes:
        raise ValueError(f"amp must be 'bf16', 'fp16', 'off' or 'auto', not {amp!r}")
    channels_last = on_gpu if params["channels_last"] == "auto" else bool(params["channels_last"])
    return pipeline, dtypes[amp], channels_last


def seed_everything(seed, deterministic=False):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.benchmark = True


def seed_worker(worker_id):
    """Seed numpy in each loader worker from torch's per-worker, per-epoch seed.

    The reference seeded workers with 42 + worker_id, so every epoch replayed
    the same augmentations and slice draws.
    """
    np.random.seed(torch.initial_seed() % 2**32)


def git_commit():
    try:
        here = Path(__file__).resolve().parent
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=here, capture_output=True, text=True).stdout
        return commit + ("-dirty" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def device_description(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def write_json_atomic(data, path):
    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data, indent=2, default=str))
    os.replace(temporary, path)


def datasets(params, data_dir, augment_on_cpu=True):
    common = dict(
        images_dir=data_dir,
        image_size=params["image_size"],
        validation_cases=params["validation_cases"],
        seed=params["seed"],
        folds=params["folds"],
        fold=params["fold"],
        cache_dir=params["cache_dir"],
        workers=max(1, params["workers"]),
    )
    augment = None
    if augment_on_cpu:
        augment = transforms(scale=params["aug_scale"], angle=params["aug_angle"], flip_prob=params["flip_prob"])
    train_set = dataset.BrainSegmentationDataset(subset="train", transform=augment, **common)
    valid_set = dataset.BrainSegmentationDataset(subset="validation", random_sampling=False, **common)
    if len(train_set) < params["batch_size"]:
        raise dataset.DataError(
            f"the training set has {len(train_set)} slices, fewer than batch_size={params['batch_size']}; "
            "lower batch_size"
        )
    return train_set, valid_set


def data_loaders(train_set, valid_set, params, device, generator):
    common = dict(
        batch_size=params["batch_size"],
        num_workers=params["workers"],
        worker_init_fn=seed_worker,
        pin_memory=device.type == "cuda",
    )
    train_loader = DataLoader(train_set, shuffle=True, drop_last=True, generator=generator, **common)
    valid_loader = DataLoader(valid_set, shuffle=False, drop_last=False, **common)
    return train_loader, valid_loader


class Batches:
    """Where training and validation batches come from, for either data pipeline."""

    def __init__(self, pipeline, train_set, valid_set, params, device):
        self.pipeline, self.device, self.params = pipeline, device, params
        self.loader_generator = torch.Generator().manual_seed(params["seed"])
        self.steps = len(train_set) // params["batch_size"]
        if pipeline == "reference":
            self.train_loader, self.valid_loader = data_loaders(
                train_set, valid_set, params, device, self.loader_generator
            )
        else:
            self.train_slices = DeviceSlices(train_set, device)
            self.valid_slices = DeviceSlices(valid_set, device)
            self.augment = DeviceAugment(params["aug_scale"], params["aug_angle"], params["flip_prob"])
            self.device_generator = torch.Generator(device=device).manual_seed(params["seed"])

    def train(self):
        if self.pipeline == "reference":
            for x, y in self.train_loader:
                yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        else:
            yield from self.train_slices.sample_batches(
                self.params["batch_size"], self.steps, self.device_generator, self.augment
            )

    def validation(self):
        if self.pipeline == "reference":
            for x, y in self.valid_loader:
                yield x.to(self.device), y.to(self.device)
        else:
            yield from self.valid_slices.ordered_batches(max(64, self.params["batch_size"]))

    def state(self):
        state = dict(loader=self.loader_generator.get_state())
        if self.pipeline == "device":
            state["device"] = self.device_generator.get_state()
        return state

    def set_state(self, state):
        self.loader_generator.set_state(state["loader"])
        if self.pipeline == "device" and "device" in state:
            self.device_generator.set_state(state["device"])


class Logits(nn.Module):
    """forward() = model.logits(): what training steps through (and torch.compile compiles)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.logits(x)


def as_float(logits):
    """Logits (or deep supervision's list of them) in float32, out of autocast."""
    return [head.float() for head in logits] if isinstance(logits, (list, tuple)) else logits.float()


def model_arguments(params, in_channels, out_channels):
    """The constructor arguments of params' model; an ImageNet request is kept out of what is saved."""
    extra = dict(params["model_args"] or {})
    args = dict(in_channels=in_channels, out_channels=out_channels, init_features=params["init_features"], **extra)
    saved = {key: value for key, value in args.items() if key not in ("pretrained", "pretrained_path")}
    return args, saved


def build_optimizer(parameters, params):
    name, lr, decay = params["optimizer"], params["lr"], params["weight_decay"]
    if name == "adam":
        return torch.optim.Adam(parameters, lr=lr, weight_decay=decay)
    if name == "adamw":
        return torch.optim.AdamW(parameters, lr=lr, weight_decay=decay)
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=lr, momentum=params["momentum"], nesterov=True, weight_decay=decay)
    raise ValueError(f"optimizer must be 'adam', 'adamw' or 'sgd', not {name!r}")


def lr_factor(step, total_steps, warmup_steps=0, schedule="constant"):
    """The multiplier of the base learning rate at a 0-based optimiser step."""
    if schedule not in ("constant", "cosine", "poly"):
        raise ValueError(f"schedule must be 'constant', 'cosine' or 'poly', not {schedule!r}")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "poly":
        return (1 - progress) ** 0.9
    return 1.0


def build_scheduler(optimizer, params, steps_per_epoch):
    total, warmup = params["epochs"] * steps_per_epoch, params["warmup_epochs"] * steps_per_epoch
    lr_factor(0, total, warmup, params["schedule"])  # a wrong schedule name fails here, not after an epoch
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total, warmup, params["schedule"])
    )


def validate(model, batches, loss_fn, autocast, memory_format, keep_images=0, tta=False):
    """Mean batch loss; thresholded predictions and truths of every slice (uint8 0/1, on the CPU); and the
    (FLAIR, truth, prediction) of the first keep_images slices, for overlays.

    model returns logits; the loss is of the plain prediction, the thresholded prediction is the TTA one when tta.
    The threshold is the reference's np.round: above 0.5 is tumour.
    """
    model.eval()
    losses, preds, trues, flair = [], [], [], []
    kept = 0
    with torch.no_grad():
        for x, y_true in batches:
            x = x.contiguous(memory_format=memory_format)
            with autocast():
                logits = as_float(model(x))
                y_pred = torch.sigmoid(logits)
                if tta:
                    y_pred = (y_pred + torch.sigmoid(model(x.flip(-1)).float()).flip(-1)) / 2
            losses.append(loss_fn(logits, y_true).item())
            preds.append((y_pred[:, 0] > 0.5).to(torch.uint8).cpu().numpy())
            trues.append((y_true[:, 0] > 0.5).to(torch.uint8).cpu().numpy())
            if kept < keep_images:
                flair.append(x[: keep_images - kept, 1].float().cpu().numpy())
                kept += len(flair[-1])
    preds, trues = np.concatenate(preds), np.concatenate(trues)
    examples = list(zip(np.concatenate(flair), trues, preds)) if flair else []
    return float(np.mean(losses)), preds, trues, examples


def describe_split(params):
    if params["folds"] and params["folds"] > 1:
        return f"patient-level {params['folds']}-fold cross-validation, fold {params['fold']}, seed {params['seed']}"
    return f"reference: random.sample seed {params['seed']}, {params['validation_cases']} validation patients"


class EpochEnd:
    """What follows an epoch's validation pass, run in the background: per-patient DSC, TensorBoard scalars
    and overlays, the best weights, the checkpoint and results.json (in that order: the checkpoint is never
    behind the weights it names the best)."""

    def __init__(self, results, logger, valid_set, params, model_args, checkpoint_path):
        self.results, self.logger, self.valid_set = results, logger, valid_set
        self.params, self.model_args, self.checkpoint_path = params, model_args, Path(checkpoint_path)

    def __call__(self, entry, seconds, val_loss, preds, trues, examples, snapshot):
        """entry: the epoch's history line so far; seconds: train_seconds and wall_seconds at the epoch's end;
        preds, trues: 0/1 per validation slice; examples: (FLAIR, truth, prediction) to draw; snapshot: the CPU
        copy of the training state for the checkpoint."""
        results, params, step = self.results, self.params, entry["step"]
        per_patient = dsc_per_volume(preds, trues, self.valid_set.patient_slice_index)
        mean_dsc = float(np.mean(per_patient))
        self.logger.scalar_summary("val_loss", val_loss, step)
        self.logger.scalar_summary("val_dsc", mean_dsc, step)
        overlays = [overlay(flair, pred, true) for flair, true, pred in examples]
        size = params["batch_size"]
        for index in range(0, len(overlays), size):  # grouped per batch as the reference's image/<i> tags
            self.logger.image_list_summary(f"image/{index // size}", overlays[index : index + size], step)
        if results["best_epoch"] is None or mean_dsc > results["best_val_dsc"]:  # weights even at DSC 0
            results.update(best_val_dsc=mean_dsc, best_epoch=entry["epoch"])
            checkpoint.save_weights(snapshot["model"], Path(params["weights_dir"]) / WEIGHTS_NAME,
                                    params["image_size"], self.model_args, params["model"])
        entry.update(val_loss=val_loss, val_dsc=mean_dsc,
                     val_dsc_per_patient=dict(zip(self.valid_set.patients, per_patient)))
        results.update(seconds)
        results["history"].append(entry)
        checkpoint.save_atomic(dict(snapshot, results=results), self.checkpoint_path)
        write_json_atomic(results, self.checkpoint_path.parent / "results.json")


class NonFiniteLoss(FloatingPointError):
    pass


def train(**overrides):
    """Train params' model; returns the results dict also written to logs_dir/results.json."""
    params = settings(DEFAULTS, **overrides)
    started = time.perf_counter()
    data_dir, source = dataset.locate_data(params["data_path"])
    device = resolve_device(params["device"])
    pipeline, amp_dtype, channels_last = resolve_speed_options(params, device)
    seed_everything(params["seed"], params["deterministic"])
    weights_dir, logs_dir = Path(params["weights_dir"]), Path(params["logs_dir"])
    weights_dir.mkdir(parents=True, exist_ok=True)
    logs_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_path = logs_dir / CHECKPOINT_NAME
    print(f"data: {data_dir} ({source}); device: {device_description(device)}; data pipeline: {pipeline}")

    train_set, valid_set = datasets(params, data_dir, augment_on_cpu=pipeline == "reference")
    batches = Batches(pipeline, train_set, valid_set, params, device)
    build_args, model_args = model_arguments(params, train_set.in_channels, train_set.out_channels)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = build_model(params["model"], **build_args)
    if hasattr(model, "pretrained_message"):
        print(model.pretrained_message)
    model = model.to(device, memory_format=memory_format)
    step_model = Logits(model)
    if params["compile"]:
        step_model = torch.compile(step_model)
    loss_fn = build_loss(
        params["loss"], deep_supervision_weights=params["deep_supervision_weights"], **(params["loss_args"] or {})
    )
    optimizer = build_optimizer(model.parameters(), params)
    scheduler = build_scheduler(optimizer, params, batches.steps)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

    def autocast():
        if amp_dtype is None:
            return nullcontext()
        return torch.autocast(device.type, dtype=amp_dtype)

    results = dict(
        commit=git_commit(),
        device=device_description(device),
        data_dir=str(Path(data_dir).resolve()),
        data_source=source,
        synthetic_data=dataset.is_synthetic(data_dir),
        params=params,
        speed_options=dict(data_pipeline=pipeline, amp=str(amp_dtype), channels_last=channels_last),
        split=describe_split(params),
        train_patients=train_set.patients,
        validation_patients=valid_set.patients,
        history=[],
        best_val_dsc=0.0,
        best_epoch=None,
        weights=str(weights_dir / WEIGHTS_NAME),
        train_seconds=0.0,
    )
    first_epoch, step = 0, 0
    if params["resume"] and checkpoint_path.exists():
        saved = checkpoint.load_training_checkpoint(checkpoint_path)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        scaler.load_state_dict(saved["scaler"])
        batches.set_state(saved["batches"])
        checkpoint.set_rng_state(saved["rng"])
        results.update(
            {key: saved["results"][key] for key in ("history", "best_val_dsc", "best_epoch", "train_seconds")}
        )
        results["resumed_after_epochs"] = saved["results"].get("resumed_after_epochs", []) + [saved["epoch"] + 1]
        first_epoch, step = saved["epoch"] + 1, saved["step"]
        print(f"resuming after epoch {first_epoch} of {params['epochs']} from {checkpoint_path}")

    logger = Logger(logs_dir)

    epoch_end = EpochEnd(results, logger, valid_set, params, model_args, checkpoint_path)
    train_started = time.perf_counter() - results["train_seconds"]
    recent_losses = []
    with BackgroundWork() as background:
        for epoch in tqdm(range(first_epoch, params["epochs"]), desc="epochs", unit="epoch",
                          initial=first_epoch, total=params["epochs"]):
            step_model.train()
            epoch_losses = []
            for x, y_true in tqdm(batches.train(), total=batches.steps, desc=f"epoch {epoch + 1}", leave=False,
                                  unit="batch"):
                step += 1
                optimizer.zero_grad(set_to_none=True)
                with autocast():
                    logits = step_model(x.contiguous(memory_format=memory_format))
                loss = loss_fn(as_float(logits), y_true)
                value = loss.item()
                if not np.isfinite(value):
                    raise NonFiniteLoss(
                        f"loss became {value} at epoch {epoch + 1}, step {step}; stopped. The last good "
                        f"checkpoint ({checkpoint_path}) is kept: lower lr, or check the data, then resume=True"
                    )
                scaler.scale(loss).backward()
                if params["grad_clip"]:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), params["grad_clip"])
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                recent_losses.append(value)
                epoch_losses.append(value)
                if (step + 1) % 10 == 0:
                    logger.scalar_summary("loss", np.mean(recent_losses), step)
                    recent_losses = []

            visualise = epoch % params["vis_freq"] == 0 or epoch == params["epochs"] - 1
            val_loss, preds, trues, examples = validate(
                step_model, batches.validation(), loss_fn, autocast, memory_format,
                keep_images=params["vis_images"] if visualise else 0, tta=params["tta"],
            )
            entry = dict(epoch=epoch + 1, step=step, loss=float(np.mean(epoch_losses)),
                         lr=optimizer.param_groups[0]["lr"])
            seconds = dict(train_seconds=time.perf_counter() - train_started,
                           wall_seconds=time.perf_counter() - started)
            # what the next epoch changes in place is copied now; the rest of the epoch's end runs beside it
            snapshot = checkpoint.to_cpu(dict(
                epoch=epoch, step=step, model=model.state_dict(), optimizer=optimizer.state_dict(),
                scheduler=scheduler.state_dict(), scaler=scaler.state_dict(), batches=batches.state(),
                rng=checkpoint.rng_state(),
            ))
            background.submit(epoch_end, entry, seconds, val_loss, preds, trues, examples, snapshot)
    logger.close()
    print("Best validation mean DSC: {:4f}".format(results["best_val_dsc"]))
    return results
