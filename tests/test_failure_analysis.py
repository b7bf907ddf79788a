"""tools/failure_analysis.py: where a failed prediction went, read off hand-made metrics rows."""

import csv
import json

import pytest

from tools import failure_analysis, scored_recipes


def row(dsc, precision, recall, predicted=100, without=float("nan"), true_voxels=100, components=1):
    return dict(dsc=dsc, dsc_without_lcc=without, precision=precision, recall=recall, predicted_voxels=predicted,
                true_voxels=true_voxels, components=components)


@pytest.mark.parametrize("metrics, expected", [
    (row(0.0, 0.0, 0.0, predicted=0), "nothing predicted"),
    (row(0.0, 0.0, 0.0, without=0.44, components=15), "wrong component kept"),  # TCGA_FG_6690, fast recipe
    (row(0.0, 0.0, 0.0), "only a false blob kept"),  # a run scored before dsc_without_lcc: cannot say more
    (row(0.12, 0.99, 0.07), "under-segmented"),  # TCGA_HT_A61A, modern recipe
    (row(0.41, 0.26, 0.96), "false positives"),  # TCGA_DU_5852, reference recipe
    (row(0.30, 0.40, 0.25), "under-segmented and false positives"),
    (row(0.45, 0.50, 0.50, without=0.50), "boundary"),  # the component cost only 0.05: not the cause
])
def test_diagnoses(metrics, expected):
    assert failure_analysis.diagnose(metrics) == expected


def test_quartiles_and_the_failures_worst_first():
    rows = {f"p{size}": row(0.9, 0.9, 0.9, true_voxels=size) for size in (10, 20, 30, 40, 50, 60, 70, 80)}
    # percentiles of 10..80: 27.5, 45, 62.5
    assert failure_analysis.size_quartiles(rows) == dict(p10=1, p20=1, p30=2, p40=2, p50=3, p60=3, p70=4, p80=4)
    a = dict(p1=row(0.4, 1, 0.3), p2=row(0.9, 1, 0.9), p3=row(0.1, 1, 0.1))
    b = dict(p1=row(0.8, 1, 0.8), p2=row(0.2, 1, 0.1), p3=row(0.3, 1, 0.2))
    # below 0.5 anywhere: all three; ordered by their mean over the recipes (p3 0.2, p2 0.55, p1 0.6)
    assert failure_analysis.failures(dict(a=a, b=b)) == ["p3", "p2", "p1"]
    assert failure_analysis.failures(dict(a=a)) == ["p3", "p1"]


def test_recipe_rows_pool_the_folds_and_take_old_columns_as_unknown(tmp_path):
    for fold, (patient, extra) in enumerate([("p1", {"dsc_without_lcc": "0.5", "components": "3"}), ("p2", {})]):
        folder = tmp_path / "runs" / "recipe" / f"fold-{fold}"
        (folder / "predictions").mkdir(parents=True)
        (folder / "results.json").write_text(json.dumps(dict(params=dict(epochs=1), history=[{}])))
        columns = ["patient", "dsc", "precision", "recall", "predicted_voxels", "true_voxels", *extra]
        with open(folder / "predictions" / "metrics.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, columns)
            writer.writeheader()
            writer.writerow(dict(patient=patient, dsc="0.25", precision="1", recall="0.2", predicted_voxels="5",
                                 true_voxels="25", **extra))
    rows, runs = scored_recipes.recipe_rows(tmp_path / "runs" / "recipe")
    assert [run.fold for run in runs] == [0, 1] and sorted(rows) == ["p1", "p2"]
    assert rows["p1"]["fold"] == 0 and rows["p1"]["dsc_without_lcc"] == 0.5 and rows["p1"]["components"] == 3
    assert rows["p2"]["fold"] == 1 and rows["p2"]["dsc"] == 0.25
    assert rows["p2"]["dsc_without_lcc"] != rows["p2"]["dsc_without_lcc"]  # nan: not in that run's file


def test_a_recipe_without_a_scored_fold_or_a_label_is_refused_by_name(tmp_path, capsys):
    (tmp_path / "runs" / "recipe" / "fold-0").mkdir(parents=True)  # trained, never scored
    parser = scored_recipes.recipes_parser("test")
    for item, words in ((f"A={tmp_path / 'runs' / 'recipe'}", "no fold with predictions/metrics.csv (run python -m "
                                                               "tools.score_runs first)"),
                        (str(tmp_path / "runs" / "recipe"), "give LABEL=RUNS/EXPERIMENT")):
        with pytest.raises(SystemExit):
            scored_recipes.read(parser, [item])
        assert words in capsys.readouterr().err


def test_a_label_says_which_folds_when_not_all_of_them_are_scored(tmp_path):
    from runs import Run

    def recipe(scored, folds=5):
        runs = [Run("r", fold, tmp_path, dict(params=dict(folds=folds))) for fold in range(folds)]
        return {f"p{fold}": dict(row(0.9, 1, 0.9), fold=fold) for fold in scored}, runs

    assert scored_recipes.with_folds("context", *recipe([1, 3])) == "context (folds 1, 3)"
    assert scored_recipes.with_folds("seqdrop", *recipe([0])) == "seqdrop (fold 0)"
    assert scored_recipes.with_folds("fast", *recipe([4, 0, 2, 1, 3])) == "fast"  # all five: nothing to say
    assert scored_recipes.with_folds("old", *recipe([0], folds=0)) == "old"  # no k recorded: said as given


def test_the_picture_shows_the_predictions_of_the_runs_that_kept_their_weights(phantom_dir, blob_run, tmp_path):
    """The table reads the committed small files; --weights points the picture at the runs that kept weights."""
    import shutil

    import imageio.v3 as iio
    import numpy as np

    folder, patients = blob_run
    local = tmp_path / "local" / "blob"
    shutil.copytree(folder, local / "fold-0")
    # blob's fold 1 is still training: not in the table, so the picture must not read its (unreadable) weights
    unscored = "TCGA_SY_0005_20000101"
    (local / "fold-1" / "weights").mkdir(parents=True)
    (local / "fold-1" / "weights" / "unet.pt").write_bytes(b"mid-training")
    (local / "fold-1" / "results.json").write_text(json.dumps(dict(data_dir=str(phantom_dir), params={},
                                                                   validation_patients=[unscored])))
    for label in ("blob", "other"):  # committed: results.json and metrics.csv, no weights
        committed = tmp_path / "committed" / label / "fold-0"
        (committed / "predictions").mkdir(parents=True)
        shutil.copy(folder / "results.json", committed / "results.json")
        with open(committed / "predictions" / "metrics.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, ["patient", *scored_recipes.NUMERIC])
            writer.writeheader()
            for patient in patients + ([unscored] if label == "other" else []):
                writer.writerow(dict(patient=patient, dsc="0.1", dsc_without_lcc="0.1", precision="0.2", recall="0.1",
                                     predicted_voxels="50", true_voxels="100", components="2"))
    out, picture = tmp_path / "results" / "failures.md", tmp_path / "results" / "figures" / "failures.png"
    picture.parent.mkdir(parents=True)
    argv = [str(phantom_dir), f"blob={tmp_path / 'committed' / 'blob'}", f"other={tmp_path / 'committed' / 'other'}",
            "--weights", f"blob={local}", "--picture", str(picture), "--out", str(out)]
    assert failure_analysis.main(argv) == 0
    text = out.read_text()
    assert "(predictions of blob)" in text and "![The failing patients](figures/failures.png)" in text
    image = iio.imread(picture)[..., :3].astype(int)
    # three failing patients, one row each; the truth's column and blob's (other kept no weights): 3 inches at 80 dpi
    assert image.shape[:2] == (3 * 240, 2 * 240)
    # the same recipe and fold at another training seed (other weights of the same names) is a column of its own
    second_seed = tmp_path / "local-seed-1" / "blob"
    shutil.copytree(local / "fold-0", second_seed / "fold-0")
    both = tmp_path / "results" / "figures" / "both.png"
    assert failure_analysis.main(argv[:3] + ["--weights", f"blob={local}", "--weights", f"other={second_seed}",
                                             "--picture", str(both), "--out", str(out)]) == 0
    assert iio.imread(both).shape[:2] == (3 * 240, 3 * 240)
    assert failure_analysis.main(argv) == 0  # the first picture again, for what follows
    reddish = (image[..., 0] > image[..., 1] + 80) & (image[..., 0] > image[..., 2] + 80)
    assert not reddish[:, :240].any() and reddish[:, 240:].sum() > 20  # blob's outlines; none beside the truth
    with pytest.raises(SystemExit):  # a label that names no recipe
        failure_analysis.main(argv[:3] + ["--weights", f"blub={local}", "--picture", str(picture)])
    np.testing.assert_equal(image, iio.imread(picture)[..., :3])  # the failed call wrote nothing


def test_the_picture_draws_committed_telling_slices_as_it_draws_the_weights(phantom_dir, blob_run, tmp_path):
    """A run scored by tools/score_runs.py commits each patient's prediction at its telling slice: once its weights
    are gone (a new machine), the picture is drawn from that file, pixel for pixel as from the weights."""
    import shutil

    import imageio.v3 as iio
    import numpy as np

    import runs

    folder, patients = blob_run
    local = tmp_path / "local" / "blob"
    shutil.copytree(folder, local / "fold-0")
    committed = tmp_path / "committed" / "blob" / "fold-0"
    (committed / "predictions").mkdir(parents=True)
    shutil.copy(folder / "results.json", committed / "results.json")
    with open(committed / "predictions" / "metrics.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["patient", *scored_recipes.NUMERIC])
        writer.writeheader()
        for patient in patients:
            writer.writerow(dict(patient=patient, dsc="0.1", dsc_without_lcc="0.1", precision="0.2", recall="0.1",
                                 predicted_voxels="50", true_voxels="100", components="2"))
    argv = [str(phantom_dir), f"blob={tmp_path / 'committed' / 'blob'}"]
    from_weights, from_file = tmp_path / "weights.png", tmp_path / "file.png"
    assert failure_analysis.main(argv + ["--weights", f"blob={local}", "--picture", str(from_weights)]) == 0
    predicted = failure_analysis.predicted_slices(runs.run_at(local / "fold-0"), patients, tmp_path / "work")
    assert sorted(predicted) == patients and all(mask.any() for _, mask in predicted.values())  # blobs there
    runs.write_telling_slices(committed, {p: n for p, (n, _) in predicted.items()},
                              {p: mask for p, (_, mask) in predicted.items()})
    read = runs.telling_slices(committed)
    assert {p: n for p, (n, _) in read.items()} == {p: n for p, (n, _) in predicted.items()}
    for patient in patients:
        np.testing.assert_array_equal(read[patient][1], predicted[patient][1])
    shutil.rmtree(local)  # the weights are gone: the committed file alone draws the same picture
    assert failure_analysis.main(argv + ["--picture", str(from_file)]) == 0
    np.testing.assert_array_equal(iio.imread(from_file), iio.imread(from_weights))
    # a run scored before the file existed, its weights gone: the truth alone, its column said "prediction not kept"
    (committed / runs.TELLING_SLICES_FILE).unlink()
    out = tmp_path / "failures.md"
    assert failure_analysis.main(argv + ["--picture", str(from_file), "--out", str(out)]) == 0
    assert "(predictions of no recipe: no prediction kept)" in out.read_text()


@pytest.mark.parametrize("lesion, expected", [(200, 2.0), (40, 0.4)])
def test_flair_contrast_is_the_abnormality_over_the_rest_of_the_head(tmp_path, lesion, expected):
    import numpy as np

    from conftest import write_patient
    from layouts import kaggle_3m

    images, masks = [], []
    for number in range(2):
        image = np.zeros((16, 16, 3), np.uint8)
        image[2:-2, 2:-2] = (60, 100, 80)  # the head; its FLAIR (channel 1) 100, the background 0
        mask = np.zeros((16, 16), np.uint8)
        if number == 0:
            mask[6:10, 6:10] = 255
            image[6:10, 6:10, kaggle_3m.FLAIR_CHANNEL] = lesion
        images.append(image)
        masks.append(mask)
    write_patient(tmp_path, "TCGA_SY_0001_20000101", images, masks)
    slices = kaggle_3m.list_patients(tmp_path)["TCGA_SY_0001_20000101"]
    assert failure_analysis.flair_contrast(slices) == pytest.approx(expected)
    write_patient(tmp_path, "TCGA_SY_0002_20000101", images, [np.zeros((16, 16), np.uint8)] * 2)
    assert np.isnan(failure_analysis.flair_contrast(kaggle_3m.list_patients(tmp_path)["TCGA_SY_0002_20000101"]))


def test_the_saved_picture_keeps_both_outline_colours_beside_many_greys(tmp_path):
    """A real FLAIR slice has hundreds of greys; a palette chosen by the image (median cut) spent its 64 colours on
    them and turned the few red outline pixels grey: the failure picture showed no prediction at all."""
    import imageio.v3 as iio
    import numpy as np
    from PIL import Image

    from utils import GREEN, RED

    grey = np.tile(np.arange(256, dtype=np.uint8), (256, 1))  # every grey level, as in a slice
    image = np.repeat(grey[..., None], 3, axis=2)
    image[100, 20:60] = RED  # a 40-pixel prediction outline
    image[150, 20:200] = GREEN
    path = tmp_path / "picture.png"
    failure_analysis.save_with_outline_palette(Image.fromarray(image), path)
    saved = iio.imread(path)[..., :3]
    red = np.all(saved == RED, axis=-1)
    green = np.all(saved == GREEN, axis=-1)
    assert red.sum() == 40 and red[100, 20:60].all()
    assert green.sum() == 180 and green[150, 20:200].all()
    rest = ~(red | green)
    # greys stay greys, within about a palette step (255 / 61; Pillow matches colours at reduced precision)
    assert np.all(saved[rest] == saved[rest][:, :1])
    assert np.abs(saved[rest].astype(int) - image[rest].astype(int)).max() <= 6
    assert len(np.unique(saved.reshape(-1, 3), axis=0)) <= 64


def test_the_quartile_table_says_where_each_recipe_gains():
    # 8 patients, volumes 10..80 (quartiles 1, 1, 2, 2, 3, 3, 4, 4); contrast quartiles given by hand
    sizes = {f"p{i}": (i + 1) // 2 for i in range(1, 9)}
    contrast = {f"p{i}": 4 - (i - 1) // 2 for i in range(1, 9)}  # the smallest tumours the brightest
    base = {f"p{i}": row(0.9, 1, 0.9) for i in range(1, 9)}
    base["p1"], base["p2"] = row(0.0, 0.0, 0.0), row(0.4, 1, 0.3)  # the two smallest fail
    lever = dict(base, p1=row(0.8, 1, 0.8))  # rescues one of them
    partial = {patient: base[patient] for patient in ("p7", "p8")}  # one fold scored: only the largest
    lines = failure_analysis.quartile_lines({"base": base, "lever": lever, "partial": partial}, sizes, contrast)
    assert lines[0].startswith("| recipe | volume Q1 (smallest) | Q2 | Q3 | Q4 (largest) | contrast Q1")
    cells = {line.split(" | ")[0][2:]: line.strip("| ").split(" | ")[1:] for line in lines[2:]}
    assert cells["base"][0] == "0.200 (2 of 2 fail)" and cells["base"][1:4] == ["0.900 (0 of 2 fail)"] * 3
    assert cells["lever"][0] == "0.600 (1 of 2 fail)"
    # by contrast the same patients sit in reversed quartiles: the failures are in Q4 (the brightest)
    assert cells["base"][7] == "0.200 (2 of 2 fail)" and cells["lever"][7] == "0.600 (1 of 2 fail)"
    assert cells["partial"] == ["—", "—", "—", "0.900 (0 of 2 fail)", "0.900 (0 of 2 fail)", "—", "—", "—"]
