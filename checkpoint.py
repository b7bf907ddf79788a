"""Files that must never be lost or half-written: weights and training checkpoints.

Weights files carry what inference needs (model name and arguments, image
size) beside the state_dict, so the file alone is enough. A plain state_dict,
such as the reference's published unet.pt, loads too.
"""

import copy
import os
import random
from pathlib import Path

import numpy as np
import torch

from unet import MODELS, build_model

WEIGHTS_FORMAT = "brain-segmentation-weights/1"


class WeightsError(ValueError):
    """A weights file that does not fit: the message says which file and what to do."""


def save_atomic(obj, path):
    """torch.save to a temporary file, then rename: the file is never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    torch.save(obj, temporary)
    os.replace(temporary, path)


def to_cpu(obj):
    """A copy of obj with every tensor copied to the CPU, so that training can go on changing the originals."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        copied = type(obj)((key, to_cpu(value)) for key, value in obj.items())
        if hasattr(obj, "_metadata"):  # a state_dict's module versions, read by load_state_dict
            copied._metadata = copy.deepcopy(obj._metadata)
        return copied
    if isinstance(obj, (list, tuple)) and type(obj) in (list, tuple):
        return type(obj)(to_cpu(value) for value in obj)
    return copy.deepcopy(obj)


def save_weights(model, path, image_size, model_args, model_name="unet"):
    """model: a module, or its state_dict (e.g. a to_cpu snapshot)."""
    state_dict = model if isinstance(model, dict) else model.state_dict()
    save_atomic(
        dict(
            format=WEIGHTS_FORMAT,
            model=model_name,
            model_args=dict(model_args),
            image_size=image_size,
            normalisation="per volume: p10-p99 rescale, then per-channel mean/std",
            state_dict=state_dict,
        ),
        path,
    )


def read_weights(path):
    """(state_dict, metadata): metadata is {} for a plain state_dict."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file; train first (train.ipynb) or point weights at a .pt file")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise WeightsError(f"{path}: not a readable PyTorch weights file ({type(error).__name__}: {error})") from None
    if isinstance(content, dict) and content.get("format") == WEIGHTS_FORMAT:
        metadata = {key: value for key, value in content.items() if key != "state_dict"}
        return content["state_dict"], metadata
    if isinstance(content, dict) and all(isinstance(value, torch.Tensor) for value in content.values()):
        return content, {}
    raise WeightsError(f"{path}: neither a weights file of this project nor a state_dict")


def load_weights(path, device="cpu"):
    """The model of a weights file, in eval mode, and its metadata.

    The model is rebuilt from the file's model name and arguments. A plain
    state_dict is taken for the reference's U-Net, whose width is read off the
    first convolution, so init_features need not be known.
    """
    state_dict, metadata = read_weights(path)
    name = metadata.get("model", "unet")
    if name not in MODELS:
        raise WeightsError(
            f"{path}: weights of model {name!r}, which this version does not build ({', '.join(MODELS)})"
        )
    model_args = dict(metadata.get("model_args", {}))
    if not metadata:
        first = state_dict.get("encoder1.enc1conv1.weight")
        if first is None:
            raise WeightsError(
                f"{path}: not U-Net weights (no encoder1.enc1conv1.weight among {len(state_dict)} tensors)"
            )
        model_args.setdefault("in_channels", first.shape[1])
        model_args.setdefault("init_features", first.shape[0])
        if "conv.weight" in state_dict:
            model_args.setdefault("out_channels", state_dict["conv.weight"].shape[0])
    model = build_model(name, **model_args)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:
        details = [line.strip() for line in str(error).splitlines()[1:] if line.strip()]
        summary = "; ".join(details[:2]) or str(error)
        described = f"{type(model).__name__}({model_args})"
        raise WeightsError(f"{path}: weights do not fit {described}: {summary}") from None
    return model.to(device).eval(), metadata


def rng_state():
    state = dict(python=random.getstate(), numpy=np.random.get_state(), torch=torch.get_rng_state())
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_training_checkpoint(path):
    """Everything train.py saved at the end of an epoch (weights_only=False: it holds RNG states)."""
    return torch.load(path, map_location="cpu", weights_only=False)
