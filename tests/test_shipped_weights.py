"""The shipped weights (pretrained/, pretrained/MODEL_CARD.md): loadable through torch.hub, small enough to
track, and inference on real data without training first reproduces the score the model card cites."""

import csv

import pytest
import torch

import checkpoint
import inference
import runs
from conftest import REPO, SAMPLE_DIR

CITED = REPO / "results" / "real-data-gpu" / "runs" / "unet-bce_dice-adamw-cosine" / "fold-0" / "predictions"


def test_the_shipped_weights_are_a_float16_unet_under_16_mib_with_their_split():
    assert runs.SHIPPED_WEIGHTS.stat().st_size < 16 * 2**20
    state, metadata = checkpoint.read_weights(runs.SHIPPED_WEIGHTS)
    assert state["conv.weight"].dtype == torch.float16
    assert metadata["model"] == "unet" and metadata["image_size"] == 256
    split = metadata["split"]
    assert (split["folds"], split["fold"], split["seed"]) == (5, 0, 42)
    assert len(split["validation_patients"]) == 22 and len(split["train_patients"]) == 88


def test_torch_hub_builds_the_shipped_model_and_an_untrained_one():
    model = torch.hub.load(str(REPO), "unet", source="local", pretrained=True)
    expected, _ = checkpoint.load_weights(runs.SHIPPED_WEIGHTS)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), expected(x)) and not model.training
    untrained = torch.hub.load(str(REPO), "unet", source="local", init_features=8)
    assert untrained.encoder1[0].weight.shape[0] == 8
    with pytest.raises(TypeError, match="pretrained=True.*as it was trained"):
        torch.hub.load(str(REPO), "unet", source="local", pretrained=True, init_features=8)


@pytest.mark.skipif(not SAMPLE_DIR.is_dir(), reason="real LGG sample not present")
@pytest.mark.slow
def test_inference_without_a_run_uses_them_and_scores_what_the_model_card_cites(tmp_path, monkeypatch):
    patient = "TCGA_EZ_7264_20010816"  # one of the 22 patients the shipped model was validated on
    monkeypatch.chdir(tmp_path)  # no runs/ here: inference falls back on the shipped weights
    out = inference.run(data_path=str(SAMPLE_DIR), patients=[patient], cache_dir=None, workers=0, gif_fps=5)
    assert out["predictions_dir"].startswith("predictions/unet-lgg-256-kaggle_3m-")
    with open(CITED / "metrics.csv") as handle:
        cited = {row["patient"]: float(row["dsc"]) for row in csv.DictReader(handle)}
    assert out["metrics"][0]["dsc"] == pytest.approx(cited[patient], abs=1e-4)
    assert cited[patient] > 0.9  # a model that finds this patient's tumour, not one that predicts nothing
