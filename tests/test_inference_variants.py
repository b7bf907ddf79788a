"""tools/inference_variants.py: flip TTA and ensembles scored as inference scores, hand-computed."""

import json

import numpy as np
import pytest

import inference
from tools import inference_variants


def volume(*regions):
    """A (1, 4, 4) probability volume: each region (row, first column, last column + 1, probability)."""
    probabilities = np.zeros((1, 4, 4))
    for row, start, stop, value in regions:
        probabilities[0, row, start:stop] = value
    return probabilities


TRUTH = volume((0, 0, 2, 1)) > 0  # 2 voxels
PREDICTIONS = {  # (run, tta): probabilities of patient a
    ("r1", False): volume((0, 0, 2, 0.9), (3, 3, 4, 0.9)),  # the truth, and a 1-voxel blob the component drops
    ("r1", True): volume((0, 0, 4, 0.9)),  # 4 voxels over 2 true: DSC 2 * 2 / (4 + 2)
    ("r2", False): volume((0, 0, 2, 0.2), (3, 0, 3, 0.9)),  # misses: DSC 0
    ("r2", True): volume((0, 0, 2, 0.2), (3, 0, 3, 0.9)),
}


def make_runs(tmp_path, patients_of):
    folders = []
    for name, patients in patients_of.items():
        folder = tmp_path / name
        folder.mkdir(parents=True)
        seed = 1 if "seed-1" in folder.parts else None  # a runs folder of the second training seed
        results = dict(validation_patients=patients, params=dict(seed=42, training_seed=seed))
        (folder / "results.json").write_text(json.dumps(results))
        folders.append(folder)
    return folders


def stand_in(folder, cache_dir, device, tta):
    yield "a", PREDICTIONS[(folder.name, tta)], TRUTH


def test_each_run_with_and_without_tta_and_their_ensemble_hand_computed(tmp_path):
    folders = make_runs(tmp_path, dict(r1=["a"], r2=["a"]))
    scores = inference_variants.score_variants(folders, ensemble=True, predict=stand_in)
    expected = {
        "r1": 1.0,  # the blob is not the largest component
        "r1 + flip TTA": 2 / 3,
        "r2": 0.0,
        "r2 + flip TTA": 0.0,
        "ensemble of 2": 1.0,  # (0.9 + 0.2) / 2 = 0.55 on the truth, 0.45 on r2's false row
        "ensemble of 2 + flip TTA": 1.0,  # 0.55 on the truth, 0.45 beside it and on the false row
    }
    assert {variant: per_patient["a"] for variant, per_patient in scores.items()} == pytest.approx(expected)
    lines = inference_variants.table(scores, "r1")
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in lines[2:]}
    assert rows["r1 + flip TTA"][4:8] == ["0", "r1", "-0.3333", "-0.3333 to -0.3333"]
    assert rows["r2"][4] == "1"  # below 0.5
    assert [line.split(" | ")[5:7] for line in lines if line.startswith("| ensemble of 2 |")] == \
        [["r1", "+0.0000"], ["r2", "+1.0000"]] and rows["r1"][5] == ""


def test_other_thresholds_are_scored_against_the_same_variant_at_one_half(tmp_path):
    folders = make_runs(tmp_path, dict(r1=["a"], r2=["a"]))
    scores = inference_variants.score_variants(folders, ensemble=True, predict=stand_in, thresholds=(0.15, 0.5))
    assert len(scores) == 12  # six variants, at 0.5 and at 0.15
    # at 0.15 the ensemble keeps row 3 (0.45 x 3 and r1's blob beside it: 4 voxels) over the truth (2 voxels)
    expected = {"r1 @ 0.15": 1.0, "r2 @ 0.15": 0.0, "ensemble of 2 @ 0.15": 0.0, "ensemble of 2": 1.0}
    assert {variant: scores[variant]["a"] for variant in expected} == pytest.approx(expected)
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in inference_variants.table(scores, "r1")[2:]}
    assert rows["ensemble of 2 @ 0.15"][5:7] == ["ensemble of 2", "-1.0000"]
    assert rows["r1 + flip TTA @ 0.15"][5] == "r1 + flip TTA"


def test_the_folds_of_an_experiment_pool_into_one_row(tmp_path):
    def per_fold(folder, cache_dir, device, tta):
        patient = dict(zip(("fold-0", "fold-1", "modern"), "abc"))[folder.name]
        yield patient, PREDICTIONS[("r2" if folder.name == "modern" else "r1", tta)], TRUTH

    folders = make_runs(tmp_path, {"modern/fold-0": ["a"], "modern/fold-1": ["b"]})
    scores = inference_variants.score_variants(folders, predict=per_fold)
    assert sorted(scores) == ["modern (folds)", "modern (folds) + flip TTA"]
    assert scores["modern (folds)"] == {"a": 1.0, "b": 1.0}
    # the same experiment's run on the split is a row of its own, not pooled with its folds
    split = make_runs(tmp_path / "split", {"modern": ["c"]})
    scores = inference_variants.score_variants(folders + split, predict=per_fold)
    assert scores["modern"] == {"c": 0.0} and scores["modern (folds)"] == {"a": 1.0, "b": 1.0}


def test_two_recipes_5_folds_ensemble_fold_by_fold_and_pool_into_one_row(tmp_path):
    def per_fold(folder, cache_dir, device, tta):
        patient = dict(zip(("fold-0", "fold-1"), "ab"))[folder.name]
        yield patient, PREDICTIONS[(folder.parent.name, tta)], TRUTH

    folders = make_runs(tmp_path, {"r1/fold-0": ["a"], "r1/fold-1": ["b"], "r2/fold-0": ["a"], "r2/fold-1": ["b"]})
    scores = inference_variants.score_variants(folders, ensemble=True, predict=per_fold)
    assert scores["r1 (folds)"] == {"a": 1.0, "b": 1.0} and scores["r2 (folds)"] == {"a": 0.0, "b": 0.0}
    # each patient's ensemble is the mean of its fold's two runs (0.55 on the truth, as above); over all four
    # runs it would be 0.275, below the threshold: DSC 0
    assert scores["ensemble of 2"] == pytest.approx({"a": 1.0, "b": 1.0})
    lines = inference_variants.table(scores, "r1 (folds)")
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in lines[2:]}
    assert rows["ensemble of 2"][1] == "2" and rows["ensemble of 2"][5] == "r2 (folds)"  # the last line of it
    against = [line.split(" | ")[5:7] for line in lines if line.startswith("| ensemble of 2 |")]
    assert against == [["r1 (folds)", "+0.0000"], ["r2 (folds)", "+1.0000"]]  # against each member, first first
    assert len([line for line in lines if line.startswith("| ensemble of 2 + flip TTA |")]) == 1


def test_a_recipe_at_another_training_seed_is_a_row_of_its_own_and_the_same_run_twice_is_refused(tmp_path):
    def per_seed(folder, cache_dir, device, tta):
        yield "a", PREDICTIONS[("r2" if "seed-1" in folder.parts else "r1", tta)], TRUTH

    folders = [*make_runs(tmp_path / "seed-42", {"fast/fold-0": ["a"]}),
               *make_runs(tmp_path / "seed-1", {"fast/fold-0": ["a"]})]
    scores = inference_variants.score_variants(folders, ensemble=True, predict=per_seed)
    assert scores["fast (folds)"] == {"a": 1.0} and scores["fast (folds, training seed 1)"] == {"a": 0.0}
    assert scores["ensemble of 2"] == pytest.approx({"a": 1.0})
    # without TTA: the same rows less their flipped twins, and no flipped prediction asked for
    asked = []
    without = inference_variants.score_variants(
        folders, ensemble=True, tta=False,
        predict=lambda folder, cache_dir, device, tta: asked.append(tta) or per_seed(folder, cache_dir, device, tta))
    assert without == {variant: per_patient for variant, per_patient in scores.items() if "TTA" not in variant}
    assert asked == [False, False]
    with pytest.raises(ValueError, match="fast/fold-0: fast \\(folds\\) scores its patients already"):
        inference_variants.score_variants(folders[:1] * 2, predict=per_seed)


@pytest.mark.parametrize("patients_of, words", [
    (dict(r1=["a", "b"], r2=["b", "c"]), "r2:.*validation patients differ.*r1.*share b"),
    (dict(r1=["a"], r2=["b"]), "r1: no other run on its validation patients"),
    ({"f0/r1": ["a"], "f0/r2": ["a"], "f1/r1": ["b"]}, "r1: 1 run.*but 2 on those of .*f0"),
])
def test_an_ensemble_of_runs_on_other_patients_is_refused(tmp_path, capsys, patients_of, words):
    folders = make_runs(tmp_path, patients_of)
    with pytest.raises(ValueError, match=words):
        inference_variants.score_variants(folders, ensemble=True, predict=stand_in)
    with pytest.raises(SystemExit) as exit:
        inference_variants.main([str(folder) for folder in folders] + ["--ensemble"])
    assert exit.value.code == 2 and "ensemble" in capsys.readouterr().err


def test_plain_and_tta_score_what_inference_scores(phantom_dir, blob_run, tmp_path):
    folder, patients = blob_run
    scores = inference_variants.score_variants([folder])
    for tta, variant in ((False, "run"), (True, "run + flip TTA")):
        scored = inference.run(weights=folder / "weights" / "unet.pt", data_path=phantom_dir, patients=patients,
                               cache_dir=None, predictions_dir=tmp_path / f"p{tta}", workers=0, write_masks=False,
                               fuse=False, tta=tta)
        assert list(scores[variant].values()) == pytest.approx([row["dsc"] for row in scored["metrics"]], abs=1e-9)
    assert scores["run"] != scores["run + flip TTA"]


def test_the_results_file_names_its_command_runs_and_failed_patients_and_keeps_its_analysis(tmp_path, monkeypatch):
    import results_files
    import runtime

    monkeypatch.setattr(runtime, "git_commit", lambda: "abc1234")
    folders = make_runs(tmp_path, dict(r1=["a"], r2=["a"]))
    for folder in folders:  # what a run's results.json holds beyond its patients
        results = json.loads((folder / "results.json").read_text())
        results.update(commit="c0ffee0", device="cpu (2 cores)", split="5-fold, fold 0, seed 42", history=[{}] * 3,
                       train_seconds=60, wall_seconds=61, data_dir="kaggle_3m")
        results["params"].update(image_size=64, batch_size=16)
        (folder / "results.json").write_text(json.dumps(results))
    scores = inference_variants.score_variants(folders, ensemble=True, predict=stand_in)
    out = tmp_path / "variants.md"
    argv = [str(folder) for folder in folders] + ["--ensemble"]
    inference_variants.write_results(out, scores, inference_variants.table(scores, "r1"), folders, argv)
    text = out.read_text()
    assert f"`python -m tools.inference_variants {folders[0]} {folders[1]} --ensemble` at commit abc1234" in text
    assert "- r2: commit c0ffee0, cpu (2 cores), split: 5-fold, fold 0, seed 42, training seed 42, 3 epochs" in text
    assert "- r2: a\n" in text and "- r1: none\n" in text and "- ensemble of 2: none\n" in text
    out.write_text(text.replace(results_files.DEFAULT_ANALYSIS, "The ensemble keeps r1's score, by hand."))
    inference_variants.write_results(out, scores, inference_variants.table(scores, "r1"), folders, argv)
    assert "The ensemble keeps r1's score, by hand." in out.read_text()
