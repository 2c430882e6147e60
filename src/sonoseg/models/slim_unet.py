"""Slim U-net (ours, beyond the paper): the U-net of docs/method.md ("Networks"), every width scaled.

Why: Lighter U-net @C saves parameters but not time on a CPU: its grouped 3x3 + 1x1 pairs need
more FLOPs than U-net's dense convs and grouped convs run far below the dense-conv rate. Halving
every width keeps the dense 3x3 convs (the fast kernels) and divides the FLOPs by about four.
The width was chosen by measurement (bench/bench_latency.py, docs/performance.md).

``width`` is the first block's channel count; width 64 is exactly the paper's U-net (the test
checks that the count is U-net's 17,267,393).
"""

from __future__ import annotations

import torch
from torch import nn

from sonoseg.models.unet import REGULAR, DoubleConv, Down, Up

SLIM_WIDTH = 32


class SlimUNet(nn.Module):
    def __init__(self, width: int = SLIM_WIDTH, in_channels: int = 3, out_channels: int = 1):
        super().__init__()
        w = width
        self.inc = DoubleConv(in_channels, w, w, REGULAR, REGULAR)
        self.down1 = Down(w, 2 * w, REGULAR, REGULAR)
        self.down2 = Down(2 * w, 4 * w, REGULAR, REGULAR)
        self.down3 = Down(4 * w, 8 * w, REGULAR, REGULAR)
        self.down4 = Down(8 * w, 8 * w, REGULAR, REGULAR)
        self.dropout = nn.Dropout(0.5)
        self.up1 = Up(16 * w, 4 * w, REGULAR, REGULAR)
        self.up2 = Up(8 * w, 2 * w, REGULAR, REGULAR)
        self.up3 = Up(4 * w, w, REGULAR, REGULAR)
        self.up4 = Up(2 * w, w, REGULAR, REGULAR)
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


def slim_unet(width: int = SLIM_WIDTH) -> SlimUNet:
    return SlimUNet(width)
