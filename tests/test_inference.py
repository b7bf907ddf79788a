import csv
import shutil

import imageio.v3 as iio
import numpy as np
import pytest
import torch

import checkpoint
import dataset
from layouts import kaggle_3m
import preprocessing
import inference
import runtime
import metrics
from unet import UNet, build_model
from metrics import segmentation_metrics


def test_metrics_hand_computed():
    pred = np.zeros((3, 10, 10), bool)
    true = pred.copy()
    pred[1, 2:4, 2:4] = True  # 4 voxels
    true[1, 2:4, 3:6] = True  # 6 voxels, 2 shared
    metrics = segmentation_metrics(pred, true)
    assert metrics == dict(dsc=0.4, iou=0.25, precision=0.5, recall=pytest.approx(1 / 3), hd95=2.0,
                           predicted_voxels=4, true_voxels=6)


def test_metrics_of_empty_volumes():
    empty = np.zeros((2, 4, 4), bool)
    some = empty.copy()
    some[0, 1, 1] = True
    assert segmentation_metrics(empty, empty) == dict(dsc=1.0, iou=1.0, precision=1.0, recall=1.0, hd95=0.0,
                                                      predicted_voxels=0, true_voxels=0)
    missed = segmentation_metrics(empty, some)
    assert (missed["dsc"], missed["iou"], missed["precision"], missed["recall"]) == (0.0, 0.0, 0.0, 0.0)
    assert np.isnan(missed["hd95"])
    false_alarm = segmentation_metrics(some, empty)
    assert (false_alarm["precision"], false_alarm["recall"]) == (0.0, 0.0)


def test_restore_geometry_undoes_crop_pad_and_resize(phantom_dir):
    patient = "TCGA_SY_0004_20000101"
    files = kaggle_3m.list_patients(phantom_dir)[patient]
    image, mask, geometry = preprocessing.load_volumes({patient: files}, 64, cache_dir=None, progress=False)[patient]
    restored = preprocessing.restore_geometry(mask, geometry) > 0.5
    truth = kaggle_3m.LAYOUT.truth(files)
    assert restored.shape == truth.shape == (8, 256, 256)
    assert not restored[0].any() and not restored[-1].any()  # dropped slices stay empty
    assert segmentation_metrics(restored, truth)["dsc"] > 0.95


def test_restore_geometry_places_a_hand_made_crop():
    # original 5 slices of 6 x 8; crop z 1..4, y 1..5 (4 rows), x 2..4 (2 columns) -> padded to 4 x 4
    geometry = np.array([5, 1, 4, 1, 5, 2, 4, 6, 8])
    square = np.zeros((3, 4, 4))
    square[:, :, 1:3] = 1.0  # the 2 real columns sit after 1 padding column
    square[:, :, 0] = square[:, :, 3] = 7.0  # padding must be cut away
    out = preprocessing.restore_geometry(square, geometry)
    assert out.shape == (5, 6, 8)
    assert np.all(out[1:4, 1:5, 2:4] == 1.0)
    assert out.sum() == 3 * 4 * 2


def test_a_stretched_image_fills_the_grid_and_is_put_back_by_hand():
    # one 2 x 4 image, no crop: padded, rows 0 and 3 of the 4 x 4 grid are padding; stretched, every row is image
    mask = np.ones((1, 2, 4))
    padded = preprocessing.preprocess(np.ones((1, 2, 4, 1)), mask, 4, crop=False)[1]
    stretched = preprocessing.preprocess(np.ones((1, 2, 4, 1)), mask, 4, crop=False, to_square="stretch")[1]
    assert padded[0].sum(axis=1).tolist() == [0, 4, 4, 0] and stretched.all()
    geometry = preprocessing.geometry_of(np.ones((1, 2, 4, 1)), 1, crop=False, to_square="stretch")
    assert geometry.tolist() == [1, 0, 1, 0, 2, 0, 4, 2, 4, 1]
    assert preprocessing.geometry_of(np.ones((1, 2, 4, 1)), 1, crop=False).tolist() == [1, 0, 1, 0, 2, 0, 4, 2, 4]
    grid = np.zeros((1, 4, 4))
    grid[0, 0] = 1.0  # the grid's top row: half of the image's top row when stretched (bilinear, 4 rows to 2) ...
    assert preprocessing.restore_geometry(grid, geometry)[0].tolist() == [[0.5] * 4, [0.0] * 4]
    # ... padding when padded (the geometry's last field 0, or a cache's 9-field geometry from before to_square)
    for padded_geometry in (np.append(geometry[:9], 0), geometry[:9]):
        assert not preprocessing.restore_geometry(grid, padded_geometry).any()


def test_predicted_masks_have_the_dataset_names_and_round_trip(phantom_dir, tmp_path):
    patient = "TCGA_SY_0004_20000101"
    files = kaggle_3m.list_patients(phantom_dir)[patient]
    mask = np.zeros((8, 256, 256), bool)
    mask[3, 100:120, 90:110] = True
    inference.write_masks(mask, patient, files, tmp_path, kaggle_3m.LAYOUT)
    names = sorted(p.name for p in (tmp_path / patient).glob("*_mask.tif"))
    assert names == sorted(f"{patient}_{n}_mask.tif" for n in range(1, 9))
    again = kaggle_3m.list_patients(tmp_path)[patient]
    volume, masks = kaggle_3m.read_patient(again)
    assert volume.shape == (6, 256, 256, 3) and masks.shape == (6, 256, 256)
    assert set(np.unique(masks)) == {0, 1} and masks[2].sum() == 400  # written 0/255, read as 0/1


class HalfModel(torch.nn.Module):
    """Predicts 1 on the left half of the image, 0 on the right (logits of +-10^4)."""

    def forward(self, x):
        out = torch.full_like(x[:, :1], -1e4)
        out[..., : x.shape[-1] // 2] = 1e4
        return out


def test_flip_tta_averages_with_the_mirrored_prediction(phantom_dir):
    data = dataset.BrainSegmentationDataset(phantom_dir, subset="validation", validation_cases=3, image_size=16,
                                            random_sampling=False, cache_dir=None, progress=False)
    plain = inference.predict(HalfModel(), data, "cpu", tta=False)
    averaged = inference.predict(HalfModel(), data, "cpu", tta=True)
    patient = data.patients[0]
    assert plain[patient][1][0, 0].tolist() == [1.0] * 8 + [0.0] * 8
    assert np.all(averaged[patient][1] == 0.5)


def test_patient_metrics_say_what_the_largest_component_threw_away():
    """A false blob of 8 voxels beside a true tumour of 4 predicted exactly: the 3-D largest connected component
    keeps the false blob, so DSC 0 where the prediction without it scores 2*4 / (12 + 4) = 0.5."""
    truth = np.zeros((4, 6, 6), dtype=np.uint8)
    truth[0, 0, 0:4] = 1
    probs = truth * 0.9
    probs[2:4, 3:5, 3:5] = 0.8  # 2x2x2, not touching the tumour
    row = metrics.patient_metrics("p", *inference.post_process(probs, threshold=0.5, lcc=True), truth, 0.25)
    assert row["dsc"] == 0.0 and row["predicted_voxels"] == 8 and row["true_voxels"] == 4
    assert row["dsc_without_lcc"] == pytest.approx(0.5) and row["components"] == 2
    assert row["dsc_preprocessed"] == 0.25 and list(row) == list(metrics.METRIC_COLUMNS)
    plain = metrics.patient_metrics("p", *inference.post_process(probs, threshold=0.5, lcc=False), truth, 0.25)
    assert plain["dsc"] == plain["dsc_without_lcc"] == pytest.approx(0.5) and plain["predicted_voxels"] == 12


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "unet.pt"
    checkpoint.save_weights(UNet(init_features=4), path, 32, dict(init_features=4))
    return path


def test_metrics_summary_hand_computed(tmp_path):
    nan = float("nan")
    rows = [dict(patient="a", dsc=0.9, iou=0.8, precision=1.0, recall=0.5, hd95=2.0, predicted_voxels=10,
                 true_voxels=20, dsc_preprocessed=0.7, dsc_without_lcc=0.9, components=1),
            dict(patient="b", dsc=0.0, iou=0.0, precision=0.0, recall=0.0, hd95=nan, predicted_voxels=0,
                 true_voxels=5, dsc_preprocessed=0.0, dsc_without_lcc=0.3, components=3),
            dict(patient="c", dsc=0.6, iou=0.5, precision=0.5, recall=1.0, hd95=6.0, predicted_voxels=4,
                 true_voxels=2, dsc_preprocessed=0.5, dsc_without_lcc=0.6, components=2)]
    summary = metrics.metrics_summary(rows)
    assert summary["mean"]["dsc"] == pytest.approx(0.5) and summary["median"]["dsc"] == pytest.approx(0.6)
    assert summary["mean"]["hd95"] == pytest.approx(4.0) and summary["median"]["hd95"] == pytest.approx(4.0)
    assert summary["mean"]["true_voxels"] == pytest.approx(9.0) and summary["median"]["predicted_voxels"] == 4.0
    assert summary["mean"]["dsc_without_lcc"] == pytest.approx(0.6) and summary["median"]["components"] == 2.0
    inference.write_metrics_summary(summary, tmp_path / "summary.csv")
    with open(tmp_path / "summary.csv") as handle:
        written = list(csv.DictReader(handle))
    assert [row["statistic"] for row in written] == ["mean", "median"]
    assert float(written[0]["recall"]) == 0.5 and float(written[1]["iou"]) == 0.5
    no_hd95 = [dict(row, hd95=nan) for row in rows]
    inference.write_metrics_summary(metrics.metrics_summary(no_hd95), tmp_path / "none.csv")
    with open(tmp_path / "none.csv") as handle:
        assert [row["hd95"] for row in csv.DictReader(handle)] == ["", ""]  # empty, not "nan"


def saturated(model, logit):
    """model with every parameter 0 and its output layers' biases at logit: it predicts sigmoid(logit) everywhere,
    whatever the network (the zero weights and batch norm pass nothing on)."""
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d) and module.out_channels == 1:
                module.bias.fill_(logit)
    return model


def crop_box_voxels(slice_files):
    """The voxels of the box the preprocessing crops out of a patient (what a prediction of everything covers)."""
    image, _ = kaggle_3m.read_patient(slice_files)
    z, y, x = preprocessing.crop_bounds(image)
    return (z.stop - z.start) * (y.stop - y.start) * (x.stop - x.start)


def test_run_with_masks_writes_metrics_figure_masks_and_gifs(phantom_dir, tmp_path):
    weights = tmp_path / "everything.pt"
    checkpoint.save_weights(saturated(UNet(init_features=4), 20.0), weights, 32, dict(init_features=4))
    out = inference.run(weights=weights, data_path=phantom_dir, validation_cases=3, workers=0, cache_dir=None,
                        predictions_dir=tmp_path / "p", figure=tmp_path / "dsc.png")
    assert out["patients"] == ["TCGA_SY_0002_20000101", "TCGA_SY_0001_20000101", "TCGA_SY_0006_20000101"]
    with open(tmp_path / "p" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["patient"] for row in rows] == out["patients"]
    assert list(rows[0]) == list(metrics.METRIC_COLUMNS)
    with open(tmp_path / "p" / "metrics-summary.csv") as handle:
        summary = {row["statistic"]: row for row in csv.DictReader(handle)}
    assert float(summary["mean"]["dsc"]) == pytest.approx(np.mean([float(row["dsc"]) for row in rows]), abs=1e-6)
    # a model that predicts everything: at the original geometry that is the preprocessing's crop box, back where
    # it came from, so every tumour voxel is found and the box is what is predicted
    files = kaggle_3m.list_patients(phantom_dir)
    assert all(float(row["recall"]) == 1.0 for row in rows)
    assert [int(row["predicted_voxels"]) for row in rows] == [crop_box_voxels(files[p]) for p in out["patients"]]
    truth = kaggle_3m.LAYOUT.truth(files["TCGA_SY_0002_20000101"])
    assert int(rows[0]["true_voxels"]) == truth.sum()
    assert (tmp_path / "dsc.png").exists() and len(out["gifs"]) == 3
    assert len(list((tmp_path / "p" / "masks" / "TCGA_SY_0001_20000101").glob("*_mask.tif"))) == 8


def test_run_without_masks_segments_every_patient(phantom_dir, weights, tmp_path):
    new = tmp_path / "new"
    for image in sorted(phantom_dir.glob("TCGA_SY_000[12]_*/*.tif")):
        if not image.name.endswith("_mask.tif"):
            (new / image.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(image, new / image.parent.name / image.name)
    out = inference.run(weights=weights, data_path=new, workers=0, cache_dir=None, predictions_dir=tmp_path / "p",
                        figure=tmp_path / "dsc.png")
    assert out["patients"] == ["TCGA_SY_0001_20000101", "TCGA_SY_0002_20000101"] and out["metrics"] == []
    assert not (tmp_path / "p" / "metrics.csv").exists() and not (tmp_path / "dsc.png").exists()
    written = kaggle_3m.list_patients(tmp_path / "p" / "masks")
    assert sorted(written) == out["patients"] and len(written["TCGA_SY_0001_20000101"]) == 8
    frames = iio.imread(out["gifs"][0], index=None)
    green = (frames[..., 0] == 0) & (frames[..., 1] == 255) & (frames[..., 2] == 0)
    assert not green.any()



@pytest.mark.parametrize("native", [True, False])
def test_bf16_inference_on_a_cpu_that_emulates_it_says_so(native, phantom_dir, weights, tmp_path, monkeypatch,
                                                           capsys):
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: native)
    inference.run(weights=weights, data_path=phantom_dir, patients=["TCGA_SY_0001_20000101"], workers=0,
                  cache_dir=None, predictions_dir=tmp_path / "p", figure=None, precision="bf16")
    said = 'warning: precision="bf16" on a CPU without native bfloat16: emulated' in capsys.readouterr().out
    assert said != native

@pytest.mark.parametrize("name", ["attention_unet", "resnet34_unet", "unet++"])
def test_run_with_weights_of_every_network(name, phantom_dir, tmp_path):
    # each network's output (unet++: four heads, averaged) reaches the masks: everything, then nothing
    args = dict(init_features=4, deep_supervision=True) if name == "unet++" else dict(init_features=4)
    outputs = {}
    for logit in (20.0, -20.0):
        path = tmp_path / f"{name}{logit}.pt"
        checkpoint.save_weights(saturated(build_model(name, **args), logit), path, 32, args, name)
        outputs[logit] = inference.run(weights=path, data_path=phantom_dir, validation_cases=3, workers=0,
                                       cache_dir=None, predictions_dir=tmp_path / f"p{logit}",
                                       figure=tmp_path / "dsc.png", write_masks=False)
    scores = {logit: out["metrics"] for logit, out in outputs.items()}
    assert len(scores[20.0]) == 3 and all(row["recall"] == 1.0 for row in scores[20.0])
    assert all(row["predicted_voxels"] == 0 and row["dsc"] == 0.0 for row in scores[-20.0])
    data = dataset.BrainSegmentationDataset(phantom_dir, subset="validation", validation_cases=3, image_size=32,
                                            random_sampling=False, cache_dir=None, progress=False)
    for patient in data.patients:
        # the dataset's number of the slice with the most tumour, at the original geometry
        truth = kaggle_3m.LAYOUT.truth(data.files[patient])
        index = int(np.argmax(truth.sum(axis=(1, 2))))
        number = data.files[patient][index][0]
        for logit, out in outputs.items():
            assert out["telling_slice"][patient] == number
            assert (tmp_path / f"p{logit}" / f"{patient}_{number}.png").exists()
        # the prediction at that slice, at the original geometry: all of the truth there (recall 1), then nothing
        everything, nothing = outputs[20.0]["telling_masks"][patient], outputs[-20.0]["telling_masks"][patient]
        assert everything.shape == nothing.shape == truth.shape[1:]
        assert everything[truth[index] > 0].all() and truth[index].any() and not nothing.any()


def test_a_half_precision_copy_keeps_the_metadata_and_predicts_as_the_float32_weights(weights, tmp_path):
    half = checkpoint.half_precision_copy(weights, tmp_path / "unet-fp16.pt")
    state, metadata = checkpoint.read_weights(half)
    original_state, original_metadata = checkpoint.read_weights(weights)
    assert metadata == original_metadata and metadata["image_size"] == 32
    assert {value.dtype for key, value in state.items() if "num_batches_tracked" not in key} == {torch.float16}
    assert state["encoder1.enc1norm1.num_batches_tracked"].dtype == torch.int64  # counts are not rounded
    assert half.stat().st_size < 0.6 * weights.stat().st_size
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = checkpoint.load_weights(weights)[0](x)
        model = checkpoint.load_weights(half)[0]
        got = model(x)
    assert next(model.parameters()).dtype == torch.float32  # loaded into the float32 model
    # float16 keeps 11 significant bits: the sigmoid outputs agree to ~1e-3, not exactly
    assert 0 < (got - expected).abs().max() < 5e-3
