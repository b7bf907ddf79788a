"""One folder per run: runs/<run>/ holds its logs (TensorBoard, checkpoint.pt, results.json), weights and
predictions, so `tensorboard --logdir runs` shows runs side by side and nothing of one run is written over
by the next. Inference finds the latest run's weights by itself."""

import time
from pathlib import Path

WEIGHTS_FILE = Path("weights") / "unet.pt"
CHECKPOINT_FILE = Path("logs") / "checkpoint.pt"


def new_run_name(params):
    """<date>-<time>-<model>-<loss>, e.g. 2026-11-23-0140-unet-dice."""
    return f"{time.strftime('%Y-%m-%d-%H%M%S')}-{params['model']}-{params['loss']}"


def latest(runs_dir, inside):
    """The run folder under runs_dir whose file `inside` was written last, or None."""
    candidates = [path for path in Path(runs_dir).glob(f"*/{inside}") if path.is_file()]
    if not candidates:
        return None
    return max(candidates, key=lambda path: path.stat().st_mtime).parents[len(Path(inside).parts) - 1]


def training_folders(params):
    """params with weights_dir and logs_dir made explicit: given ones are kept; otherwise runs_dir/run_name/...,
    where run_name None is a new run, or with resume=True the run whose checkpoint was written last."""
    if params["weights_dir"] is not None and params["logs_dir"] is not None:
        return params
    name = params["run_name"]
    if name is None and params["resume"]:
        stopped = latest(params["runs_dir"], CHECKPOINT_FILE)
        if stopped is not None:
            name = stopped.name
            print(f"resume=True: continuing the latest run, {stopped}")
    if name is None:
        name = new_run_name(params)
    folder = Path(params["runs_dir"]) / name
    return dict(params, run_name=name, weights_dir=params["weights_dir"] or str(folder / "weights"),
                logs_dir=params["logs_dir"] or str(folder / "logs"))


def inference_outputs(params):
    """params with weights, predictions_dir and figure made explicit: weights None is the latest run's best
    weights; predictions_dir None is the predictions folder of the weights' run (or ./predictions)."""
    weights = params["weights"]
    if weights is None:
        run = latest(params["runs_dir"], WEIGHTS_FILE)
        if run is None:
            from checkpoint import WeightsError

            raise WeightsError(f"{params['runs_dir']}: no run with weights ({WEIGHTS_FILE}) under it; train first "
                               "(train.ipynb), or point weights at a .pt file")
        weights = str(run / WEIGHTS_FILE)
    predictions_dir = params["predictions_dir"]
    if predictions_dir is None:
        path = Path(weights)
        in_a_run = path.parent.name == WEIGHTS_FILE.parent.name
        predictions_dir = str(path.parent.parent / "predictions" if in_a_run else Path("predictions"))
    figure = params["figure"] or str(Path(predictions_dir) / "dsc.png")
    return dict(params, weights=weights, predictions_dir=predictions_dir, figure=figure)
