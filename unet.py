"""The networks: the reference U-Net, Attention U-Net, ResNet-34 U-Net, UNet++.

The U-Net (Ronneberger et al. with batch normalisation) keeps the reference's
module and parameter names, so its published state_dict (weights/unet.pt,
unet-e012d006.pt) loads with strict=True.

Every network returns logits, as segmentation_models_pytorch and nnU-Net do:
the losses take logits, and probabilities() applies the sigmoid (and flip
test-time augmentation) where probabilities are needed, at validation and
inference. The reference's forward() returned the sigmoid itself.
"""

import copy
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn as nn


def conv_block(in_channels, features, name):
    """Two 3x3 conv (no bias) + BatchNorm + ReLU, named <name>conv1, <name>norm1, ..."""
    layers = []
    for index, channels in ((1, in_channels), (2, features)):
        layers += [
            (f"{name}conv{index}", nn.Conv2d(channels, features, kernel_size=3, padding=1, bias=False)),
            (f"{name}norm{index}", nn.BatchNorm2d(features)),
            (f"{name}relu{index}", nn.ReLU(inplace=True)),
        ]
    return nn.Sequential(OrderedDict(layers))


class UNet(nn.Module):
    """Four 2x down/up levels; returns per-pixel logits (the reference applied the sigmoid here).

    deep_supervision (off in the reference): nnU-Net's deep supervision, which supervises every decoder level but
    the coarsest. A 1x1 head on the half- and quarter-resolution decoder outputs; in training mode forward()
    returns [quarter, half, full] logits, the heads' bilinearly upsampled to the input's size so that the same
    loss and mask apply (nnU-Net downsamples the mask instead), for loss.DeepSupervision with nnU-Net's weights
    halving a level: deep_supervision_weights [0.25, 0.5, 1]. In eval mode it returns the full-resolution logits
    alone, as nnU-Net predicts; without it the module and its parameter names are the reference's.
    """

    def __init__(self, in_channels=3, out_channels=1, init_features=32, deep_supervision=False):
        super().__init__()
        f = init_features
        self.encoder1 = conv_block(in_channels, f, "enc1")
        self.pool1 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.encoder2 = conv_block(f, f * 2, "enc2")
        self.pool2 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.encoder3 = conv_block(f * 2, f * 4, "enc3")
        self.pool3 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.encoder4 = conv_block(f * 4, f * 8, "enc4")
        self.pool4 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.bottleneck = conv_block(f * 8, f * 16, "bottleneck")
        self.upconv4 = nn.ConvTranspose2d(f * 16, f * 8, kernel_size=2, stride=2)
        self.decoder4 = conv_block(f * 16, f * 8, "dec4")
        self.upconv3 = nn.ConvTranspose2d(f * 8, f * 4, kernel_size=2, stride=2)
        self.decoder3 = conv_block(f * 8, f * 4, "dec3")
        self.upconv2 = nn.ConvTranspose2d(f * 4, f * 2, kernel_size=2, stride=2)
        self.decoder2 = conv_block(f * 4, f * 2, "dec2")
        self.upconv1 = nn.ConvTranspose2d(f * 2, f, kernel_size=2, stride=2)
        self.decoder1 = conv_block(f * 2, f, "dec1")
        self.conv = nn.Conv2d(f, out_channels, kernel_size=1)
        self.deep_supervision = deep_supervision
        if deep_supervision:  # on decoder3 (quarter resolution) and decoder2 (half)
            self.heads = nn.ModuleList([nn.Conv2d(f * 4, out_channels, 1), nn.Conv2d(f * 2, out_channels, 1)])

    def encode(self, x):
        """The four skip features, finest first, and the bottleneck."""
        enc1 = self.encoder1(x)
        enc2 = self.encoder2(self.pool1(enc1))
        enc3 = self.encoder3(self.pool2(enc2))
        enc4 = self.encoder4(self.pool3(enc3))
        return enc1, enc2, enc3, enc4, self.bottleneck(self.pool4(enc4))

    def forward(self, x):
        enc1, enc2, enc3, enc4, bottleneck = self.encode(x)
        dec4 = self.decoder4(torch.cat((self.upconv4(bottleneck), enc4), dim=1))
        dec3 = self.decoder3(torch.cat((self.upconv3(dec4), enc3), dim=1))
        dec2 = self.decoder2(torch.cat((self.upconv2(dec3), enc2), dim=1))
        dec1 = self.decoder1(torch.cat((self.upconv1(dec2), enc1), dim=1))
        if self.deep_supervision and self.training:
            size = x.shape[-2:]
            return [nn.functional.interpolate(head(level), size=size, mode="bilinear", align_corners=False)
                    for head, level in zip(self.heads, (dec3, dec2))] + [self.conv(dec1)]
        return self.conv(dec1)


# ------------------------------------------------------------------ Attention U-Net


def projection(in_channels, out_channels):
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))


class AttentionGate(nn.Module):
    """Additive attention (Oktay et al. 2018): the skip x is weighted by a map computed from x and the gate g."""

    def __init__(self, gate_channels, skip_channels, inner_channels):
        super().__init__()
        self.gate = projection(gate_channels, inner_channels)
        self.skip = projection(skip_channels, inner_channels)
        self.psi = nn.Sequential(nn.Conv2d(inner_channels, 1, 1), nn.BatchNorm2d(1), nn.Sigmoid())

    def forward(self, g, x):
        return x * self.psi(torch.relu(self.gate(g) + self.skip(x)))


class AttentionUNet(UNet):
    """The reference U-Net with an attention gate on each skip connection."""

    def __init__(self, in_channels=3, out_channels=1, init_features=32):
        super().__init__(in_channels, out_channels, init_features)
        f = init_features
        self.gates = nn.ModuleList(
            [AttentionGate(f * k, f * k, max(f * k // 2, 1)) for k in (8, 4, 2, 1)]
        )

    def forward(self, x):
        enc1, enc2, enc3, enc4, out = self.encode(x)
        levels = zip(
            (self.upconv4, self.upconv3, self.upconv2, self.upconv1),
            (self.decoder4, self.decoder3, self.decoder2, self.decoder1),
            self.gates,
            (enc4, enc3, enc2, enc1),
        )
        for upconv, decoder, gate, skip in levels:
            up = upconv(out)
            out = decoder(torch.cat((up, gate(up, skip)), dim=1))
        return self.conv(out)


# ------------------------------------------------------------------ ResNet34 U-Net


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock, with its parameter names (conv1, bn1, conv2, bn2, downsample)."""

    def __init__(self, in_channels, channels, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False), nn.BatchNorm2d(channels)
            )

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class ResNet34Encoder(nn.Module):
    """ResNet-34 feature extractor with torchvision's names, so its ImageNet state_dict loads."""

    LAYERS = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))

    def __init__(self, in_channels=3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        channels = 64
        for index, (width, blocks, stride) in enumerate(self.LAYERS, start=1):
            layer = [BasicBlock(channels, width, stride)] + [BasicBlock(width, width) for _ in range(blocks - 1)]
            setattr(self, f"layer{index}", nn.Sequential(*layer))
            channels = width

    def forward(self, x):
        stem = self.relu(self.bn1(self.conv1(x)))  # 1/2
        f1 = self.layer1(self.maxpool(stem))  # 1/4
        f2 = self.layer2(f1)  # 1/8
        f3 = self.layer3(f2)  # 1/16
        f4 = self.layer4(f3)  # 1/32
        return stem, f1, f2, f3, f4


def load_imagenet_encoder(encoder, path=None):
    """Load torchvision-format ResNet-34 ImageNet weights into encoder; returns (the file loaded, or None when
    none was found, and a line saying what happened).

    path: a local .pth state_dict (e.g. torchvision's resnet34-b627a593.pth). Without one,
    torchvision's cached weights are tried when torchvision is installed; nothing is downloaded.
    """
    state = None
    if path is not None:
        state = torch.load(path, map_location="cpu", weights_only=True)
        source = str(path)
    else:
        try:
            from torchvision.models import ResNet34_Weights

            weights = ResNet34_Weights.IMAGENET1K_V1
            cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
            if cached.exists():
                state, source = torch.load(cached, map_location="cpu", weights_only=True), str(cached)
        except ImportError:
            pass
    if state is None:
        return None, "ResNet-34 encoder: no ImageNet weights file found, random initialisation"
    state = {key: value for key, value in state.items() if not key.startswith("fc.")}
    if encoder.conv1.weight.shape[1] != state["conv1.weight"].shape[1]:
        state.pop("conv1.weight")
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    return source, f"ResNet-34 encoder: ImageNet weights from {source} ({len(missing)} tensors left at random init)"


class ResNet34UNet(nn.Module):
    """U-Net decoder on a ResNet-34 encoder (skips at 1/2 ... 1/16), upsampled back to the input size.

    pretrained: load ImageNet weights into the encoder when a file is available (see load_imagenet_encoder);
    what happened is in self.pretrained_message, and self.encoder_weights says "ImageNet" or "random".
    """

    def __init__(self, in_channels=3, out_channels=1, init_features=32, pretrained=False, pretrained_path=None):
        super().__init__()
        self.encoder = ResNet34Encoder(in_channels)
        loaded, self.pretrained_message = (
            load_imagenet_encoder(self.encoder, pretrained_path) if pretrained or pretrained_path else
            (None, "ResNet-34 encoder: random initialisation (pretrained=False)")
        )
        self.encoder_weights = "ImageNet" if loaded else "random"
        d = init_features  # decoder width at 1/2 scale, as the U-Net's first level
        self.up4 = nn.ConvTranspose2d(512, d * 8, 2, stride=2)
        self.dec4 = conv_block(d * 8 + 256, d * 8, "dec4")
        self.up3 = nn.ConvTranspose2d(d * 8, d * 4, 2, stride=2)
        self.dec3 = conv_block(d * 4 + 128, d * 4, "dec3")
        self.up2 = nn.ConvTranspose2d(d * 4, d * 2, 2, stride=2)
        self.dec2 = conv_block(d * 2 + 64, d * 2, "dec2")
        self.up1 = nn.ConvTranspose2d(d * 2, d, 2, stride=2)
        self.dec1 = conv_block(d + 64, d, "dec1")
        self.up0 = nn.ConvTranspose2d(d, d, 2, stride=2)
        self.dec0 = conv_block(d, d, "dec0")
        self.conv = nn.Conv2d(d, out_channels, 1)

    def forward(self, x):
        stem, f1, f2, f3, f4 = self.encoder(x)
        out = self.dec4(torch.cat((self.up4(f4), f3), dim=1))
        out = self.dec3(torch.cat((self.up3(out), f2), dim=1))
        out = self.dec2(torch.cat((self.up2(out), f1), dim=1))
        out = self.dec1(torch.cat((self.up1(out), stem), dim=1))
        return self.conv(self.dec0(self.up0(out)))


# ------------------------------------------------------------------ UNet++


class NestedUNet(nn.Module):
    """UNet++ (Zhou et al. 2018) with optional deep supervision.

    With deep_supervision, forward() returns the list of the four heads'
    logits X(0,1)..X(0,4) in training mode (each trained against the mask,
    as nnU-Net's deep supervision); in eval mode the heads are averaged.
    """

    def __init__(self, in_channels=3, out_channels=1, init_features=32, deep_supervision=True):
        super().__init__()
        widths = [init_features * 2**i for i in range(5)]
        self.deep_supervision = deep_supervision
        self.pool = nn.MaxPool2d(2, 2)
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.nodes = nn.ModuleDict()
        for j in range(5):  # column j: nodes X(i, j) for i in 0..4-j
            for i in range(5 - j):
                if j == 0:
                    c_in = in_channels if i == 0 else widths[i - 1]
                else:
                    c_in = widths[i] * j + widths[i + 1]
                self.nodes[f"x{i}_{j}"] = conv_block(c_in, widths[i], f"x{i}_{j}_")
        self.heads = nn.ModuleList([nn.Conv2d(widths[0], out_channels, 1) for _ in range(4)])

    def _heads(self, x):
        grid = {}
        for i in range(5):
            grid[i, 0] = self.nodes[f"x{i}_0"](x if i == 0 else self.pool(grid[i - 1, 0]))
        for j in range(1, 5):
            for i in range(5 - j):
                inputs = [grid[i, k] for k in range(j)] + [self.up(grid[i + 1, j - 1])]
                grid[i, j] = self.nodes[f"x{i}_{j}"](torch.cat(inputs, dim=1))
        return [head(grid[0, j]) for j, head in zip(range(1, 5), self.heads)]

    def forward(self, x):
        heads = self._heads(x)
        if self.deep_supervision and self.training:
            return heads
        return torch.stack(heads).mean(0) if self.deep_supervision else heads[-1]


MODELS = {
    "unet": UNet,
    "attention_unet": AttentionUNet,
    "resnet34_unet": ResNet34UNet,
    "unet++": NestedUNet,
}


def probabilities(model, x, tta=False, logits=None):
    """Per-pixel probabilities of an eval-mode model, in float32; with tta, the mean of the prediction and the
    horizontally flipped prediction of the flipped input. logits: model(x), when already computed."""
    y_pred = torch.sigmoid((model(x) if logits is None else logits).float())
    if tta:
        y_pred = (y_pred + torch.sigmoid(model(x.flip(-1)).float()).flip(-1)) / 2
    return y_pred


def fused_for_inference(model):
    """A copy of an eval-mode model with every BatchNorm that follows a convolution in a Sequential folded into
    that convolution's weights and bias (the BatchNorm becomes an identity), in channels_last: the same
    probabilities within float32 rounding, with less work and memory traffic per slice on a CPU."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    fused = copy.deepcopy(model).eval()
    for module in fused.modules():
        if isinstance(module, nn.Sequential):
            names = list(module._modules)
            for first, second in zip(names, names[1:]):
                conv, norm = module._modules[first], module._modules[second]
                if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
                    module._modules[first] = fuse_conv_bn_eval(conv, norm)
                    module._modules[second] = nn.Identity()
    return fused.to(memory_format=torch.channels_last)


def build_model(name="unet", **kwargs):
    """A network by name: unet, attention_unet, resnet34_unet, unet++ (kwargs go to its constructor)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    return MODELS[name](**kwargs)
