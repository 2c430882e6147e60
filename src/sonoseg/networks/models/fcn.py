"""FCN-32s/16s/8s on VGG16 features, as in pochih/FCN-pytorch (docs/method.md, "Networks")."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import vgg16

# Indices of torchvision's vgg16().features right after pool3, pool4 and pool5.
_POOL_ENDS = (17, 24, 31)


class FCN(nn.Module):
    """VGG16 encoder, five stride-2 transposed convs, 1x1 classifier.

    ``skips`` is how many encoder outputs are added back: 0 for FCN-32s, 1 (pool4) for FCN-16s,
    2 (pool4, pool3) for FCN-8s. All three have the same parameters.

    Each decoder stage is ``bn(relu(deconv(x)))``; a stage with a skip adds the encoder output
    before the BatchNorm, ``bn(relu(deconv(x)) + skip)``, so the sum is normalised — the order of
    pochih's ``python/fcn.py``.
    """

    backbone_kind = "vgg16"

    def __init__(self, skips: int, out_channels: int = 1):
        super().__init__()
        if skips not in (0, 1, 2):
            raise ValueError(f"FCN skips must be 0 (FCN-32s), 1 (FCN-16s) or 2 (FCN-8s), got {skips}")
        self.skips = skips
        self.backbone = vgg16(weights=None).features
        widths = [512, 512, 256, 128, 64, 32]
        self.decoder = nn.ModuleList(
            nn.ModuleDict(
                {
                    "deconv": nn.ConvTranspose2d(a, b, 3, stride=2, padding=1, output_padding=1),
                    "bn": nn.BatchNorm2d(b),
                }
            )
            for a, b in zip(widths, widths[1:])
        )
        self.relu = nn.ReLU(inplace=True)
        self.classifier = nn.Conv2d(32, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = []
        start = 0
        for end in _POOL_ENDS:
            x = self.backbone[start:end](x)
            features.append(x)
            start = end
        pool3, pool4, score = features
        skip_inputs = [pool4, pool3][: self.skips]
        for i, stage in enumerate(self.decoder):
            score = self.relu(stage["deconv"](score))
            if i < len(skip_inputs):
                score = score + skip_inputs[i]
            score = stage["bn"](score)
        return self.classifier(score)
