"""The U-net family of the paper: U-net, Light U-net and Lighter U-net @C, from one parametric class.

Skeleton: milesial/Pytorch-UNet (bilinear upsampling, 2020 layout); docs/method.md ("Networks")
gives the rule that decides each conv set.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sonoseg.networks.bilinear import resize


@dataclass(frozen=True)
class ConvStyle:
    """How one conv set of a double-conv block is built.

    ``group_size`` None is a regular 3x3 conv; an integer ``g`` is a grouped 3x3 conv in->in with
    ``in / g`` groups followed directly by a 1x1 conv in->out.
    ``channels_per_group`` is the C of "Lighter U-net @C"; ``group_size`` is derived per layer.
    """

    channels_per_group: int | None  # None: regular conv

    def group_size(self, in_channels: int) -> int:
        C = self.channels_per_group
        assert C is not None
        # The authors treat the RGB input specially: three channels form one group unless C == 1.
        if in_channels == 3 and C != 1:
            return 3
        return min(C, in_channels)


REGULAR = ConvStyle(None)


def conv_set(in_channels: int, out_channels: int, style: ConvStyle) -> nn.Module:
    if style.channels_per_group is None:
        return nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
    g = style.group_size(in_channels)
    return nn.Sequential(
        nn.Conv2d(in_channels, in_channels, kernel_size=3, padding=1, groups=in_channels // g),
        nn.Conv2d(in_channels, out_channels, kernel_size=1),
    )


class DoubleConv(nn.Sequential):
    """(conv set -> BN -> ReLU) twice."""

    def __init__(self, in_ch: int, mid_ch: int, out_ch: int, first: ConvStyle, second: ConvStyle):
        super().__init__(
            conv_set(in_ch, mid_ch, first),
            nn.BatchNorm2d(mid_ch),
            nn.ReLU(inplace=True),
            conv_set(mid_ch, out_ch, second),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )


class Down(nn.Sequential):
    def __init__(self, in_ch: int, out_ch: int, first: ConvStyle, second: ConvStyle):
        super().__init__(nn.MaxPool2d(2), DoubleConv(in_ch, out_ch, out_ch, first, second))


class Up(nn.Module):
    """Bilinear x2, pad to the skip's size, concatenate [skip, upsampled], double conv (mid = in // 2)."""

    def __init__(self, in_ch: int, out_ch: int, first: ConvStyle, second: ConvStyle):
        super().__init__()
        self.conv = DoubleConv(in_ch, in_ch // 2, out_ch, first, second)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = resize(x, scale_factor=2, align_corners=True)
        dy, dx = skip.shape[2] - x.shape[2], skip.shape[3] - x.shape[3]
        x = F.pad(x, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return self.conv(torch.cat([skip, x], dim=1))


class UNet(nn.Module):
    """U-net with a choice of conv set for the first and second conv of every double-conv block.

    ``width`` is the first block's channel count (64 in the paper; every other width scales with it).
    """

    def __init__(
        self,
        first: ConvStyle = REGULAR,
        second: ConvStyle = REGULAR,
        in_channels: int = 3,
        out_channels: int = 1,
        width: int = 64,
    ):
        super().__init__()
        w = width
        self.inc = DoubleConv(in_channels, w, w, first, second)
        self.down1 = Down(w, 2 * w, first, second)
        self.down2 = Down(2 * w, 4 * w, first, second)
        self.down3 = Down(4 * w, 8 * w, first, second)
        self.down4 = Down(8 * w, 8 * w, first, second)
        self.dropout = nn.Dropout(0.5)
        self.up1 = Up(16 * w, 4 * w, first, second)
        self.up2 = Up(8 * w, 2 * w, first, second)
        self.up3 = Up(4 * w, w, first, second)
        self.up4 = Up(2 * w, w, first, second)
        self.outc = nn.Conv2d(w, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.inc(x)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        x4 = self.down3(x3)
        x5 = self.dropout(self.down4(x4))
        x = self.up1(x5, x4)
        x = self.up2(x, x3)
        x = self.up3(x, x2)
        x = self.up4(x, x1)
        return self.outc(x)


def unet() -> UNet:
    return UNet(REGULAR, REGULAR)


def light_unet() -> UNet:
    return UNet(REGULAR, ConvStyle(1))


def lighter_unet(channels_per_group: int) -> UNet:
    style = ConvStyle(channels_per_group)
    return UNet(style, style)
