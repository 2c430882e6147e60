"""CMUNeXt (beyond the paper: a network this study adds): a fully convolutional U-net of large-kernel
ConvMixer blocks, re-implemented.

Paper: F. Tang, J. Ding, Q. Quan, L. Wang, C. Ning, S. K. Zhou, "CMUNeXt: An Efficient Medical Image
Segmentation Network based on Large Kernel and Skip Fusion", ISBI 2024 (arXiv:2308.01239). Code read:
github.com/FengheTan9/CMUNeXt at commit affbf03 (network/CMUNeXt.py, ``cmunext()``);
docs/modern_networks.md has the details and the training recipe.

A conv stem, five encoder stages (max-pool between them) of CMUNeXt blocks: a residual depthwise
k x k conv, then an inverted bottleneck of 1x1 convs (x4), then a 3x3 conv to the next width; the
decoder upsamples (bilinear, conv 3x3), concatenates the skip and fuses with a "skip-fusion" block
(grouped 3x3 conv, then a 1x1 inverted bottleneck). Defaults of ``cmunext()``: widths 16, 32, 128,
160, 256; depths 1, 1, 1, 3, 1; kernels 3, 3, 7, 7, 7. One output channel: 3,149,185 parameters,
the authors' count exactly.

The authors' network already returns one channel of logits (their loss applies the sigmoid); the
code below is theirs restructured, with the same layers in the same order (so that their state
dicts load position by position) and the same PyTorch default initialisation.
"""

from __future__ import annotations

import torch
from torch import nn

from sonoseg.networks.bilinear import Upsample

WIDTHS = (16, 32, 128, 160, 256)
DEPTHS = (1, 1, 1, 3, 1)
KERNELS = (3, 3, 7, 7, 7)


def conv_bn_relu(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1), nn.BatchNorm2d(out_ch), nn.ReLU())


class Residual(nn.Module):
    def __init__(self, fn: nn.Module):
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x) + x


def mixer_layer(ch: int, kernel: int) -> nn.Sequential:
    """One ConvMixer-style layer: x + BN(GELU(depthwise k x k)), then 1x1 up to 4 ch and back, each
    conv followed by GELU and BN (the authors' order: activation before the norm)."""
    return nn.Sequential(
        Residual(
            nn.Sequential(
                nn.Conv2d(ch, ch, kernel_size=kernel, padding=kernel // 2, groups=ch), nn.GELU(), nn.BatchNorm2d(ch)
            )
        ),
        nn.Conv2d(ch, 4 * ch, kernel_size=1),
        nn.GELU(),
        nn.BatchNorm2d(4 * ch),
        nn.Conv2d(4 * ch, ch, kernel_size=1),
        nn.GELU(),
        nn.BatchNorm2d(ch),
    )


class CMUNeXtBlock(nn.Module):
    """``depth`` mixer layers at ``in_ch`` channels, then conv 3x3 -> BN -> ReLU to ``out_ch``."""

    def __init__(self, in_ch: int, out_ch: int, depth: int, kernel: int):
        super().__init__()
        self.block = nn.Sequential(*[mixer_layer(in_ch, kernel) for _ in range(depth)])
        self.up = conv_bn_relu(in_ch, out_ch)  # the authors' name; it widens the channels, not the size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.block(x))


def up_conv(in_ch: int, out_ch: int) -> nn.Sequential:
    # nn.Upsample's bilinear default, align_corners False, as in the authors' code
    return nn.Sequential(Upsample(scale_factor=2, align_corners=False), *conv_bn_relu(in_ch, out_ch))


def skip_fusion(in_ch: int, out_ch: int) -> nn.Sequential:
    """The decoder's skip-fusion block on [skip, upsampled]: a 3x3 conv in two groups (one per source),
    then a 1x1 inverted bottleneck (x4) to ``out_ch``; GELU before BN after every conv."""
    return nn.Sequential(
        nn.Conv2d(in_ch, in_ch, kernel_size=3, padding=1, groups=2),
        nn.GELU(),
        nn.BatchNorm2d(in_ch),
        nn.Conv2d(in_ch, 4 * out_ch, kernel_size=1),
        nn.GELU(),
        nn.BatchNorm2d(4 * out_ch),
        nn.Conv2d(4 * out_ch, out_ch, kernel_size=1),
        nn.GELU(),
        nn.BatchNorm2d(out_ch),
    )


class CMUNeXt(nn.Module):
    """CMUNeXt; input N x 3 x S x S (S a multiple of 16), output N x out_channels x S x S logits."""

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 1,
        widths: tuple[int, ...] = WIDTHS,
        depths: tuple[int, ...] = DEPTHS,
        kernels: tuple[int, ...] = KERNELS,
    ):
        super().__init__()
        c = widths
        self.pool = nn.MaxPool2d(2)
        self.stem = conv_bn_relu(in_channels, c[0])
        self.encoder1 = CMUNeXtBlock(c[0], c[0], depths[0], kernels[0])
        self.encoder2 = CMUNeXtBlock(c[0], c[1], depths[1], kernels[1])
        self.encoder3 = CMUNeXtBlock(c[1], c[2], depths[2], kernels[2])
        self.encoder4 = CMUNeXtBlock(c[2], c[3], depths[3], kernels[3])
        self.encoder5 = CMUNeXtBlock(c[3], c[4], depths[4], kernels[4])
        self.up5 = up_conv(c[4], c[3])
        self.fuse5 = skip_fusion(2 * c[3], c[3])
        self.up4 = up_conv(c[3], c[2])
        self.fuse4 = skip_fusion(2 * c[2], c[2])
        self.up3 = up_conv(c[2], c[1])
        self.fuse3 = skip_fusion(2 * c[1], c[1])
        self.up2 = up_conv(c[1], c[0])
        self.fuse2 = skip_fusion(2 * c[0], c[0])
        self.final = nn.Conv2d(c[0], out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.encoder1(self.stem(x))  # c0, S
        x2 = self.encoder2(self.pool(x1))  # c1, S/2
        x3 = self.encoder3(self.pool(x2))  # c2, S/4
        x4 = self.encoder4(self.pool(x3))  # c3, S/8
        x5 = self.encoder5(self.pool(x4))  # c4, S/16
        d = self.fuse5(torch.cat([x4, self.up5(x5)], dim=1))
        d = self.fuse4(torch.cat([x3, self.up4(d)], dim=1))
        d = self.fuse3(torch.cat([x2, self.up3(d)], dim=1))
        d = self.fuse2(torch.cat([x1, self.up2(d)], dim=1))
        return self.final(d)


def cmunext() -> CMUNeXt:
    """CMUNeXt as the authors' ``cmunext()`` (the base size, not -S or -L): 3,149,185 parameters."""
    return CMUNeXt()
