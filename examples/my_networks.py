"""A network of your own, for sonoseg (docs/extending.md): a module with a builder function.

The builder takes no arguments and returns a torch module that maps a batch of RGB images
(N, 3, S, S) in [0, 1] to one channel of logits (N, 1, S, S); sonoseg applies the sigmoid.
"""

from torch import nn


def tiny_unet() -> nn.Module:
    """Two 3x3 convolutions, a downsampling and an upsampling: small enough for a test, shaped like
    a U-net."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(inplace=True),
        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
        nn.Conv2d(8, 1, 1),
    )
