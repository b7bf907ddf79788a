"""Training, called by train.ipynb: the reference's recipe by default (U-Net, Adam 1e-4, Dice loss,
per-volume validation DSC), with the networks of unet.py, the losses of loss.py, the optimisers and
schedules of optimizers.py, gradient clipping and flip test-time augmentation as options.

Every epoch ends (evaluation.EpochEnd, in a background thread) with TensorBoard logs, the best weights,
an atomic checkpoint (weights, optimiser, scaler, sampler and RNG states, best score) and results.json,
so a killed run resumes with resume=True, to the same result. The settings are parameters.TRAIN.
"""

import json
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

import checkpoint
import safe_files
import dataset
import layouts
import distributed
import parameters
import runtime
import runs
from background import BackgroundWork
from batches import Batches, datasets, trained_pixels, training_size
from evaluation import WEIGHTS_NAME, EpochEnd, TrainedEpoch, validate
from logger import Logger, SilentLogger
from loss import build_loss
from optimizers import build_optimizer, build_scheduler
from unet import build_model

DEFAULTS = parameters.defaults(parameters.TRAIN)

# The phantom default at settings a 2-core CPU trains in about a minute (results/newcomer-timings.md), with the
# modern recipe, whose validation DSC rises over the epochs, so a newcomer sees learning.
SYNTHETIC_DEMO = dict(image_size=64, epochs=6, batch_size=8, lr=1e-3, loss="bce_dice", optimizer="adamw",
                      schedule="cosine", warmup_epochs=1, workers=0, vis_freq=2, vis_images=16)

CHECKPOINT_NAME = runs.CHECKPOINT_FILE.name


def prepare(synthetic_demo=True, **overrides):
    """Resolve the data folder; on the synthetic default, apply SYNTHETIC_DEMO if asked.

    Returns the full parameters (data_path made explicit) and a line saying what was chosen.
    """
    params = parameters.check_train(parameters.settings(DEFAULTS, **overrides))
    data_dir, source = dataset.locate_data(params["data_path"], dataset=params["dataset"])
    params["data_path"] = str(data_dir)
    message = f"data: {data_dir} ({source})"
    if synthetic_demo and dataset.is_synthetic(data_dir):
        # only the settings the user left at their defaults: an epochs=3 asked for is kept, and said
        demo = {name: value for name, value in SYNTHETIC_DEMO.items() if overrides.get(name, DEFAULTS[name]) ==
                DEFAULTS[name]}
        kept = {name: params[name] for name in SYNTHETIC_DEMO if name not in demo}
        params.update(demo)
        message += f"; synthetic demo settings: {demo}" + (f"; yours kept: {kept}" if kept else "")
    return params, message


class NonFiniteLoss(FloatingPointError):
    pass


def model_arguments(params, in_channels, out_channels):
    """The constructor arguments of params' model; an ImageNet request is kept out of what is saved."""
    extra = dict(params["model_args"] or {})
    args = dict(in_channels=in_channels, out_channels=out_channels, init_features=params["init_features"], **extra)
    saved = {key: value for key, value in args.items() if key not in ("pretrained", "pretrained_path")}
    return args, saved


def optimizer_step(model, x, y_true, loss_fn, optimizer, scaler, autocast, memory_format, grad_clip=None):
    """One training step, the one every training and benchmark takes: forward under autocast in memory_format,
    the loss in float32, backward through the gradient scaler (a no-op unless fp16), clipping, the step.
    Returns the loss tensor (detached: what was minimised)."""
    optimizer.zero_grad(set_to_none=True)
    with autocast():
        logits = model(x.contiguous(memory_format=memory_format))
    loss = loss_fn(as_float(logits), y_true)
    scaler.scale(loss).backward()
    if grad_clip:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_([p for group in optimizer.param_groups for p in group["params"]], grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return loss.detach()


class Run:
    """The model and what steps it (loss, optimiser, schedule, gradient scaler, batches), saved and restored
    whole at every epoch's end."""

    def __init__(self, params, train_set, valid_set, device, speed, group=None):
        self.params, self.speed, self.step, self.recent_losses = params, speed, 0, []
        self.batches = Batches(speed.pipeline, train_set, valid_set, params, device, group)
        build_args, self.model_args = model_arguments(params, train_set.in_channels, train_set.out_channels)
        model = build_model(params["model"], **build_args)
        if hasattr(model, "pretrained_message"):
            print(model.pretrained_message)
        self.encoder_weights = getattr(model, "encoder_weights", None)  # "ImageNet" or "random" where it has one
        self.model = model.to(device, memory_format=speed.memory_format)
        # data-parallel: gradients averaged over the ranks at every step (a plain process: the model itself)
        self.parallel = group is not None and group.parallel
        self.step_model = group.wrap(self.model, params["sync_batchnorm"]) if group is not None else self.model
        self.step_model = torch.compile(self.step_model) if params["compile"] else self.step_model
        self.loss_fn = build_loss(params["loss"], deep_supervision_weights=params["deep_supervision_weights"],
                                  **(params["loss_args"] or {}))
        self.optimizer = build_optimizer(self.model.parameters(), params)
        # the average of the weights over the last ~1/(1 - decay) steps: it is what validation scores and the
        # best weights keep, so they depend less on where the last step landed
        self.ema = torch.optim.swa_utils.AveragedModel(
            self.model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(params["ema_decay"]),
            use_buffers=True) if params["ema_decay"] else None
        self.scheduler = build_scheduler(self.optimizer, params, self.batches.steps)
        self.scaler = torch.amp.GradScaler(device.type, enabled=speed.amp_dtype == torch.float16)

    def train_epoch(self, epoch, logger):
        """One epoch of optimiser steps; returns its mean loss. The loss goes to TensorBoard every 10 steps."""
        self.step_model.train()
        losses = []
        for x, y_true in tqdm(self.batches.train(epoch), total=self.batches.steps, desc=f"epoch {epoch + 1}",
                              leave=False, unit="batch", disable=not runtime.on_terminal()):
            self.step += 1
            value = optimizer_step(self.step_model, x, y_true, self.loss_fn, self.optimizer, self.scaler,
                                   self.speed.autocast, self.speed.memory_format, self.params["grad_clip"]).item()
            if not np.isfinite(value):
                raise NonFiniteLoss(
                    f"loss became {value} at epoch {epoch + 1}, step {self.step}; stopped. The last good checkpoint "
                    f"({Path(self.params['logs_dir']) / CHECKPOINT_NAME}) is kept: lower lr, or check the data, "
                    "then resume=True"
                )
            if self.ema is not None:
                self.ema.update_parameters(self.model)
            self.scheduler.step()
            self.recent_losses.append(value)
            losses.append(value)
            if (self.step + 1) % 10 == 0:
                logger.scalar_summary("loss", np.mean(self.recent_losses), self.step)
                self.recent_losses = []
        return float(np.mean(losses))

    @property
    def evaluated_model(self):
        """What validation scores and the best weights keep: the weights' moving average, when there is one;
        never the data-parallel wrapper, whose forward is a collective that only rank 0 would join."""
        if self.ema is not None:
            return self.ema.module
        return self.model if self.parallel else self.step_model

    def snapshot(self, epoch):
        """A CPU copy of the training state, taken before the next epoch changes it in place."""
        state = dict(
            epoch=epoch, step=self.step, model=self.model.state_dict(), optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(), scaler=self.scaler.state_dict(), batches=self.batches.state(),
            rng=checkpoint.rng_state(),
        )
        if self.ema is not None:
            state.update(ema=self.ema.state_dict(), weights=self.ema.module.state_dict())
        return checkpoint.to_cpu(state)

    def restore(self, saved):
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.scaler.load_state_dict(saved["scaler"])
        if self.ema is not None:
            self.ema.load_state_dict(saved["ema"])
        self.batches.set_state(saved["batches"])
        checkpoint.set_rng_state(saved["rng"])
        self.step = saved["step"]


def as_float(logits):
    """Logits (or deep supervision's list of them) in float32, out of autocast."""
    return [head.float() for head in logits] if isinstance(logits, (list, tuple)) else logits.float()


def describe_split(params):
    if params["folds"] > 1:
        return f"patient-level {params['folds']}-fold cross-validation, fold {params['fold']}, seed {params['seed']}"
    cases = params["validation_cases"]
    validation = f"{cases:.0%} of the cases validating" if isinstance(cases, float) else f"{cases} validation patients"
    return f"reference: random.sample seed {params['seed']}, {validation}"


def new_results(params, data_dir, source, device, speed, train_set, valid_set):
    synthetic = dataset.is_synthetic(data_dir)
    return dict(
        commit=runtime.git_commit(), device=runtime.device_description(device),
        data_dir=str(Path(data_dir).resolve()), data_source="synthetic phantom data" if synthetic else source,
        synthetic_data=synthetic, layout=train_set.layout.name, channels=list(train_set.channels),
        params=params, speed_options=speed.describe(), split=describe_split(params),
        train_patients=train_set.patients, validation_patients=valid_set.patients, history=[],
        best_val_dsc=0.0, best_epoch=None, weights=str(Path(params["weights_dir"]) / WEIGHTS_NAME),
        train_seconds=0.0,
    )


# what a resumed run takes from its earlier segments
RESTORED = ("history", "best_val_dsc", "best_epoch", "train_seconds", "wall_seconds", "encoder_weights")


def read_finished(path):
    """A results.json of a run that has trained all it will (runs.finished), or None."""
    try:
        saved = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return saved if "params" in saved and runs.finished(saved) else None


def refuse_other_settings(saved_results, results, where):
    """Refuse to go on with a run whose saved settings (or validation patients) differ from these."""
    before = dict(saved_results["params"], validation_patients=saved_results["validation_patients"])
    now = dict(results["params"], validation_patients=results["validation_patients"])
    # a setting newer than the checkpoint had its default then: new settings default to what the code did before
    before = {name: before.get(name, DEFAULTS.get(name)) for name in now}
    changed = [name for name in now if name not in parameters.RESUMABLE and before[name] != now[name]]
    if changed:
        raise parameters.ParameterError(
            f"{where}: cannot resume with other settings: "
            + ", ".join(f"{name} {before.get(name)!r} -> {now[name]!r}" for name in changed)
            + "; resume with the run's own settings, or start a new run in other weights_dir and logs_dir"
        )


def resume(run, results, checkpoint_path):
    """Load a stopped run's checkpoint into run and results; returns the first epoch to train (0: none).

    Refuses a checkpoint trained with other settings, and a fresh start that would overwrite best weights.
    """
    params = results["params"]
    results_path = checkpoint_path.parent / runs.RESULTS_FILE.name
    if not params["resume"]:
        # a fresh start into a folder that holds a run would replace its weights, checkpoint and results and
        # mix two runs' TensorBoard events
        held = [path for path in (checkpoint_path, results_path, Path(results["weights"]))
                if path.exists()]
        if held:
            raise safe_files.OutputError(
                f"{held[0].parent}: holds a run already ({', '.join(path.name for path in held)}); resume=True "
                "continues it, or give this run another run_name (None: a new dated one) or other weights_dir "
                "and logs_dir"
            )
        return 0
    if not checkpoint_path.exists():
        finished = read_finished(results_path)
        if finished is not None:  # its checkpoint went when the last epoch ended: nothing to resume
            refuse_other_settings(finished, results, results_path)
            results.update({key: finished[key] for key in RESTORED if key in finished})
            print(f"{checkpoint_path.parent}: " + (
                f"early stopping ended it after {len(finished['history'])} of {params['epochs']} epochs"
                if runs.stopped_early(finished) else f"every one of the {params['epochs']} epochs has run already")
                + "; nothing to resume")
            return params["epochs"]
        weights = Path(results["weights"])
        if weights.exists():
            raise safe_files.OutputError(
                f"resume=True but {checkpoint_path} does not exist, and starting afresh would overwrite {weights}: "
                "point logs_dir at the stopped run's logs, or move the weights away and run again"
            )
        print(f"resume=True: no checkpoint at {checkpoint_path} yet, so training starts at epoch 1")
        return 0
    saved = checkpoint.load_training_checkpoint(checkpoint_path)
    refuse_other_settings(saved["results"], results, checkpoint_path)
    run.restore(saved)
    results.pop("encoder_weights", None)  # what the run's first start found, not this one
    results.update({key: saved["results"][key] for key in RESTORED if key in saved["results"]})
    results["resumed_after_epochs"] = saved["results"].get("resumed_after_epochs", []) + [saved["epoch"] + 1]
    earlier = saved["results"].get("earlier_commits", []) + [saved["results"]["commit"]]
    results["earlier_commits"] = list(dict.fromkeys(earlier))  # the code that trained the epochs before
    print(f"resuming after epoch {saved['epoch'] + 1} of {params['epochs']} from {checkpoint_path}")
    return saved["epoch"] + 1


def ends_early(results, background, group):
    """Whether early stopping ends the run before its next epoch, decided by rank 0 on every epoch end so far
    (it waits for them: the stop never depends on how far the background work has got) and told to every rank."""
    if group.is_main:
        background.wait()
        stop = runs.stopped_early(results)
        if stop:
            best = results["best_epoch"]
            print(f"early stopping: {results['params']['early_stopping']} epochs without a better validation DSC "
                  + (f"than epoch {best}'s {results['best_val_dsc']:.4f}" if best else "than 0")
                  + f"; the run ends after epoch {results['history'][-1]['epoch']} of {results['params']['epochs']}")
    return group.broadcast(stop if group.is_main else None)


def train(**overrides):
    """Train params' model; returns the results dict also written to logs_dir/results.json.

    Under torchrun, every process calls it: data-parallel training (distributed.py), rank 0 writing.
    """
    params = parameters.check_train(parameters.settings(DEFAULTS, **overrides))
    started = time.perf_counter()
    with distributed.Group() as group, group.quiet():
        group.share(params["batch_size"])  # a global batch the processes cannot share is refused before any work
        params = group.broadcast(runtime.cpu_settings(runs.training_folders(params), processes=group.local_size)
                                 if group.is_main else None)  # one run folder, named by rank 0
        try:
            return _train(params, started, group)
        except BaseException:
            if group.is_main:
                runs.remove_if_empty(params)  # a run refused or stopped before its first epoch leaves no empty folder
            raise


def _train(params, started, group):
    torch.set_num_threads(params["threads"])
    data_dir, source = dataset.locate_data(params["data_path"], dataset=params["dataset"])
    if params["validation_cases"] is None:  # the layout's split, recorded as a number (as runs before it did)
        params = dict(params, validation_cases=layouts.detect(data_dir, params["dataset"]).validation_cases)
    device = group.device(runtime.resolve_device(params["device"]))
    speed = runtime.SpeedOptions(params, device)
    if speed.hint:
        print(speed.hint)
    runtime.seed_everything(parameters.training_seed(params), params["deterministic"])
    logs_dir = Path(params["logs_dir"])
    checkpoint_path = logs_dir / CHECKPOINT_NAME
    main = group.is_main  # the one process that validates and writes
    with ExitStack() as locks:
        if main:
            folders = {logs_dir.resolve(): "logs", Path(params["weights_dir"]).resolve(): "weights"}
            for folder, what in folders.items():
                locks.enter_context(safe_files.FolderLock(folder, what))
        print(f"data: {data_dir} ({source}); device: {runtime.device_description(device)}, {params['threads']} "
              f"threads; data pipeline: {speed.pipeline}"
              + (f"; {group.size} processes, data-parallel" if group.parallel else "")
              + f"\nthis run: {logs_dir.parent} (tensorboard --logdir {logs_dir.parent.parent})")
        with group.main_first():  # rank 0 writes the preprocessing cache, the others read it
            train_set, valid_set = datasets(params, data_dir, augment_on_cpu=speed.pipeline == "reference")
        run = Run(params, train_set, valid_set, device, speed, group)
        results = new_results(params, data_dir, source, device, speed, train_set, valid_set)
        if group.parallel:
            results["processes"] = group.size
        if run.encoder_weights:
            results["encoder_weights"] = run.encoder_weights
        first_epoch = resume(run, results, checkpoint_path)
        with (Logger(runs.events_dir(params)) if main else SilentLogger()) as logger:
            logger.describe(run.batches.steps, params["vis_freq"])
            with BackgroundWork() as background:
                epoch_end = EpochEnd(results, logger, valid_set, params, run.model_args, checkpoint_path)
                train_started = time.perf_counter() - results["train_seconds"]
                # wall time over every segment of a resumed run, not only this process's
                wall_before = results.get("wall_seconds", 0.0)
                # each epoch's own line comes from its end (evaluation.epoch_line); the bar only on a terminal
                for epoch in tqdm(range(first_epoch, params["epochs"]), desc="epochs", unit="epoch",
                                  initial=first_epoch, total=params["epochs"], disable=not runtime.on_terminal()):
                    if params["early_stopping"] and ends_early(results, background, group):
                        break
                    loss = group.mean(run.train_epoch(epoch, logger))  # over every rank's share
                    if not main:
                        continue
                    visualise = epoch % params["vis_freq"] == 0 or epoch == params["epochs"] - 1
                    validation_started = time.perf_counter()
                    val_loss, probs, trues, examples = validate(
                        run.evaluated_model, run.batches.validation(epoch), run.loss_fn, speed,
                        keep_images=params["vis_images"] if visualise else 0, tta=params["tta"],
                        flair=valid_set.overlay_channel,
                    )
                    validation_seconds = time.perf_counter() - validation_started
                    per_epoch = run.batches.steps * params["batch_size"]
                    trained = TrainedEpoch(epoch=epoch + 1, step=run.step, loss=loss,
                                           lr=run.optimizer.param_groups[0]["lr"],
                                           image_size=training_size(params, epoch), images=per_epoch * (epoch + 1),
                                           pixels=trained_pixels(params, epoch + 1, per_epoch),
                                           validation_seconds=validation_seconds, load_average=runtime.load_average())
                    seconds = dict(train_seconds=time.perf_counter() - train_started,
                                   wall_seconds=wall_before + time.perf_counter() - started)
                    background.submit(epoch_end, trained, seconds, val_loss, probs, trues, examples,
                                      run.snapshot(epoch))
            # the run's settings beside its scores, so TensorBoard's HParams tab compares runs by what they changed
            last = results["history"][-1] if results["history"] else {}
            logger.hparams(params, {"best val DSC": results["best_val_dsc"], "best epoch": results["best_epoch"] or 0,
                                    "last val DSC at 256x256": last.get("val_dsc_native", 0.0)})
    results = group.broadcast(results if main else None)  # every rank returns what rank 0 wrote
    if main and runs.finished(results) and not params["keep_checkpoint"] and checkpoint_path.exists():
        size = checkpoint_path.stat().st_size / 2**20
        checkpoint_path.unlink()  # a finished run resumes nothing: its weights and results.json are what it keeps
        print(f"{'early stopping ended the run' if runs.stopped_early(results) else 'every epoch has run'}: "
              f"{checkpoint_path} ({size:.0f} MiB) removed (keep_checkpoint=True keeps it)")
    print(f"Best validation mean DSC: {results['best_val_dsc']:4f}")
    return results


def main(argv=None):
    """train() from a shell, and from torchrun for data-parallel training (distributed.py)."""
    import argparse

    parser = argparse.ArgumentParser(
        description="Train as train.ipynb does, from a shell or under torchrun (torchrun --nproc_per_node=N train.py "
                    "...: data-parallel, batch_size the global batch). Parameters as in the notebook's first cell.")
    parser.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="a parameter; VALUE read as JSON, else as text (-p epochs 50 -p data_path kaggle_3m)")
    args = parser.parse_args(argv)
    overrides = {}
    for name, value in args.param:
        try:
            overrides[name] = json.loads(value)
        except json.JSONDecodeError:
            overrides[name] = value
    try:
        train(**overrides)
    except (parameters.ParameterError, dataset.DataError, safe_files.OutputError, checkpoint.WeightsError,
            checkpoint.CheckpointError, TypeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
