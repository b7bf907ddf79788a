"""The reference U-Net (Ronneberger et al. with batch normalisation).

Module and parameter names are the reference's, so its published state_dict
(weights/unet.pt, unet-e012d006.pt) loads with strict=True.
"""

from collections import OrderedDict

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
    """Four 2x down/up levels; returns per-pixel probabilities (sigmoid), as the reference."""

    def __init__(self, in_channels=3, out_channels=1, init_features=32):
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

    def logits(self, x):
        enc1 = self.encoder1(x)
        enc2 = self.encoder2(self.pool1(enc1))
        enc3 = self.encoder3(self.pool2(enc2))
        enc4 = self.encoder4(self.pool3(enc3))
        bottleneck = self.bottleneck(self.pool4(enc4))
        dec4 = self.decoder4(torch.cat((self.upconv4(bottleneck), enc4), dim=1))
        dec3 = self.decoder3(torch.cat((self.upconv3(dec4), enc3), dim=1))
        dec2 = self.decoder2(torch.cat((self.upconv2(dec3), enc2), dim=1))
        dec1 = self.decoder1(torch.cat((self.upconv1(dec2), enc1), dim=1))
        return self.conv(dec1)

    def forward(self, x):
        return torch.sigmoid(self.logits(x))
