"""Weights files and training checkpoints: what they hold, written whole (safe_files.save_atomic) and read back
with a one-line error naming the file when they cannot be.

Weights files carry what inference needs (model name and arguments, image
size) and the split the model was trained on beside the state_dict, so the
file alone is enough. A plain state_dict, such as the reference's published
unet.pt, loads too.
"""

import copy
import random
from pathlib import Path

import numpy as np
import torch

from safe_files import save_atomic
from unet import MODELS, build_model

WEIGHTS_FORMAT = "brain-segmentation-weights/1"


class CheckpointError(ValueError):
    """A training checkpoint that cannot be read: the message says which file and what to do."""


class WeightsError(ValueError):
    """A weights file that does not fit: the message says which file and what to do."""


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


def save_weights(model, path, image_size, model_args, model_name="unet", split=None, context_slices=0,
                 to_square="pad"):
    """model: a module, or its state_dict (e.g. a to_cpu snapshot). split: the data split the model was trained
    on (seed, validation_cases, folds, fold, validation_patients), so that inference scores it on its own
    validation patients. context_slices: the neighbours on either side each input slice came with (2.5-D).
    to_square: how its images that were not square filled the grid (preprocessing.TO_SQUARE), as inference must."""
    state_dict = model if isinstance(model, dict) else model.state_dict()
    save_atomic(
        dict(
            format=WEIGHTS_FORMAT,
            model=model_name,
            model_args=dict(model_args),
            image_size=image_size,
            normalisation="per volume: p10-p99 rescale, then per-channel mean/std",
            split=split,
            context_slices=context_slices,
            to_square=to_square,
            state_dict=state_dict,
        ),
        path,
    )


def half_precision_copy(source, destination):
    """Write a weights file's copy with its floating-point tensors in float16 (half the bytes: the U-Net's 31 MB
    fit a 16 MiB transfer or a tracked file); integer tensors (BatchNorm's batch counts) and the metadata stay
    as they are. load_weights reads it into the float32 model (load_state_dict converts)."""
    state_dict, metadata = read_weights(source)
    half = {key: value.half() if value.is_floating_point() else value for key, value in state_dict.items()}
    if metadata:
        save_atomic(dict(metadata, state_dict=half), destination)
    else:
        save_atomic(half, destination)
    return Path(destination)


def read_weights(path):
    """(state_dict, metadata): metadata is {} for a plain state_dict."""
    path = Path(path)
    if path.is_dir():
        raise WeightsError(f"{path}: a folder, not a weights file; point weights at {path / 'unet.pt'}")
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file; train first (train.ipynb) or point weights at a .pt file")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise WeightsError(f"{path}: {_why_unloadable(path, error)}") from None
    if isinstance(content, dict) and content.get("format") == WEIGHTS_FORMAT:
        metadata = {key: value for key, value in content.items() if key != "state_dict"}
        return content["state_dict"], metadata
    if isinstance(content, dict) and all(isinstance(value, torch.Tensor) for value in content.values()):
        return content, {}
    raise WeightsError(f"{path}: neither a weights file of this project nor a state_dict")


def _why_unloadable(path, error):
    """What a file that torch.load(weights_only=True) refuses is, and what to use instead."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            pickle = archive.read(next(name for name in archive.namelist() if name.endswith("data.pkl")))
    except (zipfile.BadZipFile, StopIteration, OSError):
        pickle = b""
    if b"optimizer" in pickle and b"rng" in pickle:
        return "a training checkpoint (resume=True reads it), not a weights file; use weights/unet.pt"
    if "GLOBAL" in str(error):
        return ("a whole pickled model, not a state_dict; save model.state_dict() with torch.save, or use "
                "weights/unet.pt")
    return f"not a readable PyTorch weights file ({type(error).__name__}: {str(error).splitlines()[0]})"


def load_weights(path, device="cpu"):
    """The model of a weights file, in eval mode, and its metadata.

    The model is rebuilt from the file's model name and arguments. A plain
    state_dict is taken for the reference's U-Net, whose width is read off the
    first convolution, so init_features need not be known.
    """
    state_dict, metadata = read_weights(path)
    broken = [key for key, value in state_dict.items() if value.is_floating_point() and not torch.isfinite(value).all()]
    if broken:  # such a model predicts NaN, which thresholds to nothing: DSC 0 everywhere without a word
        raise WeightsError(f"{path}: {len(broken)} tensor(s) hold NaN or infinite values ({', '.join(broken[:3])}"
                           f"{', ...' if len(broken) > 3 else ''}): the training diverged before they were saved; "
                           "use weights from an earlier epoch or train again (a lower lr)")
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
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # an empty or cut-short file: EOFError, or the zip reader's RuntimeError
        first = (str(error).strip().splitlines() or [""])[0]
        raise CheckpointError(
            f"{path}: a damaged training checkpoint ({type(error).__name__}: {first}), e.g. a copy cut short; "
            "put back a whole copy to resume, or move the run's folder away to train it again from the start"
        ) from None
