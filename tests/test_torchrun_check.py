"""tools/torchrun_check.py: a one-process torchrun run against the plain run, epoch by epoch and weight by weight."""

import json

import pytest
import torch

import runs
from tools import torchrun_check
from unet import UNet


def write_run(folder, history, weights):
    (folder / "logs").mkdir(parents=True)
    (folder / "logs" / "results.json").write_text(json.dumps(dict(history=history, best_epoch=len(history),
                                                                  params=dict(epochs=len(history)))))
    (folder / runs.WEIGHTS_FILE).parent.mkdir(parents=True)
    torch.save(dict(state_dict=weights), folder / runs.WEIGHTS_FILE)


def test_the_largest_difference_is_over_every_epochs_figures_and_every_weight(tmp_path):
    weights = UNet(init_features=4).state_dict()
    nudged = {key: value.clone() for key, value in weights.items()}
    nudged["encoder1.enc1conv1.weight"][0, 0, 0, 0] += 0.25
    history = [dict(epoch=1, loss=0.5, val_loss=0.6, val_dsc=0.1), dict(epoch=2, loss=0.4, val_loss=0.5, val_dsc=0.2)]
    write_run(tmp_path / "a", history, weights)
    write_run(tmp_path / "b", [history[0], dict(history[1], val_dsc=0.35)], weights)
    write_run(tmp_path / "c", history, nudged)
    lines, largest = torchrun_check.comparison(tmp_path / "a", tmp_path / "b")
    assert largest == pytest.approx(0.15)  # epoch 2's validation DSC, 0.2 against 0.35
    assert "| 2 | 0.400000 / 0.400000 | 0.500000 / 0.500000 | 0.200000 / 0.350000 |" in lines
    assert torchrun_check.comparison(tmp_path / "a", tmp_path / "c")[1] == pytest.approx(0.25)
    assert torchrun_check.comparison(tmp_path / "a", tmp_path / "a")[1] == 0


@pytest.mark.slow
def test_one_process_under_torchrun_trains_exactly_as_the_plain_run_on_a_cpu(tmp_path, capsys):
    out = tmp_path / "check.md"
    assert torchrun_check.main(["--epochs", "1", "--image-size", "32", "--init-features", "4", "--device", "cpu",
                                "--out", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("# One process under torchrun against the plain run")
    assert "equal: the largest difference 0 against a tolerance of 1e-06." in text
    assert "(processes recorded: 1)" in text
