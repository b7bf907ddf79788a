"""The epoch's end in the background: order, errors, snapshots, and the training loop's use of it."""

import threading
from collections import OrderedDict

import pytest
import torch

import checkpoint
import safe_files
import train
from background import BackgroundWork


def test_tasks_run_in_order_without_holding_up_the_caller():
    release, done = threading.Event(), []
    work = BackgroundWork(max_pending=3)
    work.submit(release.wait, 10)
    work.submit(done.append, 1)
    work.submit(done.append, 2)
    assert done == []  # submit returned while the first task is still blocked
    release.set()
    work.close()
    assert done == [1, 2]


def test_a_caller_ahead_by_max_pending_tasks_waits_for_the_oldest():
    release, finished = threading.Event(), []
    work = BackgroundWork(max_pending=2)
    work.submit(lambda: (release.wait(10), finished.append("first")))
    work.submit(finished.append, "second")
    threading.Timer(0.3, release.set).start()
    work.submit(finished.append, "third")  # two wait already: this one waits until the first has run
    assert finished[:1] == ["first"]
    work.close()
    assert finished == ["first", "second", "third"]


def test_an_error_in_a_task_is_raised_at_the_next_submit_or_at_close():
    def fail():
        raise OSError("disk full")

    work = BackgroundWork()
    work.submit(fail)
    work.pending[0].exception()  # wait until it has failed
    with pytest.raises(OSError, match="disk full"):
        work.submit(print, "never")
    work.close()

    work = BackgroundWork()
    work.submit(fail)
    with pytest.raises(OSError, match="disk full"):
        work.close()


def test_disabled_runs_each_task_at_once():
    done = []
    work = BackgroundWork(enabled=False)
    work.submit(done.append, 1)
    assert done == [1]
    work.close()


def test_leaving_on_an_error_still_finishes_the_queued_tasks():
    done = []
    with pytest.raises(KeyError):
        with BackgroundWork() as work:
            work.submit(done.append, "checkpoint of the last good epoch")
            raise KeyError("the loop's own error")
    assert done == ["checkpoint of the last good epoch"]


def test_to_cpu_copies_so_that_later_in_place_changes_do_not_reach_the_snapshot():
    model = torch.nn.BatchNorm1d(2)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.randn(4, 2)).sum().backward()
    optimizer.step()
    snapshot = checkpoint.to_cpu(dict(model=model.state_dict(), optimizer=optimizer.state_dict(), epoch=3,
                                      nested=[(torch.ones(1),)]))
    before = snapshot["model"]["weight"].clone()
    exp_avg = snapshot["optimizer"]["state"][0]["exp_avg"].clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    model(torch.randn(4, 2)).sum().backward()
    optimizer.step()
    assert torch.equal(snapshot["model"]["weight"], before)
    assert torch.equal(snapshot["optimizer"]["state"][0]["exp_avg"], exp_avg)
    assert isinstance(snapshot["model"], OrderedDict) and snapshot["model"]._metadata == model.state_dict()._metadata
    assert snapshot["epoch"] == 3 and torch.equal(snapshot["nested"][0][0], torch.ones(1))
    torch.nn.BatchNorm1d(2).load_state_dict(snapshot["model"], strict=True)


def test_training_writes_its_files_outside_the_training_thread(phantom_dir, tmp_path, monkeypatch):
    writers = []
    original = safe_files.save_atomic

    def recording(obj, path):
        writers.append((path.name, threading.current_thread().name))
        original(obj, path)

    monkeypatch.setattr(safe_files, "save_atomic", recording)  # the checkpoint's writer
    monkeypatch.setattr(checkpoint, "save_atomic", recording)  # the weights' writer (checkpoint.save_weights)
    results = train.train(data_path=phantom_dir, epochs=2, image_size=32, init_features=4, batch_size=4, workers=0,
                          validation_cases=3, vis_images=4, vis_freq=1, logs_dir=tmp_path / "logs",
                          weights_dir=tmp_path / "w", cache_dir=tmp_path / "c", keep_checkpoint=True)
    names = [name for name, _ in writers]
    assert names.count("checkpoint.pt") == 2 and "unet.pt" in names
    assert all(thread.startswith("epoch-end") for _, thread in writers)
    # all of it finished before train() returned
    assert [entry["epoch"] for entry in results["history"]] == [1, 2]
    saved = checkpoint.load_training_checkpoint(tmp_path / "logs" / "checkpoint.pt")
    assert saved["epoch"] == 1 and len(saved["results"]["history"]) == 2
