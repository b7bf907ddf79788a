"""One folder per run, the latest run found by itself, and CPU settings that follow the machine."""

import json
import os
import time

import pytest
import torch

import checkpoint
from layouts import kaggle_3m
import runs
import runtime
import train
from unet import UNet


def test_a_run_without_folders_gets_its_own_named_by_time_model_and_loss(tmp_path, monkeypatch):
    monkeypatch.setattr(time, "strftime", lambda pattern: "2026-11-23-014000")
    params = runs.training_folders(dict(train.DEFAULTS, runs_dir=str(tmp_path), model="unet++", loss="lovasz"))
    assert params["run_name"] == "2026-11-23-014000-unet++-lovasz"
    assert params["weights_dir"] == str(tmp_path / "2026-11-23-014000-unet++-lovasz" / "weights")
    assert params["logs_dir"] == str(tmp_path / "2026-11-23-014000-unet++-lovasz" / "logs")
    named = runs.training_folders(dict(train.DEFAULTS, runs_dir=str(tmp_path), run_name="mine"))
    assert named["logs_dir"] == str(tmp_path / "mine" / "logs")
    given = runs.training_folders(dict(train.DEFAULTS, weights_dir="w", logs_dir="l"))
    assert (given["weights_dir"], given["logs_dir"], given["run_name"]) == ("w", "l", None)


def touch(path, age_seconds):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    stamp = time.time() - age_seconds
    os.utime(path, (stamp, stamp))


def test_resume_without_a_name_continues_the_run_checkpointed_last(tmp_path, capsys):
    touch(tmp_path / "older" / "logs" / "checkpoint.pt", 100)
    touch(tmp_path / "newer" / "logs" / "checkpoint.pt", 10)
    touch(tmp_path / "newest-without-checkpoint" / "logs" / "results.json", 1)
    params = runs.training_folders(dict(train.DEFAULTS, runs_dir=str(tmp_path), resume=True))
    assert params["run_name"] == "newer" and params["logs_dir"] == str(tmp_path / "newer" / "logs")
    assert f"continuing the latest run, {tmp_path / 'newer'}" in capsys.readouterr().out


def test_inference_takes_the_latest_runs_weights_and_writes_beside_them(tmp_path, monkeypatch, capsys):
    import inference

    # no run yet: the shipped weights, into a folder of their own per data
    shipped = runs.inference_outputs(dict(inference.DEFAULTS, runs_dir=str(tmp_path)), data_dir=tmp_path / "kaggle_3m")
    assert shipped["weights"] == str(runs.SHIPPED_WEIGHTS) and "using the shipped weights" in capsys.readouterr().out
    label = runs.data_label(tmp_path / "kaggle_3m")
    assert shipped["predictions_dir"] == os.path.join("predictions", f"unet-lgg-256-{label}")
    monkeypatch.setattr(runs, "SHIPPED_WEIGHTS", tmp_path / "none.pt")  # a checkout without them
    with pytest.raises(checkpoint.WeightsError, match="no run with weights .* under it; train first"):
        runs.inference_outputs(dict(inference.DEFAULTS, runs_dir=str(tmp_path)))
    touch(tmp_path / "a" / "weights" / "unet.pt", 50)
    touch(tmp_path / "b" / "weights" / "unet.pt", 5)
    touch(tmp_path / "c" / "logs" / "checkpoint.pt", 1)  # a run that has no weights yet
    params = runs.inference_outputs(dict(inference.DEFAULTS, runs_dir=str(tmp_path)))
    assert params["weights"] == str(tmp_path / "b" / "weights" / "unet.pt")
    assert params["predictions_dir"] == str(tmp_path / "b" / "predictions")
    assert params["figure"] == str(tmp_path / "b" / "predictions" / "dsc.png")
    published = runs.inference_outputs(dict(inference.DEFAULTS, weights="unet-e012d006.pt"))
    assert (published["predictions_dir"], published["figure"]) == (
        os.path.join("predictions", "unet-e012d006"), os.path.join("predictions", "unet-e012d006", "dsc.png"))


@pytest.mark.parametrize("cores, load, threads, workers", [(2, 0.1, 2, 1), (2, 1.9, 1, 1), (2, 5.0, 1, 1),
                                                           (8, 2.6, 5, 4), (1, 0.0, 1, 0)])
def test_auto_threads_take_the_idle_cores_and_auto_workers_leave_one(cores, load, threads, workers, monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    monkeypatch.setattr(os, "getloadavg", lambda: (load, 0.0, 0.0))
    monkeypatch.setattr(runtime, "_cpu_times", lambda: None)  # off Linux: the load average
    chosen = runtime.cpu_settings(dict(train.DEFAULTS))
    assert (chosen["threads"], chosen["workers"]) == (threads, workers)
    assert runtime.cpu_settings(dict(train.DEFAULTS, threads=3, workers=0))["threads"] == 3


def test_a_training_records_its_run_folder_and_threads(phantom_dir, tmp_path):
    results = train.train(data_path=str(phantom_dir), runs_dir=str(tmp_path), run_name="tiny", image_size=32,
                          init_features=4, batch_size=4, workers=0, threads=1, validation_cases=3, epochs=1,
                          vis_images=0, cache_dir=str(tmp_path / "cache"))
    assert results["params"]["threads"] == 1 and results["params"]["logs_dir"] == str(tmp_path / "tiny" / "logs")
    assert isinstance(checkpoint.load_weights(tmp_path / "tiny" / "weights" / "unet.pt")[0], UNet)
    assert results["data_source"] == "synthetic phantom data"


def test_idle_cores_come_from_the_cpu_times_of_the_last_moment(monkeypatch):
    samples = iter([(1000, 4000), (1150, 4200)])  # 150 of 200 jiffies idle: three quarters of the machine
    monkeypatch.setattr(runtime, "_cpu_times", lambda: next(samples))
    monkeypatch.setattr(os, "getloadavg", lambda: (2.0, 2.0, 2.0))  # a lagging load average is not used
    assert runtime.idle_cores(4, seconds=0) == 3.0


def test_the_commit_named_in_the_environment_wins_over_the_copied_git_repository(monkeypatch):
    """On a lent machine the tree's .git was the session's first checkout: runs there said 25ecf85-dirty while
    34fd22e ran. The caller names the commit it sent in SOURCE_COMMIT."""
    monkeypatch.setenv("SOURCE_COMMIT", "abc1234")
    assert runtime.git_commit() == "abc1234"

    def no_git(*args, **kwargs):
        raise OSError("git: not found")

    monkeypatch.setattr(runtime.subprocess, "run", no_git)
    monkeypatch.delenv("SOURCE_COMMIT")
    assert runtime.git_commit() == "unknown"


def test_a_log_gets_one_line_an_epoch_with_its_figures_and_no_bars(phantom_dir, tmp_path, capsys):
    results = train.train(data_path=str(phantom_dir), runs_dir=str(tmp_path), run_name="logged", image_size=32,
                          init_features=4, batch_size=4, workers=0, validation_cases=3, epochs=2, vis_images=0,
                          cache_dir=str(tmp_path / "c"), threads=1)
    captured = capsys.readouterr()  # not a terminal, as papermill --log-output or a log file
    lines = [line for line in captured.out.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 2
    for line, entry in zip(lines, results["history"]):
        assert line.startswith(f"epoch {entry['epoch']}/2: loss {entry['loss']:.4f}, val loss {entry['val_loss']:.4f}, "
                               f"val DSC {entry['val_dsc']:.4f} (at 256x256 {entry['val_dsc_native']:.4f}), ")
    assert lines[0].endswith("best so far")  # the first epoch is the best so far by definition
    assert "batch/s" not in captured.err and "epoch/s" not in captured.err and "case/s" not in captured.err
    # the preprocessing too: a line for each set (training, validation) when done, no bar
    assert [line.split(" in ")[0] for line in captured.out.splitlines() if line.startswith("preprocessed ")] == [
        "preprocessed 5 case(s) at 32 px", "preprocessed 3 case(s) at 32 px"]


def test_tensorboard_names_each_overlay_and_holds_the_runs_settings(phantom_dir, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


    results = train.train(data_path=str(phantom_dir), runs_dir=str(tmp_path), run_name="tb", image_size=32,
                          init_features=4, batch_size=4, workers=0, validation_cases=3, epochs=1, vis_images=2,
                          vis_freq=1, cache_dir=str(tmp_path / "c"), threads=1, lr=3e-3)
    # the events sit in the run's own folder: TensorBoard names the run "tb", not "tb/logs"
    assert not list((tmp_path / "tb" / "logs").glob("events.out.tfevents.*"))
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0, "tensors": 0}).Reload()
    first = results["validation_patients"][0]
    numbers = [number for number, _, _ in kaggle_3m.list_patients(phantom_dir)[first]]
    # the first two validation slices: the patient's second and third file (the first was dropped)
    assert events.Tags()["images"] == [f"validation overlays (red prediction, green truth)/{first} slice {n}"
                                       for n in numbers[1:3]]
    assert "about this run/text_summary" in events.Tags()["tensors"]
    hparams = events.PluginTagToContent("hparams")
    settings = hparams["_hparams_/session_start_info"]  # the run's parameters, by name and value
    assert b"run_name" in settings and b"\n\x04loss\x12\x06\x1a\x04dice" in settings


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_stays_float32_on_a_cpu_and_says_when_bf16_would_pay(native, monkeypatch):
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: native)
    speed = runtime.SpeedOptions(dict(train.DEFAULTS), torch.device("cpu"))
    assert speed.amp_dtype is None and not speed.channels_last  # float32, as the CPU protocol's runs
    assert (speed.hint is not None and 'amp="bf16"' in speed.hint) == native
    asked = runtime.SpeedOptions(dict(train.DEFAULTS, amp="bf16", channels_last=True), torch.device("cpu"))
    assert asked.amp_dtype == torch.bfloat16 and (asked.hint is None) == native  # emulated: said (the test below)



@pytest.mark.parametrize("native", [True, False])
def test_bf16_only_where_native_for_the_fast_recipes_and_a_warning_where_asked_and_emulated(native, monkeypatch):
    """amp="native" (the fast recipes'): bfloat16 where the CPU computes it, float32 where it would be emulated; an
    explicit amp="bf16" is kept, with a line saying it is emulated there."""
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: native)
    cpu = torch.device("cpu")
    fast = runtime.SpeedOptions(dict(train.DEFAULTS, amp="native", channels_last=True), cpu)
    assert fast.amp_dtype == (torch.bfloat16 if native else None)
    if native:
        assert fast.hint is None
    else:  # the one line that says what emulation costs, and what amp="native" does about it
        assert fast.hint.startswith("bfloat16 on a CPU without native bfloat16: emulated, each step many times slower")
        assert fast.hint.endswith('amp="native" trains in float32 here')
    asked = runtime.SpeedOptions(dict(train.DEFAULTS, amp="bf16"), cpu)
    assert asked.amp_dtype == torch.bfloat16
    assert (asked.hint is None) == native and (native or "without native bfloat16: emulated" in asked.hint)


def test_a_gpu_that_only_emulates_bf16_trains_in_float32_unless_asked(monkeypatch):
    """Kaggle's T4 (before Ampere): torch.cuda.is_bf16_supported() is True by emulation only."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    gpu = torch.device("cuda")
    assert runtime.SpeedOptions(dict(train.DEFAULTS), gpu).amp_dtype is None  # auto
    native = runtime.SpeedOptions(dict(train.DEFAULTS, amp="native"), gpu)
    assert native.amp_dtype is None and native.hint.startswith("bfloat16 on a GPU without native bfloat16: emulated")
    assert native.hint.endswith('amp="native" trains in float32 here')
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)  # an A100, H100
    assert runtime.SpeedOptions(dict(train.DEFAULTS), gpu).amp_dtype == torch.bfloat16
    assert runtime.SpeedOptions(dict(train.DEFAULTS, amp="native"), gpu).amp_dtype == torch.bfloat16

def test_a_runs_results_are_read_from_its_one_file_and_older_layouts_still_load(tmp_path):
    new = tmp_path / "new" / "logs"
    new.mkdir(parents=True)
    (new / "results.json").write_text(json.dumps(dict(history=[{}], params=dict(epochs=1), experiment="unet-dice")))
    # before one results.json per run, experiments.py kept a copy with its own keys at the run's root (and
    # tools/collect_runs.py still writes one there): that copy is the fuller one and is read first
    old = tmp_path / "old"
    (old / "logs").mkdir(parents=True)
    (old / "logs" / "results.json").write_text(json.dumps(dict(history=[{}], params=dict(epochs=1))))
    (old / "results.json").write_text(json.dumps(dict(history=[{}], params=dict(epochs=1), experiment="unet-focal")))
    assert runs.results_file(new.parent) == new / "results.json"
    assert runs.read_results(old)["experiment"] == "unet-focal"
    assert [(run.name, run.results["experiment"]) for run in runs.load_runs(tmp_path)] == [
        ("new", "unet-dice"), ("old", "unet-focal")]
    with pytest.raises(OSError):
        runs.read_results(tmp_path / "none")
