"""EGE-UNet (beyond the paper: a network this study adds): an extremely light U-shaped network of
grouped Hadamard-product attention, re-implemented.

Paper: J. Ruan, M. Xie, J. Gao, T. Liu, Y. Fu, "EGE-UNet: an Efficient Group Enhanced UNet for skin
lesion segmentation", MICCAI 2023 (arXiv:2307.08473). Code read: github.com/JCruan519/EGE-UNet at
commit f52ba30 (models/egeunet.py, class ``EGEUNet``, defaults of configs/config_setting.py);
docs/modern_networks.md has the details and the training recipe.

Widths 8, 16, 24, 32, 48, 64, the layout of MALUNet (sonoseg.networks.models.malunet, same authors): three
plain conv stages, then three stages of grouped multi-axis Hadamard product attention (GHPA); the
decoder mirrors them. Each skip reaches the decoder through a group aggregation bridge (GAB), which
fuses the skip, the deeper bridge's output and a one-channel mask predicted by the decoder at that
level (a 1x1 "side head").

Deep supervision: the authors train the five side heads against the ground truth too (their
``gt_ds=True``, the default; weights 0.1 to 0.5 from deepest to shallowest). The side heads cannot be
left out: their masks are an input of every GAB, whose grouped convs are sized for that extra channel
(the authors' ``gt_ds=False`` path calls the GAB without a mask and fails). So this network keeps them,
and its count is the authors' default 53,374 (53,241 without the heads' 133 parameters, a variant
that does not run). ``forward`` returns only the final logits, in training and in eval (prediction,
export, the study's plain recipe: the side heads then learn only through the GABs they feed).
``forward_with_side_outputs`` gives the side logits too: with the recipe's ``deep_supervision`` (the
paper's loss) training adds SIDE_WEIGHTS times each side output's loss (sonoseg.training.train.train_epoch).

Changes from the authors' code, none of which changes an output value: logits, not probabilities
(the authors end with a sigmoid); the multi-axis products are written as broadcasts instead of
permute-multiply-permute; modules are registered in the authors' order (their state dicts load
position by position).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sonoseg.networks.bilinear import resize
from sonoseg.networks.models.malunet import GROUPS, init_weights, up2

WIDTHS = (8, 16, 24, 32, 48, 64)
BRIDGE_DILATIONS = (1, 2, 5, 7)
PARAM_GRID = 8  # the learned attention maps are 8 long per axis, resized to the feature map
SIDE_WEIGHTS = (0.1, 0.2, 0.3, 0.4, 0.5)  # the authors' deep-supervision weights, deepest head first


class ChannelsFirstLayerNorm(nn.Module):
    """LayerNorm over the channels of an NCHW map, eps 1e-6 (ConvNeXt's, as the authors use it)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


def resized(param: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return resize(param, size=size, align_corners=True)


class HadamardAttention(nn.Module):
    """GHPA: channels in four groups. Three are multiplied (Hadamard product) by a learned map on one
    plane each: height x width, channel x height, channel x width, each map an 8 x 8 (or C x 8)
    parameter resized to the feature map and passed through a depthwise conv -> GELU -> 1x1; the
    fourth group gets a 1x1 -> GELU -> depthwise 3x3. LayerNorm before and after, then depthwise 3x3 ->
    GELU -> 1x1 to ``out_ch``."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        c = in_ch // 4
        self.params_xy = nn.Parameter(torch.ones(1, c, PARAM_GRID, PARAM_GRID))
        self.params_zx = nn.Parameter(torch.ones(1, 1, c, PARAM_GRID))
        self.params_zy = nn.Parameter(torch.ones(1, 1, c, PARAM_GRID))
        self.conv_xy = nn.Sequential(
            nn.Conv2d(c, c, kernel_size=3, padding=1, groups=c), nn.GELU(), nn.Conv2d(c, c, kernel_size=1)
        )
        self.conv_zx = nn.Sequential(
            nn.Conv1d(c, c, kernel_size=3, padding=1, groups=c), nn.GELU(), nn.Conv1d(c, c, kernel_size=1)
        )
        self.conv_zy = nn.Sequential(
            nn.Conv1d(c, c, kernel_size=3, padding=1, groups=c), nn.GELU(), nn.Conv1d(c, c, kernel_size=1)
        )
        self.dw = nn.Sequential(
            nn.Conv2d(c, c, kernel_size=1), nn.GELU(), nn.Conv2d(c, c, kernel_size=3, padding=1, groups=c)
        )
        self.norm1 = ChannelsFirstLayerNorm(in_ch)
        self.norm2 = ChannelsFirstLayerNorm(in_ch)
        self.ldw = nn.Sequential(
            nn.Conv2d(in_ch, in_ch, kernel_size=3, padding=1, groups=in_ch), nn.GELU(), nn.Conv2d(in_ch, out_ch, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2, x3, x4 = torch.chunk(self.norm1(x), 4, dim=1)
        c, h, w = x1.shape[1:]
        x1 = x1 * self.conv_xy(resized(self.params_xy, (h, w)))  # map 1, c, h, w
        # The C x L maps: a 1-D conv along the spatial axis (batch 1, the c channels as channels),
        # then broadcast over the other spatial axis.
        x2 = x2 * self.conv_zx(resized(self.params_zx, (c, h))[0]).unsqueeze(-1)  # map 1, c, h, 1
        x3 = x3 * self.conv_zy(resized(self.params_zy, (c, w))[0]).unsqueeze(-2)  # map 1, c, 1, w
        x4 = self.dw(x4)
        return self.ldw(self.norm2(torch.cat([x1, x2, x3, x4], dim=1)))


class GroupAggregationBridge(nn.Module):
    """GAB: the deeper feature (1x1 to the skip's width, bilinear to its size) and the skip, each in four
    channel groups; group i of both plus the mask goes through LayerNorm -> depthwise 3x3 of dilation
    1, 2, 5 or 7; the four results, LayerNorm -> 1x1 to the skip's width."""

    def __init__(self, deep_ch: int, skip_ch: int):
        super().__init__()
        self.pre_project = nn.Conv2d(deep_ch, skip_ch, kernel_size=1)
        group = skip_ch // 2 + 1  # a quarter of each source, plus the mask channel
        self.groups = nn.ModuleList(
            nn.Sequential(
                ChannelsFirstLayerNorm(group),
                nn.Conv2d(group, group, kernel_size=3, padding=d, dilation=d, groups=group),
            )
            for d in BRIDGE_DILATIONS
        )
        self.tail = nn.Sequential(ChannelsFirstLayerNorm(2 * skip_ch + 4), nn.Conv2d(2 * skip_ch + 4, skip_ch, 1))

    def forward(self, deep: torch.Tensor, skip: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        deep = resized(self.pre_project(deep), skip.shape[2:])
        parts = zip(self.groups, torch.chunk(deep, 4, dim=1), torch.chunk(skip, 4, dim=1))
        return self.tail(torch.cat([g(torch.cat([d, s, mask], dim=1)) for g, d, s in parts], dim=1))


class EGEUNet(nn.Module):
    """EGE-UNet with its side heads; input N x 3 x S x S (S a multiple of 32), output N x out_channels
    x S x S logits (``forward``), or those and the five side logits (``forward_with_side_outputs``)."""

    SIDE_WEIGHTS = SIDE_WEIGHTS  # read by training's deep supervision (train.deep_supervision)

    def __init__(self, in_channels: int = 3, out_channels: int = 1, widths: tuple[int, ...] = WIDTHS):
        super().__init__()
        c = widths
        self.encoder1 = nn.Conv2d(in_channels, c[0], kernel_size=3, padding=1)
        self.encoder2 = nn.Conv2d(c[0], c[1], kernel_size=3, padding=1)
        self.encoder3 = nn.Conv2d(c[1], c[2], kernel_size=3, padding=1)
        self.encoder4 = HadamardAttention(c[2], c[3])
        self.encoder5 = HadamardAttention(c[3], c[4])
        self.encoder6 = HadamardAttention(c[4], c[5])
        # gab<i> and head<i> serve skip level i (the skip at S / 2**i)
        self.gab1 = GroupAggregationBridge(c[1], c[0])
        self.gab2 = GroupAggregationBridge(c[2], c[1])
        self.gab3 = GroupAggregationBridge(c[3], c[2])
        self.gab4 = GroupAggregationBridge(c[4], c[3])
        self.gab5 = GroupAggregationBridge(c[5], c[4])
        self.head5 = nn.Conv2d(c[4], 1, kernel_size=1)
        self.head4 = nn.Conv2d(c[3], 1, kernel_size=1)
        self.head3 = nn.Conv2d(c[2], 1, kernel_size=1)
        self.head2 = nn.Conv2d(c[1], 1, kernel_size=1)
        self.head1 = nn.Conv2d(c[0], 1, kernel_size=1)
        self.decoder1 = HadamardAttention(c[5], c[4])
        self.decoder2 = HadamardAttention(c[4], c[3])
        self.decoder3 = HadamardAttention(c[3], c[2])
        self.decoder4 = nn.Conv2d(c[2], c[1], kernel_size=3, padding=1)
        self.decoder5 = nn.Conv2d(c[1], c[0], kernel_size=3, padding=1)
        self.encoder_norms = nn.ModuleList(nn.GroupNorm(GROUPS, ch) for ch in c[:5])
        self.decoder_norms = nn.ModuleList(nn.GroupNorm(GROUPS, ch) for ch in reversed(c[:5]))
        self.final = nn.Conv2d(c[0], out_channels, kernel_size=1)
        init_weights(self)

    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Final logits at the input size, and the side logits at their own sizes, deepest first."""
        encoders = (self.encoder1, self.encoder2, self.encoder3, self.encoder4, self.encoder5)
        skips = []
        out = x
        for encoder, norm in zip(encoders, self.encoder_norms):
            out = F.gelu(F.max_pool2d(norm(encoder(out)), 2))
            skips.append(out)  # c0..c4 at S/2 .. S/32
        t1, t2, t3, t4, t5 = skips
        t6 = F.gelu(self.encoder6(out))  # c5, S/32
        n1, n2, n3, n4, n5 = self.decoder_norms

        # At each level: decode, predict the side mask, bridge the skip with it, add the bridged skip.
        # The bridge's "deeper" input is the bridged skip of the level below (t6 at the bottom).
        out = F.gelu(n1(self.decoder1(t6)))  # c4, S/32
        m5 = self.head5(out)
        t5 = self.gab5(t6, t5, m5)
        out = out + t5
        out = F.gelu(up2(n2(self.decoder2(out))))  # c3, S/16
        m4 = self.head4(out)
        t4 = self.gab4(t5, t4, m4)
        out = out + t4
        out = F.gelu(up2(n3(self.decoder3(out))))  # c2, S/8
        m3 = self.head3(out)
        t3 = self.gab3(t4, t3, m3)
        out = out + t3
        out = F.gelu(up2(n4(self.decoder4(out))))  # c1, S/4
        m2 = self.head2(out)
        t2 = self.gab2(t3, t2, m2)
        out = out + t2
        out = F.gelu(up2(n5(self.decoder5(out))))  # c0, S/2
        m1 = self.head1(out)
        t1 = self.gab1(t2, t1, m1)
        out = out + t1
        return up2(self.final(out)), (m5, m4, m3, m2, m1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x)[0]

    def forward_with_side_outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(final logits, the five side logits upsampled to the input size, deepest first); the authors'
        loss: BCE-Dice(final) + sum of SIDE_WEIGHTS[i] * BCE-Dice(side i)."""
        logits, sides = self._run(x)
        size = x.shape[2:]
        return logits, [resize(m, size=size, align_corners=True) for m in sides]


def egeunet() -> EGEUNet:
    """EGE-UNet as the authors' default ``EGEUNet(num_classes=1, c_list=[8, 16, 24, 32, 48, 64],
    bridge=True, gt_ds=True)``, less the sigmoids: 53,374 parameters (side heads included)."""
    return EGEUNet()
