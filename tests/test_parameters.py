"""One definition per setting: the notebooks and the README are held to parameters.py, unknown names are
errors, and impossible values are refused before any data is read."""

import json
import shutil

import pytest
import torch

import inference
import parameters
import train
from conftest import REPO


def test_notebooks_and_readme_are_written_from_the_one_definition(tmp_path):
    for name in ("train.ipynb", "inference.ipynb", "README.md"):
        shutil.copy(REPO / name, tmp_path / name)
    assert parameters.sync(tmp_path) == [], "run: python parameters.py"
    # and a drift is caught: a default changed in the notebook by hand
    notebook = json.loads((tmp_path / "train.ipynb").read_text())
    cell = parameters.parameters_cell(notebook)
    cell["source"] = [line.replace("epochs = 100 ", "epochs = 50  ") for line in cell["source"]]
    (tmp_path / "train.ipynb").write_text(json.dumps(notebook))
    assert parameters.sync(tmp_path) == ["train.ipynb"]


def test_the_parameters_cells_hold_exactly_the_module_defaults():
    for name, defaults in (("train.ipynb", dict(train.DEFAULTS, synthetic_demo=True)),
                           ("inference.ipynb", inference.DEFAULTS)):
        cell = parameters.parameters_cell(json.loads((REPO / name).read_text()))
        namespace = {}
        exec("".join(cell["source"]), namespace)
        del namespace["__builtins__"]
        assert namespace == defaults, name


def test_readme_tables_list_every_parameter_with_its_default():
    readme = (REPO / "README.md").read_text()
    for name, defaults in (("train.ipynb", train.DEFAULTS), ("inference.ipynb", inference.DEFAULTS)):
        block = parameters.readme_block(name).search(readme)[2]
        rows = [line.split(" | ")[:2] for line in block.splitlines()[2:]]
        listed = {row[0].strip("| `"): row[1].strip("`") for row in rows}
        assert set(defaults) <= set(listed) and set(listed) - set(defaults) <= {"synthetic_demo"}, name
        assert all(listed[key] == repr(value) for key, value in defaults.items()), name


def test_a_parameter_papermill_injects_that_the_notebook_lacks_is_an_error():
    executed = ["import os", "# Parameters (papermill can override)\nepochs = 100\n",
                "# Parameters\nepochs = 3\nepoch_count = 5\n"]
    namespace = dict(train.DEFAULTS, synthetic_demo=True, In=executed, epochs=3, epoch_count=5)
    with pytest.raises(TypeError, match="unknown notebook parameter.*epoch_count"):
        parameters.from_notebook(namespace, parameters.TRAIN_NOTEBOOK)
    namespace["In"] = executed[:2] + ["# Parameters\nepochs = 3\n"]
    assert parameters.from_notebook(namespace, parameters.TRAIN_NOTEBOOK)["epochs"] == 3


def test_unknown_names_are_errors_in_train_and_inference():
    with pytest.raises(TypeError, match="unknown parameter.*epoch_count"):
        train.train(epoch_count=3)
    with pytest.raises(TypeError, match="unknown parameter.*treshold"):
        inference.run(treshold=0.4)


@pytest.mark.parametrize("name, value, message", [
    ("image_size", 100, "image_size=100: use a positive multiple of 16"),
    ("image_size", 0, "image_size=0: use a positive multiple of 16"),
    ("batch_size", 0, "batch_size=0: use 1 or more"),
    ("validation_cases", 0, r"validation_cases=0: use a number of cases.*a fraction between 0 and 1"),
    ("validation_cases", 1.5, r"validation_cases=1.5: use a number of cases"),
    ("dataset", "dicom", r"dataset='dicom': use one of .*kaggle_3m"),
    ("vis_freq", 0, r"vis_freq=0: use 1 or more \(overlays every vis_freq epochs\)"),
    ("lr", 0, "lr=0: use a positive rate"),
    ("lr", -1e-3, "lr=-0.001: use a positive rate"),
    ("workers", -1, r"workers=-1: use 0 \(load in this process\) or more"),
    ("init_features", 0, "init_features=0: use 1 or more"),
    ("device", "gpu", "device='gpu': use \"auto\", \"cpu\", \"cuda\""),
    ("epochs", 0, "epochs=0: use 1 or more"),
    ("folds", 1, "folds=1: use 0 .the reference split. or 2 or more"),
    ("model", "unet3+", "model='unet3\\+': use one of unet, attention_unet"),
    ("loss", "dise", "loss='dise': use one of dice"),
    ("threads", 100_000, r"threads=100000: use 1 \.\. \d+ \(the CPU cores of this machine\), or \"auto\""),
    ("run_name", "../escape", r"run_name='../escape': use a plain folder name"),
    ("run_name", "..", r"run_name='..': use a plain folder name"),
    ("run_name", "/tmp/abs", r"run_name='/tmp/abs': use a plain folder name"),
    ("run_name", "", r"run_name='': use a plain folder name"),
    pytest.param("device", "mps", r"device='mps': no Apple GPU \(mps\) on this machine; use \"auto\" or \"cpu\"",
                 marks=pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has an Apple GPU")),
    ("seed", None, "seed=None: use a whole number from 0 to 2\\*\\*32 - 1"),
    ("training_seed", -1, r"training_seed=-1: use a whole number from 0 to 2\*\*32 - 1 \(None: seed\)"),
    ("training_seed", 1.5, "training_seed=1.5: use a whole number"),
    ("intensity_augmentation", "yes", "intensity_augmentation='yes': use True or False"),
])
def test_impossible_training_parameters_are_refused_before_any_data_is_read(name, value, message, tmp_path):
    # a data folder that does not exist: the refusal must come before it is looked at
    with pytest.raises(parameters.ParameterError, match=message):
        train.train(data_path=str(tmp_path / "not-read"), **{name: value})


def test_validation_cases_that_leave_no_training_patient_are_refused_before_an_epoch(phantom_dir, tmp_path):
    import dataset

    with pytest.raises(dataset.DataError, match="validation_cases=8.*only 8 patients.*none to train"):
        train.train(data_path=str(phantom_dir), validation_cases=8, image_size=32, cache_dir=str(tmp_path))


@pytest.mark.parametrize("name, value, message", [
    ("patients", "TCGA_SY_0001_20000101", "patients='TCGA_SY_0001_20000101': give a list of patient folder names"),
    ("patients", [], "patients=\\[\\]: give at least one patient"),
    ("image_size", 20, "image_size=20: use None .the weights' own size. or a positive multiple of 16"),
    ("device", "tpu", "device='tpu'"),
    ("batch_size", 0, "batch_size=0"),
])
def test_impossible_inference_parameters_are_refused_before_the_weights_are_read(name, value, message, tmp_path):
    with pytest.raises(parameters.ParameterError, match=message):
        inference.run(weights=str(tmp_path / "not-read.pt"), **{name: value})


def test_the_settings_a_run_may_resume_with_changed_are_settings_and_none_changes_what_it_computes():
    assert parameters.RESUMABLE <= set(parameters.TRAIN)
    # what trains (the model, loss, optimiser, data, seeds, sizes) is never among them
    assert not parameters.RESUMABLE & {"model", "loss", "optimizer", "lr", "image_size", "epochs", "seed",
                                       "training_seed", "folds", "fold", "amp", "ema_decay", "context_slices"}
