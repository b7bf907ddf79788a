"""Early stopping (the UNet++ tutorial's 2019 rule): when a run ends, and that every reader of a run agrees."""

import threading

import pytest

import evaluation
import parameters
import runs
import train
from background import BackgroundWork

TINY = dict(image_size=32, init_features=4, batch_size=4, workers=0, validation_cases=3, lr=1e-3, vis_images=0,
            threads=1)


def results_of(scores, epochs, patience, progressive_epochs=0):
    """results.json's fields as evaluation.EpochEnd keeps them: the best is the first epoch at image_size (after
    progressive_epochs) with a higher validation DSC than every epoch before it."""
    best, best_epoch = 0.0, None
    for epoch, score in enumerate(scores, start=1):
        if epoch > progressive_epochs and score > best:
            best, best_epoch = score, epoch
    return dict(params=dict(epochs=epochs, early_stopping=patience, progressive_epochs=progressive_epochs),
                history=[dict(epoch=epoch) for epoch in range(1, len(scores) + 1)], best_epoch=best_epoch,
                best_val_dsc=best)


@pytest.mark.parametrize("scores, patience, progressive_epochs, ended", [
    ([0.5, 0.7, 0.6], 2, 0, False),         # one epoch since the best (epoch 2)
    ([0.5, 0.7, 0.6, 0.65], 2, 0, True),    # two: the tutorial's trigger reaches early_stop
    ([0.5, 0.7, 0.6, 0.7], 2, 0, True),     # equal is not better (the tutorial's ">")
    ([0.5, 0.7, 0.6, 0.8], 2, 0, False),    # a better one starts the count again
    ([0.5, 0.7, 0.6, 0.65], None, 0, False),  # off: every epoch
    ([0.9, 0.2, 0.3], 2, 2, False),         # the 0.9 was at the progressive size: counted from epoch 2, one since
    ([0.9, 0.2, 0.1, 0.05, 0.1], 2, 2, True),  # best epoch 3 at image_size, then two without a better one
    ([0.0, 0.0, 0.0], 3, 0, True),          # nothing found in three epochs: none better than 0
])
def test_a_run_ends_after_patience_epochs_at_image_size_without_a_better_validation_dsc(
        scores, patience, progressive_epochs, ended):
    results = results_of(scores, 100, patience, progressive_epochs)
    assert runs.stopped_early(results) is ended
    assert runs.finished(results) is ended
    assert runs.describe_epochs(results) == f"{len(scores)} of 100, " + ("stopped early" if ended else "unfinished")


@pytest.mark.parametrize("scores", [[0.5, 0.7, 0.8], [0.8, 0.7, 0.6]])
def test_a_run_that_trained_every_epoch_is_finished_and_not_stopped_early(scores):
    results = results_of(scores, 3, 1)  # the second meets the rule too: finished by its epochs, not stopped early
    assert runs.finished(results) and not runs.stopped_early(results)
    assert runs.describe_epochs(results) == "3 of 3"
    assert not runs.finished(results, epochs=4)  # experiments.py asking for more epochs than the run had


@pytest.mark.parametrize("value", [0, -1, 2.5, True, "20"])
def test_early_stopping_other_than_none_or_a_positive_count_is_refused_before_any_work(value):
    with pytest.raises(parameters.ParameterError, match="early_stopping.*use None .every epoch. or 1 or more"):
        train.train(early_stopping=value)


def test_wait_returns_once_every_task_so_far_has_run_and_raises_their_error():
    release, done = threading.Event(), []
    work = BackgroundWork(max_pending=3)
    work.submit(release.wait, 10)
    work.submit(done.append, 1)
    threading.Timer(0.2, release.set).start()
    work.wait()
    assert done == [1]
    work.submit(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        work.wait()
    work.submit(done.append, 2)  # still open after wait
    work.close()
    assert done == [1, 2]


def test_a_run_stops_early_keeps_its_best_weights_and_every_reader_takes_it_as_finished(
        phantom_dir, tmp_path, monkeypatch, capsys):
    # the validation DSC of epochs 1-4 (three patients each), then a better one that a run not stopped would reach
    scores = iter([[0.5] * 3, [0.7] * 3, [0.6] * 3, [0.65] * 3] + [[0.9] * 3] * 4)
    monkeypatch.setattr(evaluation, "grid_dsc", lambda *args, **kwargs: next(scores))
    folder = tmp_path / "run"
    settings = dict(TINY, data_path=str(phantom_dir), cache_dir=str(tmp_path / "cache"), epochs=8, early_stopping=2,
                    runs_dir=str(tmp_path), run_name="run")
    results = train.train(**settings)
    out = capsys.readouterr().out
    assert "early stopping: 2 epochs without a better validation DSC than epoch 2's 0.7000; the run ends after " \
           "epoch 4 of 8" in out
    assert [entry["epoch"] for entry in results["history"]] == [1, 2, 3, 4]
    assert results["best_epoch"] == 2 and results["best_val_dsc"] == pytest.approx(0.7)
    # finished: its checkpoint goes as a full run's does, and the run folder reads as finished everywhere
    assert "early stopping ended the run: " in out and not (folder / "logs" / train.CHECKPOINT_NAME).exists()
    assert (folder / "weights" / "unet.pt").exists()
    run = runs.run_at(folder)
    assert run.finished and run.stopped_early and runs.describe_epochs(run.results) == "4 of 8, stopped early"
    # resuming it trains nothing more
    again = train.train(**settings, resume=True)
    assert "early stopping ended it after 4 of 8 epochs; nothing to resume" in capsys.readouterr().out
    assert len(again["history"]) == 4


def test_a_run_stopped_at_the_stopping_epoch_resumes_into_the_decision_not_another_epoch(
        phantom_dir, tmp_path, monkeypatch, capsys):
    """A run killed after the epoch that meets the rule, before the next epoch began, keeps its checkpoint; the
    resumed run decides from the restored history and ends without training."""
    scores = iter([[0.5] * 3, [0.4] * 3, [0.3] * 3])
    monkeypatch.setattr(evaluation, "grid_dsc", lambda *args, **kwargs: next(scores))
    settings = dict(TINY, data_path=str(phantom_dir), cache_dir=str(tmp_path / "cache"), runs_dir=str(tmp_path),
                    run_name="run", keep_checkpoint=True)
    # three epochs of a six-epoch run without early stopping, stopped there (epochs=3 and keep_checkpoint leave the
    # checkpoint of epoch 3, as a kill would)
    train.train(**settings, epochs=3)
    assert (tmp_path / "run" / "logs" / train.CHECKPOINT_NAME).exists()
    capsys.readouterr()
    monkeypatch.setattr(parameters, "RESUMABLE", parameters.RESUMABLE | {"epochs", "early_stopping"})
    results = train.train(**settings, epochs=6, early_stopping=2, resume=True)
    out = capsys.readouterr().out
    assert "resuming after epoch 3 of 6" in out and "the run ends after epoch 3 of 6" in out
    assert len(results["history"]) == 3 and results["best_epoch"] == 1
