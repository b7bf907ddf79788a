"""The networks of unet.py and the training options: shapes, names, and that each one learns."""

import pytest
import torch

import checkpoint
import safe_files
import dataset
from layouts import kaggle_3m
import train
import unet
from optimizers import build_optimizer, lr_factor
from loss import LOSSES, build_loss
from unet import (MODELS, AttentionUNet, NestedUNet, ResNet34Encoder, ResNet34UNet, UNet, build_model,
                  fused_for_inference, probabilities)

SMALL = {"unet": 4, "attention_unet": 4, "resnet34_unet": 4, "unet++": 4}


@pytest.fixture(scope="module")
def tumour_batch(phantom_dir, tmp_path_factory):
    """Eight 32x32 phantom slices with tumour, as (x, y)."""
    data = dataset.BrainSegmentationDataset(
        phantom_dir, subset="all", random_sampling=False, image_size=32,
        cache_dir=tmp_path_factory.mktemp("cache"), workers=1, progress=False,
    )
    slices = [data[i] for i in range(len(data)) if data[i][1].sum() > 0][:8]
    return torch.stack([x for x, _ in slices]), torch.stack([y for _, y in slices])


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_network_returns_logits_of_its_input_size(name):
    torch.manual_seed(0)
    model = build_model(name, init_features=SMALL[name]).eval()
    with torch.no_grad():
        for layer in model.heads if isinstance(model, NestedUNet) else [model.conv]:
            layer.bias.fill_(-20.0)  # the output layer's bias shifts logits by -20; a sigmoid's output stays >= 0
        out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 1, 64, 64)
    assert out.max() < -10


def test_unet_plus_plus_returns_its_four_heads_in_training_and_their_mean_in_eval():
    model = NestedUNet(init_features=4, deep_supervision=True)
    x = torch.randn(2, 3, 32, 32)
    heads = model.train()(x)
    assert isinstance(heads, list) and len(heads) == 4 and all(h.shape == (2, 1, 32, 32) for h in heads)
    model.eval()
    with torch.no_grad():
        heads = model._heads(x)
        torch.testing.assert_close(model(x), torch.stack(heads).mean(0))
        single = NestedUNet(init_features=4, deep_supervision=False).eval()
        torch.testing.assert_close(single(x), single._heads(x)[-1])



def test_unet_deep_supervision_adds_two_heads_and_predicts_as_the_plain_unet():
    """nnU-Net's deep supervision on the reference U-Net: heads on the quarter- and half-resolution decoder
    outputs (not the coarsest), trained at the input's size; in eval mode the plain U-Net's prediction."""
    plain = UNet().state_dict()
    supervised = UNet(deep_supervision=True).state_dict()
    assert {key: tuple(value.shape) for key, value in supervised.items() if key not in plain} == {
        "heads.0.weight": (1, 128, 1, 1), "heads.0.bias": (1,), "heads.1.weight": (1, 64, 1, 1), "heads.1.bias": (1,)}
    torch.manual_seed(0)
    reference, model = UNet(init_features=4), UNet(init_features=4, deep_supervision=True)
    model.load_state_dict(reference.state_dict(), strict=False)  # the same weights, the heads aside
    x = torch.randn(2, 3, 32, 48)
    outputs = model.train()(x)
    assert isinstance(outputs, list) and [o.shape for o in outputs] == [(2, 1, 32, 48)] * 3
    torch.testing.assert_close(outputs[-1], reference.train()(x))
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), reference.eval()(x))
        for head, value in zip(model.heads, (-3.0, 5.0)):  # a head of zero weights gives its bias everywhere
            head.weight.zero_()
            head.bias.fill_(value)
        quarter, half, _ = model.train()(x)
    assert quarter.unique().tolist() == [-3.0] and half.unique().tolist() == [5.0]
    # every head takes part in the loss: nnU-Net's weights, a level half the next finer one's
    model.zero_grad()
    build_loss("bce", deep_supervision_weights=[0.25, 0.5, 1.0])(model(x), torch.ones(2, 1, 32, 48)).backward()
    assert all(head.weight.grad.abs().sum() > 0 for head in model.heads)

def test_attention_unet_keeps_the_reference_names_and_gates_every_skip():
    attention = AttentionUNet().state_dict()
    assert set(UNet().state_dict()) < set(attention)
    gates = {key.split(".")[1] for key in attention if key.startswith("gates.")}
    assert gates == {"0", "1", "2", "3"}
    # a gate multiplies the skip by a map in (0, 1): zero gate output kills the skip
    gate = AttentionUNet(init_features=4).gates[3].eval()
    torch.nn.init.constant_(gate.psi[0].weight, 0.0)
    torch.nn.init.constant_(gate.psi[0].bias, -1e4)
    assert gate(torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)).abs().max() == 0


def test_resnet34_encoder_has_torchvisions_names_and_feature_sizes():
    encoder = ResNet34Encoder()
    names = set(encoder.state_dict())
    for key in ("conv1.weight", "bn1.running_var", "layer1.2.conv2.weight", "layer2.0.downsample.0.weight",
                "layer3.5.bn2.bias", "layer4.2.conv1.weight"):
        assert key in names
    assert sum(p.numel() for p in encoder.parameters()) == 21_284_672  # torchvision resnet34 without fc
    features = encoder(torch.randn(1, 3, 64, 64))
    assert [tuple(f.shape[1:]) for f in features] == [(64, 32, 32), (64, 16, 16), (128, 8, 8), (256, 4, 4),
                                                        (512, 2, 2)]


def test_resnet34_unet_loads_a_local_imagenet_file_and_says_so(tmp_path):
    source = ResNet34Encoder()
    state = {key: torch.full_like(value, 0.5) if value.is_floating_point() else value
             for key, value in source.state_dict().items()}
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)
    path = tmp_path / "resnet34-imagenet.pth"
    torch.save(state, path)
    model = ResNet34UNet(init_features=4, pretrained_path=path)
    assert str(path) in model.pretrained_message and "0 tensors left at random init" in model.pretrained_message
    assert torch.all(model.encoder.layer4[2].conv2.weight == 0.5) and model.encoder_weights == "ImageNet"
    plain = ResNet34UNet(init_features=4, pretrained=False)
    assert plain.pretrained_message == "ResNet-34 encoder: random initialisation (pretrained=False)"
    assert plain.encoder_weights == "random"
    one_channel = ResNet34UNet(in_channels=1, init_features=4, pretrained_path=path)
    assert "1 tensors left at random init" in one_channel.pretrained_message


def test_build_model_rejects_unknown_names():
    with pytest.raises(ValueError, match=r"unknown model 'unet3\+'; choose one of unet, attention_unet"):
        build_model("unet3+")


def fit_steps(model, loss_fn, x, y, steps=20, lr=1e-2):
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_network_learns_phantom_slices(name, tumour_batch):
    torch.manual_seed(0)
    x, y = tumour_batch
    losses = fit_steps(build_model(name, init_features=SMALL[name]), build_loss("bce_dice"), x, y)
    assert min(losses[-3:]) < 0.9 * losses[0], losses


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_trains_the_unet_on_phantom_slices(name, tumour_batch):
    torch.manual_seed(0)
    x, y = tumour_batch
    losses = fit_steps(UNet(init_features=4), build_loss(name), x, y)
    # the overlap losses move slowly from sigmoid(0) = 0.5 everywhere; a sign error would raise them
    assert max(losses[-3:]) < 0.985 * losses[0], losses


def test_lr_factor_hand_computed():
    # 10 steps, 2 of warm-up: 1/2, 2/2, then the schedule over the remaining 8
    assert [lr_factor(s, 10, 2, "constant") for s in (0, 1, 5)] == [0.5, 1.0, 1.0]
    assert lr_factor(2, 10, 2, "cosine") == 1.0
    assert lr_factor(6, 10, 2, "cosine") == pytest.approx(0.5)
    assert lr_factor(10, 10, 2, "cosine") == pytest.approx(0.0)
    assert lr_factor(6, 10, 2, "poly") == pytest.approx(0.5**0.9)
    assert lr_factor(4, 8, 0, "poly") == pytest.approx(0.5**0.9)
    with pytest.raises(ValueError, match="schedule.*constant, cosine, poly.*'step'"):
        lr_factor(0, 10, 0, "step")


@pytest.mark.parametrize("name, expected", [
    # SGD, Nesterov: d = g + wd p = 0.51; the buffer starts at d; d + momentum buffer = 0.918; 1 - 0.1 x 0.918
    ("sgd", 0.9082),
    # Adam, weight decay as L2: the first step moves by lr (m / sqrt(v) = 1 after bias correction): 1 - 0.1
    ("adam", 0.9),
    # AdamW, decoupled: first 1 x (1 - lr wd) = 0.999, then the same step of lr: 0.899
    ("adamw", 0.899),
])
def test_optimisers_take_their_hand_computed_first_step(name, expected):
    weight = torch.nn.Parameter(torch.ones(1))
    optimizer = build_optimizer([weight], dict(lr=0.1, weight_decay=0.01, momentum=0.8, optimizer=name))
    weight.grad = torch.full((1,), 0.5)
    optimizer.step()
    assert weight.item() == pytest.approx(expected, abs=1e-6)


def test_an_unknown_optimiser_is_named():
    with pytest.raises(ValueError, match="optimizer.*adam, adamw, sgd.*'lion'"):
        build_optimizer([torch.nn.Parameter(torch.ones(1))], dict(lr=0.1, weight_decay=0.0, optimizer="lion"))


RECIPE = dict(
    image_size=32, init_features=4, batch_size=4, workers=0, validation_cases=3, vis_images=0, epochs=3,
    model="unet++", model_args={"deep_supervision": True}, loss="bce_dice", optimizer="adamw", lr=3e-3,
    weight_decay=1e-4, schedule="cosine", warmup_epochs=1, grad_clip=1.0, tta=True,
)


def test_a_full_recipe_trains_and_its_weights_rebuild_the_model(phantom_dir, tmp_path):
    results = train.train(
        data_path=str(phantom_dir), weights_dir=str(tmp_path / "w"), logs_dir=str(tmp_path / "l"),
        cache_dir=str(tmp_path / "cache"), **RECIPE,
    )
    steps = results["history"][0]["step"]
    lrs = [epoch["lr"] for epoch in results["history"]]
    # after epoch 1 (warm-up) and 2 of 3 (cosine over the last 2 epochs): factors 1, 1/2, 0
    assert steps == 7  # 5 training patients x 6 slices // batch 4
    assert lrs[0] == pytest.approx(3e-3) and lrs[1] == pytest.approx(1.5e-3) and lrs[2] == pytest.approx(0.0)
    assert results["split"] == "reference: random.sample seed 42, 3 validation patients"
    model, metadata = checkpoint.load_weights(tmp_path / "w" / "unet.pt")
    assert isinstance(model, NestedUNet) and metadata["model"] == "unet++"
    assert metadata["model_args"] == dict(in_channels=3, out_channels=1, init_features=4, deep_supervision=True)



def test_the_unet_with_deep_supervision_trains_and_its_weights_rebuild_it(phantom_dir, tmp_path):
    train.train(data_path=str(phantom_dir), weights_dir=str(tmp_path / "w"), logs_dir=str(tmp_path / "l"),
                cache_dir=str(tmp_path / "cache"), **dict(RECIPE, model="unet", epochs=1, tta=False,
                                                          deep_supervision_weights=[0.25, 0.5, 1.0]))
    model, metadata = checkpoint.load_weights(tmp_path / "w" / "unet.pt")
    assert isinstance(model, UNet) and model.deep_supervision and len(model.heads) == 2
    assert metadata["model_args"] == dict(in_channels=3, out_channels=1, init_features=4, deep_supervision=True)
    assert model.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 1, 32, 32)

def test_k_fold_training_validates_on_its_fold(phantom_dir, tmp_path):
    results = train.train(
        data_path=str(phantom_dir), weights_dir=str(tmp_path / "w"), logs_dir=str(tmp_path / "l"),
        cache_dir=str(tmp_path / "cache"), **dict(RECIPE, model="unet", model_args=None, epochs=1, folds=4, fold=1),
    )
    names = sorted(kaggle_3m.list_patients(phantom_dir))
    assert results["validation_patients"] == dataset.split_patients(names, "validation", folds=4, fold=1)
    assert len(results["validation_patients"]) == 2 and len(results["train_patients"]) == 6
    assert results["split"] == "patient-level 4-fold cross-validation, fold 1, seed 42"


@pytest.mark.slow
def test_resnet34_request_without_imagenet_file_says_random_init(phantom_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # no cached torchvision weights there
    results = train.train(
        data_path=str(phantom_dir), weights_dir=str(tmp_path / "w"), logs_dir=str(tmp_path / "l"),
        cache_dir=str(tmp_path / "cache"),
        **dict(RECIPE, model="resnet34_unet", model_args={"pretrained": True}, epochs=1, tta=False),
    )
    assert "ResNet-34 encoder: no ImageNet weights file found, random initialisation" in capsys.readouterr().out
    assert results["encoder_weights"] == "random"  # the report says so beside the model
    model, metadata = checkpoint.load_weights(tmp_path / "w" / "unet.pt")
    assert isinstance(model, ResNet34UNet) and "pretrained" not in metadata["model_args"]


@pytest.mark.slow
def test_a_resumed_run_reports_how_its_first_start_initialised_the_encoder(phantom_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # no cached torchvision weights there
    settings = dict(data_path=str(phantom_dir), weights_dir=str(tmp_path / "w"), logs_dir=str(tmp_path / "l"),
                    cache_dir=str(tmp_path / "cache"), keep_checkpoint=True,
                    **dict(RECIPE, model="resnet34_unet", model_args={"pretrained": True}, epochs=1, tta=False))
    assert train.train(**settings)["encoder_weights"] == "random"
    # the ImageNet file appears before the resume: the weights that trained are still the random start's
    monkeypatch.setattr(unet, "load_imagenet_encoder", lambda encoder, path=None: ("resnet34.pth", "loaded"))
    assert ResNet34UNet(init_features=4, pretrained=True).encoder_weights == "ImageNet"
    resumed = train.train(**dict(settings, resume=True))
    assert resumed["resumed_after_epochs"] == [1] and resumed["encoder_weights"] == "random"
    # a checkpoint from before encoder_weights was recorded: the resume does not guess it from its own start
    path = tmp_path / "l" / train.CHECKPOINT_NAME
    saved = checkpoint.load_training_checkpoint(path)
    del saved["results"]["encoder_weights"]
    safe_files.save_atomic(saved, path)
    assert "encoder_weights" not in train.train(**dict(settings, resume=True))


def test_weights_of_one_network_do_not_load_as_another(tmp_path):
    path = tmp_path / "attention.pt"
    checkpoint.save_weights(AttentionUNet(init_features=4), path, 32, dict(init_features=4), "attention_unet")
    model, _ = checkpoint.load_weights(path)
    assert isinstance(model, AttentionUNet)
    checkpoint.save_weights(AttentionUNet(init_features=4), path, 32, dict(init_features=4), "unet")
    with pytest.raises(checkpoint.WeightsError, match=r"attention\.pt: weights do not fit UNet\(.*Unexpected key"):
        checkpoint.load_weights(path)
    checkpoint.save_weights(UNet(init_features=4), path, 32, dict(init_features=4), "segformer")
    with pytest.raises(checkpoint.WeightsError, match="model 'segformer'"):
        checkpoint.load_weights(path)


def trained_looking(model):
    """Batch norm statistics and affine parameters away from their initial 0/1, so that folding them matters."""
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            shape = module.running_mean.shape
            module.running_mean.copy_(torch.randn(shape, generator=generator) * 0.5)
            module.running_var.copy_(torch.rand(shape, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(shape, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(shape, generator=generator) * 0.2)
    return model.eval()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_inference_fusion_gives_the_same_probabilities_and_bf16_stays_close(name):
    torch.manual_seed(0)
    model = trained_looking(build_model(name, init_features=SMALL[name]))
    fused = fused_for_inference(model)
    folded = [m for m in fused.modules() if isinstance(m, torch.nn.Identity)]
    assert len(folded) >= 10  # the batch norms after convolutions are gone
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        plain = probabilities(model, x)
        assert (plain - probabilities(fused, x.contiguous(memory_format=torch.channels_last))).abs().max() < 1e-5
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = probabilities(fused, x.contiguous(memory_format=torch.channels_last))
    assert low.dtype == torch.float32 and (plain - low).abs().max() < 1e-2
