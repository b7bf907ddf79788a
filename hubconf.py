"""torch.hub entry points: the U-Net, with the weights this repository ships (pretrained/MODEL_CARD.md).

    model = torch.hub.load("<this checkout>", "unet", source="local", pretrained=True)   # float32, eval mode
    model = torch.hub.load("<this checkout>", "unet", source="local")                    # untrained, reference size

The model takes (N, 3, 256, 256) slices of pre-contrast, FLAIR and post-contrast, preprocessed as dataset.py
does (per volume: crop, pad, resize, p10-p99 rescale, per-channel standardisation), and returns logits:
inference.run (or inference.ipynb) does all of that and writes masks at the original geometry.
"""

dependencies = ["torch", "numpy", "scipy", "skimage"]


def unet(pretrained=False, **kwargs):
    """The reference U-Net (unet.UNet, keyword arguments as there); pretrained=True: the shipped weights."""
    if pretrained:
        import checkpoint
        from runs import SHIPPED_WEIGHTS

        if kwargs:
            raise TypeError(f"pretrained=True builds the shipped model as it was trained; drop {', '.join(kwargs)}")
        model, _ = checkpoint.load_weights(SHIPPED_WEIGHTS)
        return model
    from unet import UNet

    return UNet(**kwargs)
