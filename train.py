"""Training loop of the reference (Adam, Dice loss, per-volume validation DSC),
called by train.ipynb. Every epoch it logs to TensorBoard and rewrites a
results file; the best weights are saved atomically as a plain state_dict
that the reference's code can load too."""

import json
import os
import platform
import random
import subprocess
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

import dataset
from logger import Logger
from loss import DiceLoss
from transform import transforms
from unet import UNet
from utils import dsc_per_volume, log_images

DEFAULTS = dict(
    data_path=None,  # None: auto-detect kaggle_3m, else the synthetic phantom default
    image_size=256,
    init_features=32,
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
    aug_scale=0.05,
    aug_angle=15,
    flip_prob=0.5,
)

# Small enough for a 2-core CPU to train in about a minute on the phantom data.
SYNTHETIC_DEMO = dict(image_size=64, epochs=6, batch_size=8, lr=1e-3, vis_freq=2, vis_images=16)


def prepare(synthetic_demo=True, defaults=DEFAULTS, **overrides):
    """Resolve the data folder; on the synthetic default, apply SYNTHETIC_DEMO if asked.

    Returns the full parameters (data_path made explicit) and a line saying what was chosen.
    """
    params = settings(defaults, **overrides)
    data_dir, source = dataset.locate_data(params["data_path"])
    params["data_path"] = str(data_dir)
    message = f"data: {data_dir} ({source})"
    if synthetic_demo and dataset.is_synthetic(data_dir):
        demo = {name: value for name, value in SYNTHETIC_DEMO.items() if name in defaults}
        params.update(demo)
        message += f"; synthetic demo settings: {demo}"
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


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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


def save_atomic(obj, path):
    """torch.save to a temporary file, then rename: the file is never half-written."""
    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    torch.save(obj, temporary)
    os.replace(temporary, path)


def write_json_atomic(data, path):
    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data, indent=2, default=str))
    os.replace(temporary, path)


def datasets(params, data_dir):
    common = dict(
        images_dir=data_dir,
        image_size=params["image_size"],
        validation_cases=params["validation_cases"],
        cache_dir=params["cache_dir"],
        workers=max(1, params["workers"]),
    )
    augment = transforms(scale=params["aug_scale"], angle=params["aug_angle"], flip_prob=params["flip_prob"])
    train_set = dataset.BrainSegmentationDataset(subset="train", transform=augment, **common)
    valid_set = dataset.BrainSegmentationDataset(subset="validation", random_sampling=False, **common)
    return train_set, valid_set


def data_loaders(train_set, valid_set, params, device):
    generator = torch.Generator().manual_seed(params["seed"])
    common = dict(
        batch_size=params["batch_size"],
        num_workers=params["workers"],
        worker_init_fn=seed_worker,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    if len(train_set) < params["batch_size"]:
        raise dataset.DataError(
            f"the training set has {len(train_set)} slices, fewer than batch_size={params['batch_size']}; "
            "lower batch_size"
        )
    train_loader = DataLoader(train_set, shuffle=True, drop_last=True, generator=generator, **common)
    valid_loader = DataLoader(valid_set, shuffle=False, drop_last=False, **common)
    return train_loader, valid_loader


def validate(model, loader, loss_fn, device, keep_images=0):
    """Mean batch loss, per-patient DSC, and overlays of the first keep_images slices."""
    model.eval()
    losses, preds, trues, overlays = [], [], [], []
    with torch.no_grad():
        for x, y_true in loader:
            x, y_true = x.to(device), y_true.to(device)
            y_pred = model(x)
            losses.append(loss_fn(y_pred, y_true).item())
            preds.extend(y_pred[:, 0].cpu().numpy())
            trues.extend(y_true[:, 0].cpu().numpy())
            if len(overlays) < keep_images:
                overlays.extend(log_images(x, y_true, y_pred)[: keep_images - len(overlays)])
    per_patient = dsc_per_volume(preds, trues, loader.dataset.patient_slice_index)
    return float(np.mean(losses)), per_patient, overlays


def train(**overrides):
    """Train the reference U-Net; returns the results dict also written to logs_dir/results.json."""
    params = settings(DEFAULTS, **overrides)
    started = time.perf_counter()
    data_dir, source = dataset.locate_data(params["data_path"])
    device = resolve_device(params["device"])
    seed_everything(params["seed"])
    weights_dir, logs_dir = Path(params["weights_dir"]), Path(params["logs_dir"])
    weights_dir.mkdir(parents=True, exist_ok=True)
    logs_dir.mkdir(parents=True, exist_ok=True)
    print(f"data: {data_dir} ({source}); device: {device_description(device)}")

    train_set, valid_set = datasets(params, data_dir)
    train_loader, valid_loader = data_loaders(train_set, valid_set, params, device)
    model = UNet(train_set.in_channels, train_set.out_channels, params["init_features"]).to(device)
    loss_fn = DiceLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=params["lr"])
    logger = Logger(logs_dir)

    results = dict(
        commit=git_commit(),
        device=device_description(device),
        data_dir=str(data_dir),
        data_source=source,
        params=params,
        train_patients=train_set.patients,
        validation_patients=valid_set.patients,
        history=[],
        best_val_dsc=0.0,
        best_epoch=None,
        weights=str(weights_dir / "unet.pt"),
    )
    train_started = time.perf_counter()
    step, recent_losses = 0, []
    for epoch in tqdm(range(params["epochs"]), desc="epochs", unit="epoch"):
        model.train()
        epoch_losses = []
        for x, y_true in tqdm(train_loader, desc=f"epoch {epoch + 1}", leave=False, unit="batch"):
            step += 1
            x, y_true = x.to(device, non_blocking=True), y_true.to(device, non_blocking=True)
            optimizer.zero_grad()
            loss = loss_fn(model(x), y_true)
            loss.backward()
            optimizer.step()
            recent_losses.append(loss.item())
            epoch_losses.append(recent_losses[-1])
            if (step + 1) % 10 == 0:
                logger.scalar_summary("loss", np.mean(recent_losses), step)
                recent_losses = []

        visualise = epoch % params["vis_freq"] == 0 or epoch == params["epochs"] - 1
        val_loss, per_patient, overlays = validate(
            model, valid_loader, loss_fn, device, keep_images=params["vis_images"] if visualise else 0
        )
        mean_dsc = float(np.mean(per_patient))
        logger.scalar_summary("val_loss", val_loss, step)
        logger.scalar_summary("val_dsc", mean_dsc, step)
        batch = params["batch_size"]
        for index in range(0, len(overlays), batch):  # grouped per batch as the reference's image/<i> tags
            logger.image_list_summary(f"image/{index // batch}", overlays[index : index + batch], step)
        if mean_dsc > results["best_val_dsc"]:
            results.update(best_val_dsc=mean_dsc, best_epoch=epoch + 1)
            save_atomic(model.state_dict(), weights_dir / "unet.pt")
        results["history"].append(
            dict(
                epoch=epoch + 1,
                step=step,
                loss=float(np.mean(epoch_losses)),
                val_loss=val_loss,
                val_dsc=mean_dsc,
                val_dsc_per_patient=dict(zip(valid_set.patients, per_patient)),
            )
        )
        results["train_seconds"] = time.perf_counter() - train_started
        results["wall_seconds"] = time.perf_counter() - started
        write_json_atomic(results, logs_dir / "results.json")
    logger.close()
    print("Best validation mean DSC: {:4f}".format(results["best_val_dsc"]))
    return results
