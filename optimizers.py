"""Optimisers and learning-rate schedules (stepped every batch, after a linear warm-up)."""

import math

import torch

# the names parameters.py accepts and documents
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "poly")


def build_optimizer(parameters, params):
    name, lr, decay = params["optimizer"], params["lr"], params["weight_decay"]
    if name == "adam":
        return torch.optim.Adam(parameters, lr=lr, weight_decay=decay)
    if name == "adamw":
        return torch.optim.AdamW(parameters, lr=lr, weight_decay=decay)
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=lr, momentum=params["momentum"], nesterov=True, weight_decay=decay)
    raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, not {name!r}")


def lr_factor(step, total_steps, warmup_steps=0, schedule="constant"):
    """The multiplier of the base learning rate at a 0-based optimiser step."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, not {schedule!r}")
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
