"""tools/postprocessing.py: each rule keeps the components it says, and the reference's rule scores as inference."""

import numpy as np
import pytest

import inference
from tools import postprocessing


def test_each_rule_keeps_the_components_it_names():
    probs = np.zeros((3, 6, 6))
    probs[0, 0:2, 0:4] = 0.6  # A: 8 voxels, mass 4.8, peak 0.6
    probs[2, 0, 0:5] = 0.99  # B: 5 voxels, mass 4.95, peak 0.99
    probs[2, 5, 5] = 0.7  # C: 1 voxel
    a, b, c = (probs == 0.6), (probs == 0.99), (probs == 0.7)
    masks = postprocessing.apply_rules(probs)
    expected = {"none": a | b | c, "largest (reference)": a, "largest mass": b, "peak > 0.95": b,
                ">= 10% of largest": a | b | c, ">= 50% of largest": a | b, "highest mean": b}  # B's 0.99 > C's 0.7
    assert sorted(masks) == sorted(expected)
    for rule, mask in expected.items():
        assert np.array_equal(masks[rule], mask), rule
    assert all(not mask.any() for mask in postprocessing.apply_rules(np.full((2, 3, 3), 0.5)).values())


def test_the_reference_rule_scores_what_inference_scores(phantom_dir, blob_run, tmp_path):
    folder, patients = blob_run
    scores = postprocessing.score_run(folder)
    scored = inference.run(weights=folder / "weights" / "unet.pt", data_path=phantom_dir, patients=patients,
                           cache_dir=None, predictions_dir=tmp_path / "p", workers=0, write_masks=False, fuse=False)
    assert scores["largest (reference)"] == pytest.approx({row["patient"]: row["dsc"] for row in scored["metrics"]},
                                                          abs=1e-9)
    assert scores["none"] == pytest.approx({row["patient"]: row["dsc_without_lcc"] for row in scored["metrics"]},
                                           abs=1e-9)
    assert all(row["components"] > 1 for row in scored["metrics"]) and scores["none"] != scores["largest (reference)"]


def test_the_rule_is_chosen_on_the_other_folds_and_applied_to_each():
    rules = {rule: 0.5 for rule in postprocessing.RULES}
    # fold 0's patients favour "none", fold 1's "highest mean", fold 2's nothing (every rule 0.5)
    per_fold = {
        0: {rule: {"a": 0.9 if rule == "none" else 0.5} for rule in rules},
        1: {rule: {"b": 0.8 if rule == "highest mean" else 0.5} for rule in rules},
        2: {rule: {"c": 0.5} for rule in rules},
    }
    chosen, pooled = postprocessing.choose_by_folds(per_fold)
    # fold 0 is judged on folds 1 and 2 ("highest mean" 0.65, the others 0.5), fold 1 on 0 and 2 ("none" 0.7),
    # fold 2 on 0 and 1 ("none" (0.9 + 0.5) / 2 = 0.70 against "highest mean" (0.5 + 0.8) / 2 = 0.65)
    assert chosen == {0: "highest mean", 1: "none", 2: "none"}
    assert pooled == {"a": 0.5, "b": 0.5, "c": 0.5}  # each fold scored under the rule its others chose
    ties = {fold: {rule: {f"p{fold}": 0.5} for rule in rules} for fold in (0, 1)}
    assert set(postprocessing.choose_by_folds(ties)[0].values()) == {postprocessing.REFERENCE_RULE}


def test_the_folds_results_file_names_its_command_runs_and_choice(tmp_path, monkeypatch):
    import json

    import results_files
    import runtime

    monkeypatch.setattr(runtime, "git_commit", lambda: "abc1234")
    recipe = tmp_path / "runs" / "context"
    for fold, patient in enumerate("ab"):
        folder = recipe / f"fold-{fold}"
        (folder / "weights").mkdir(parents=True)
        (folder / "weights" / "unet.pt").touch()  # a run that kept weights (score_run is stood in for below)
        (folder / "results.json").write_text(json.dumps(dict(
            commit="c0ffee0", device="cpu (2 cores)", split=f"5-fold, fold {fold}, seed 42", history=[{}] * 14,
            train_seconds=60, wall_seconds=61, data_dir="kaggle_3m", validation_patients=[patient],
            params=dict(seed=42, training_seed=None, image_size=128, batch_size=16, folds=2, fold=fold))))
    # each fold's patient scores 0.9 under "highest mean", 0 under the reference's rule, 0.5 under the others
    scores = {folder: {rule: {patient: dict(zip((postprocessing.REFERENCE_RULE, "highest mean"), (0.0, 0.9)))
                              .get(rule, 0.5)} for rule in postprocessing.RULES}
              for folder, patient in ((recipe / "fold-0", "a"), (recipe / "fold-1", "b"))}
    monkeypatch.setattr(postprocessing, "score_run", lambda folder, cache_dir=None, device="cpu": scores[folder])
    out = tmp_path / "post.md"
    assert postprocessing.main(["--folds", str(recipe), "--out", str(out)]) == 0
    text = out.read_text()
    assert f"`python -m tools.postprocessing --folds {recipe} --out {out}` at commit abc1234" in text
    assert "- context fold 1: commit c0ffee0, cpu (2 cores), split: 5-fold, fold 1, seed 42" in text
    assert "fold 0 highest mean, fold 1 highest mean" in text
    assert "Pooled: 0.9000 against the reference rule's 0.0000" in text
    assert results_files.DEFAULT_ANALYSIS in text
