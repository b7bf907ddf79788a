"""Data-parallel training on CPU with gloo, two processes: one step equals one process on the whole batch, a
torchrun run writes one run folder and resumes, and a rank that fails ends the run with its message."""

import contextlib
import json
import os
import subprocess

import pytest
import torch
import torch.multiprocessing as mp

import checkpoint
import safe_files
import distributed
import parameters
import train
from conftest import REPO
from loss import build_loss
from tools.torchrun_check import free_port, train_command
from unet import UNet

pytestmark = pytest.mark.slow


def batch():
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(16, 3, 32, 32, generator=generator)
    y = (torch.rand(16, 1, 32, 32, generator=generator) > 0.8).float()
    return x, y


def one_step(model, group, x, y):
    """train.optimizer_step on model (wrapped for the group); BCE: a mean over pixels, so the mean of two halves'
    gradients is the whole batch's. Batch norm in eval mode: its statistics aside, as SyncBatchNorm is GPU-only."""
    torch.set_num_threads(1)
    model.eval()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)  # linear in the gradient: its every part shows
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    train.optimizer_step(group.wrap(model), x, y, build_loss("bce"), optimizer, scaler, contextlib.nullcontext,
                         torch.contiguous_format)
    return model.state_dict()


def rank_main(rank, port, out):
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    with distributed.Group() as group:
        torch.manual_seed(0)
        model = UNet(init_features=4)
        x, y = batch()
        share = group.share(16)
        state = one_step(model, group, x[rank * share:(rank + 1) * share], y[rank * share:(rank + 1) * share])
        if group.is_main:
            torch.save(state, out)


def test_one_step_of_two_ranks_on_eight_slices_each_equals_one_process_on_the_sixteen(tmp_path):
    mp.spawn(rank_main, args=(free_port(), str(tmp_path / "ranks.pt")), nprocs=2, join=True)
    torch.manual_seed(0)
    model = UNet(init_features=4)
    single = one_step(model, distributed.Group({}), *batch())
    ranks = torch.load(tmp_path / "ranks.pt")
    assert any(not torch.equal(single[key], UNet(init_features=4).state_dict()[key]) for key in single)  # it moved
    for key, value in single.items():
        torch.testing.assert_close(ranks[key], value, rtol=0, atol=1e-5)


def torchrun(tmp_path, *params, environ=None):
    settings = dict(data_path=str(tmp_path / "phantom"), image_size=32, init_features=4, batch_size=4,
                    validation_cases=3, data_pipeline="device", runs_dir=str(tmp_path / "runs"), vis_images=0,
                    cache_dir=str(tmp_path / "cache"), keep_checkpoint=True)
    settings.update(params)
    command = train_command(["-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port", str(free_port())],
                            settings)
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, **(environ or {})))


def why(result):
    """A failed torchrun's story: the ranks' own output first (torchrun's summary at the end of stderr names only
    the signal a rank died of), then the end of stderr."""
    own = [line for line in (result.stdout + result.stderr).splitlines()
           if not line.startswith(("  ", "Traceback", "[W", "W1", "E1", "torch.distributed"))]
    return "\n".join(own[-40:]) + "\n--- end of stderr ---\n" + result.stderr[-1500:]


@pytest.fixture
def phantom(phantom_dir, tmp_path):
    (tmp_path / "phantom").symlink_to(phantom_dir)
    return tmp_path


def test_a_torchrun_run_writes_one_run_folder_and_resumes(phantom):
    first = torchrun(phantom, ("epochs", 1))
    assert first.returncode == 0, why(first)
    folders = list((phantom / "runs").iterdir())
    assert len(folders) == 1 and first.stdout.count("epoch 1/1:") == 1  # rank 0 alone writes and prints
    results = json.loads((folders[0] / "logs" / "results.json").read_text())
    assert results["processes"] == 2 and len(results["history"]) == 1
    # as if stopped after epoch 1 of 2: the same command with resume continues it, in the same folder
    path = folders[0] / "logs" / train.CHECKPOINT_NAME
    saved = checkpoint.load_training_checkpoint(path)
    saved["results"]["params"]["epochs"] = 2
    safe_files.save_atomic(saved, path)
    second = torchrun(phantom, ("epochs", 2), ("run_name", folders[0].name), ("resume", True))
    assert second.returncode == 0, why(second)
    assert list((phantom / "runs").iterdir()) == folders
    resumed = json.loads((folders[0] / "logs" / "results.json").read_text())
    assert resumed["resumed_after_epochs"] == [1] and [entry["epoch"] for entry in resumed["history"]] == [1, 2]


def planted(tmp_path, rank, code):
    """The environment of a torchrun whose rank runs code at start-up (a sitecustomize on the path), without
    touching the code under test: patch a module the training script imports, so that it uses the patch."""
    plant = tmp_path / "plant"
    plant.mkdir()
    lines = "".join(f"    {line}\n" for line in code)
    (plant / "sitecustomize.py").write_text(f"import os\nif os.environ.get('RANK') == '{rank}':\n{lines}")
    return dict(PYTHONPATH=f"{plant}:{REPO}")


def test_a_rank_that_fails_ends_the_run_with_its_message(phantom):
    # rank 1 fails in its first epoch
    finished = torchrun(phantom, ("epochs", 1), environ=planted(phantom, 1, [
        "import batches", "def planted(self, epoch=0):", "    raise RuntimeError('planted failure in the first epoch')",
        "batches.Batches.train = planted"]))
    assert finished.returncode != 0
    assert "rank 1 of 2 failed: RuntimeError: planted failure in the first epoch" in finished.stderr


def test_early_stopping_ends_every_rank_after_the_same_epoch(phantom):
    # rank 0's validation DSC planted: better at epoch 1 than at 2, so early_stopping=1 ends the run after epoch 2;
    # rank 1, which validates nothing, must stop there too, not wait in epoch 3's gradients for a rank that left
    finished = torchrun(phantom, ("epochs", 3), ("early_stopping", 1), environ=planted(phantom, 0, [
        "import evaluation", "scores = iter([[0.5] * 3, [0.4] * 3, [0.9] * 3])",
        "evaluation.grid_dsc = lambda *args, **kwargs: next(scores)"]))
    assert finished.returncode == 0, why(finished)
    assert "the run ends after epoch 2 of 3" in finished.stdout
    [folder] = list((phantom / "runs").iterdir())
    results = json.loads((folder / "logs" / "results.json").read_text())
    assert [entry["epoch"] for entry in results["history"]] == [1, 2] and results["best_epoch"] == 1


def test_a_batch_the_processes_cannot_share_is_refused_by_name():
    group = distributed.Group(dict(RANK="0", WORLD_SIZE="3", LOCAL_RANK="0"))
    assert group.share(12) == 4 and group.seed(42) == 42  # rank 0 keeps the plain seed
    with pytest.raises(Exception, match="batch_size=16: use a multiple of the 3 processes"):
        group.share(16)
    assert distributed.Group(dict(RANK="2", WORLD_SIZE="3")).seed(42) == 42 + 2 * distributed.RANK_SEED_STRIDE


def test_sync_batchnorm_is_refused_on_cpus_by_name():
    # in one process: a rank's error reaching torchrun's output is the failing-rank test's
    group = distributed.Group(dict(RANK="0", WORLD_SIZE="2", LOCAL_RANK="0"))
    with pytest.raises(parameters.ParameterError, match="sync_batchnorm=True: SyncBatchNorm runs on GPUs only"):
        group.wrap(UNet(init_features=4), sync_batchnorm=True)


def test_the_ranks_meet_before_the_group_is_torn_down_and_a_failing_or_stopped_rank_does_not_wait(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(distributed.dist, "barrier", lambda: calls.append("barrier"))
    monkeypatch.setattr(distributed.dist, "destroy_process_group", lambda: calls.append("destroy"))
    group = distributed.Group(dict(RANK="1", WORLD_SIZE="2"))
    group.__exit__(None, None, None)
    assert calls == ["barrier", "destroy"]  # a rank that finished first waits for the others, then tears down
    calls.clear()
    group.__exit__(RuntimeError, RuntimeError("out of memory"), None)
    assert calls == []  # a failing rank would wait forever for the others: it names itself and leaves
    assert "rank 1 of 2 failed: RuntimeError: out of memory" in capsys.readouterr().err
    group.__exit__(KeyboardInterrupt, KeyboardInterrupt(), None)
    assert calls == ["destroy"]  # stopped by hand: torn down without waiting for ranks that may never come
