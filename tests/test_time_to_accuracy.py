"""benchmarks/time_to_accuracy.py: when each recipe first reaches a DSC, and how much sooner than the baseline."""

from benchmarks import time_to_accuracy


def history(values, seconds_per_epoch, pixels_per_epoch):
    return [dict(epoch=e + 1, val_dsc_native=v, train_seconds=seconds_per_epoch * (e + 1),
                 pixels=pixels_per_epoch * (e + 1), load_average=1.0) for e, v in enumerate(values)]


def test_the_first_epoch_at_the_target_and_the_ratios_to_the_baseline():
    runs = {"reference": dict(commit="abc", history=history([0.70, 0.84, 0.86, 0.89], 60.0, 1e9)),
            "fast": dict(commit="abc", history=history([0.86, 0.89, 0.91], 30.0, 5e8))}
    assert time_to_accuracy.reach(runs["reference"]["history"], 0.85) == (3, 180.0, 3e9)
    assert time_to_accuracy.reach(runs["reference"]["history"], 0.90) is None
    lines = time_to_accuracy.table(runs, [0.85, 0.90])
    assert lines == [
        "reference: best DSC at 256x256 0.8900; 4 epochs in 4.0 min; commit abc, mean load 1.0",
        "  0.85: epoch 3, 3.0 min, 3.00 Gpx",
        "  0.90: not reached in 4 epochs",
        "fast: best DSC at 256x256 0.9100; 3 epochs in 1.5 min; commit abc, mean load 1.0",
        "  0.85: epoch 1, 0.5 min, 0.50 Gpx; 6.0x sooner, 6.0x fewer pixels than reference",
        "  0.90: epoch 3, 1.5 min, 1.50 Gpx; reference did not reach it",
    ]
